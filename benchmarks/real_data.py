"""Issue 23's real-data benchmark: BoltzFormer against the U-Net expert on converted public data.

`boltzformer demo --data DIR --expert` is the user's one command (the two models train one
after the other, each with all the cores). This script measures the same thing on a shared
machine: `pair` trains the two models *at the same time*, one thread each, for the same
minutes, so that whatever else the machine runs slows both alike; each is then scored by the
package's evaluator on the held-out test split (Dice per class and size stratum, objects
matched at IoU >= 0.5, PQ, grounding). `table` gathers the runs into mean ± sd over seeds.

    boltzformer convert consep CoNSeP data/consep       # or dsb2018 ...
    python benchmarks/real_data.py pair data/consep --out runs/consep --minutes 15 --seed 0
    python benchmarks/real_data.py table runs/consep
    python benchmarks/real_data.py ceiling data/consep   # objects of the true masks themselves

One run alone: `python benchmarks/real_data.py run boltzformer data/consep --out runs/consep`
(`unet` for the expert). BoltzFormer's run is `boltzformer demo --data` (its figures too); the
expert is `train_unet` as `demo --expert` trains it.

Choosing a recipe on validation (never on test): a candidate is a run with `--set` overrides
(BoltzFormer, TrainConfig keys) or a named `--unet-recipe`, a `--tag` naming it, a fixed
`--steps` budget (so that the load of a shared machine changes its wall time, not its result)
and `--score val`: it is scored on its own held-out 5 % of the train split, not on test.

    python benchmarks/real_data.py run boltzformer data/consep --out runs/val --seed 2 \
        --steps 561 --set data.rotations=true --tag rot --score val
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from boltzformer.apps.demo import TRAINING, WITHOUT_EXISTENCE, DemoSettings, run_demo
from boltzformer.baselines import UNetExpert, train_unet
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import evaluate, write_report
from boltzformer.evaluation.objects import (
    label_objects,
    read_instances,
    relabel,
    score_objects,
    summarize_objects,
)
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train import train
from boltzformer.train.data import split_by_image

MODELS = ("boltzformer", "unet")

# The expert's recipe: `train_unet`'s defaults, as `demo --expert` trains it (issue 24's fix:
# constant lr 2e-3, no clipping, no augmentation; docs/results/unet_controls.md). `--unet-recipe
# plain` is issue 24's plain multi-label recipe (the seed-0 rows of real_data.md used it).
UNET_RECIPES: dict[str, dict[str, Any]] = {
    "expert": {},
    "plain": {"supervise": "all", "schedule": "constant", "lr": 1e-3, "weight_decay": 1e-4,
              "batch_size": 8, "augment": False, "clip": None},
}
# Candidates to the plain recipe, one change each (chosen between on validation):
_PLAIN = UNET_RECIPES["plain"]
UNET_RECIPES.update({
    "plain-cosine": {**_PLAIN, "schedule": "cosine"},  # warm-up, then decay to the budget's end
    "plain-aug": {**_PLAIN, "augment": True, "rotations": True},  # BoltzFormer's crops, + turns
    "plain-b4": {**_PLAIN, "batch_size": 4},  # twice the steps at the same images seen
})


def run(model: str, data: Path, out: Path, *, minutes: float | None, seed: int,
        unet_recipe: str = "expert", steps: int | None = None, overrides: list[str] = (),
        tag: str = "", score: str = "test") -> dict[str, Any]:
    """Train `model` on `data`'s train split on one thread for `minutes` (or a fixed number of
    `steps`), score it on the test split (`score="test"`) or on its own held-out validation
    images ("val"); writes `out/<name>[-<tag>]-s<seed>/` and its result.json. The name is the
    model's, `unet-<recipe>` for a U-Net recipe other than the expert's; `overrides` are
    `section.key=value` changes to BoltzFormer's demo recipe."""
    torch.set_num_threads(1)
    if (minutes is None) == (steps is None):
        raise SystemExit("give exactly one budget: --minutes or --steps")
    name = model if model == "boltzformer" or unet_recipe == "expert" else f"unet-{unet_recipe}"
    folder = out / f"{name}{'-' + tag if tag else ''}-s{seed}"
    budget = ({"train.max_minutes": minutes, "train.max_steps": None} if steps is None
              else {"train.max_minutes": None, "train.max_steps": steps})
    training = TRAINING.with_overrides({**WITHOUT_EXISTENCE,  # as real_data.md was measured
                                        **budget, "train.seed": seed, "data.workers": 1}
                                       ).with_overrides(list(overrides))
    size = training.model.resolve().image_size
    started = time.monotonic()
    if model == "boltzformer":
        settings = DemoSettings(out_dir=folder, data=data, training=training, progress=False)
        if score == "test" and steps is None:  # the user's command, figures and all
            result = run_demo(settings)
            metrics, steps = result["metrics"], result["train"].get("step")
        else:
            trained = train(settings.train_config(data), folder / "run", progress=False)
            metrics, steps = None, trained.metrics.get("step")
        images = steps * training.train.batch_size
    else:
        recipe = UNET_RECIPES[unet_recipe]
        unet = train_unet(data, folder / "model", minutes=minutes, steps=steps,
                          image_size=size, seed=seed, val_fraction=training.data.val_fraction,
                          workers=training.data.workers, progress=False, **recipe)
        metrics, steps, images = None, unet.metrics["steps"], unet.metrics["images"]
        if score == "test":
            test = BiomedParseDataset(data, "test", image_size=size, train=False)
            ev = evaluate(unet.model, test, seed=seed, progress=False)
            write_report(ev, folder)
            metrics = ev.metrics
    summary = {"model": name, "tag": tag, "overrides": list(overrides),
               "unet_recipe": None if model == "boltzformer" else unet_recipe,
               "data": str(data), "seed": seed, "minutes": minutes, "image_size": size,
               "steps": steps, "images_seen": images,
               "wall_minutes": (time.monotonic() - started) / 60}
    if score == "test":
        summary.update(figures(metrics) if metrics is not None else _test(folder, data, seed))
    else:
        scores = _validation(summary, folder)
        summary = {**summary, "split": "val", **{k: v for k, v in scores.items()
                                                 if k not in summary}}
    (folder / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _test(folder: Path, data: Path, seed: int) -> dict[str, Any]:
    """Score a BoltzFormer run's best checkpoint on the test split (report in `folder`)."""
    model = BoltzFormer.from_pretrained(_checkpoint(folder))
    test = BiomedParseDataset(data, "test", image_size=model.config.image_size, train=False)
    ev = evaluate(model, test, seed=seed, progress=False)
    write_report(ev, folder)
    return figures(ev.metrics)


def _checkpoint(folder: Path) -> Path:
    """A BoltzFormer run's checkpoint: the best on validation loss, else the last."""
    best = folder / "run" / "best"
    return best if best.exists() else folder / "run" / "last"


def figures(m: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's figures from an evaluation's metrics.json: Dice per stratum and target,
    objects (F1, PQ) overall and per size bin, grounding and absent targets."""
    strata, objects = m["size_strata"]["weighted"], m["objects"]
    return {
        "dice_all": m["overall"]["dice_mean"],
        "dice_small": strata["small"]["dice_mean"],
        "dice_tiny": strata["tiny"]["dice_mean"],
        "dice_large": strata["large"]["dice_mean"],
        "dice_by_target": {k: v["dice_mean"] for k, v in m["by_target"].items()},
        "object_f1": objects["overall"]["f1"],
        "object_precision": objects["overall"]["precision"],
        "object_recall": objects["overall"]["recall"],
        "pq": objects["overall"]["pq"],
        "object_f1_by_size": {k: v["f1"] for k, v in objects["overall"]["by_size"].items()},
        "object_f1_by_target": {k: v["f1"] for k, v in objects["by_target"].items()},
        "prompt_accuracy": (m.get("grounding") or {}).get("prompt_accuracy"),
        "absent_false_positive_rate": m["absent"]["false_positive_rate"],
    }


def validate(folder: Path, checkpoint: Path | None = None) -> dict[str, Any]:
    """Score a finished run on its own validation images (the seeded 5 % of the train split
    that `split_by_image` held out of its training): the figures a recipe is chosen on.
    `checkpoint`: a BoltzFormer checkpoint of the run other than its best (a snapshot)."""
    return _validation(json.loads((folder / "result.json").read_text()), folder, checkpoint)


def _validation(result: dict[str, Any], folder: Path,
                checkpoint: Path | None = None) -> dict[str, Any]:
    """`validate` of the run in `folder` whose result.json holds `result`."""
    torch.set_num_threads(1)
    size = result.get("image_size", TRAINING.model.resolve().image_size)
    base = BiomedParseDataset(Path(result["data"]), "train", image_size=size, train=False)
    _, val = split_by_image(base, TRAINING.data.val_fraction, result["seed"])
    model: torch.nn.Module = (BoltzFormer.from_pretrained(checkpoint or _checkpoint(folder))
                              if result["model"] == "boltzformer"
                              else UNetExpert.from_pretrained(folder / "model"))
    ev = evaluate(model, torch.utils.data.Subset(base, val), seed=result["seed"],
                  progress=False)
    return {"model": result["model"], "tag": result.get("tag", ""),
            "data": Path(result["data"]).name, "seed": result["seed"],
            "val_images": len({base.samples[i].image_file for i in val}),
            **figures(ev.metrics)}


def curve(folder: Path) -> list[dict[str, Any]]:
    """Validation figures of a BoltzFormer run's snapshots (`train.snapshot_minutes`): is it
    still learning at the end of its budget?"""
    snapshots = sorted((folder / "run" / "snapshots").iterdir())
    return [{"snapshot": s.name, **validate(folder, s)} for s in snapshots]


def ceiling(data: Path, split: str = "test") -> dict[str, Any]:
    """What a model that answers a prompt with one mask can score in objects at best: each
    ground-truth mask itself, its objects taken as its connected components (as the evaluator
    takes a prediction's), against the instance map (touching nuclei merge into one)."""
    records = []
    for mask in sorted((data / f"{split}_mask").glob("*.png")):
        with Image.open(mask) as picture:
            union = np.asarray(picture.convert("L")) > 127
        gt, n_gt = relabel(read_instances(data / f"{split}_instances" / mask.name))
        pred, n_pred = label_objects(union)
        target = mask.stem.rsplit("_", 1)[1].replace("+", " ")
        records.append((data.name, target, score_objects(gt, n_gt, pred, n_pred)))
    summary = summarize_objects(records)
    return {name: {k: summary[name][k] for k in ("f1", "sq", "pq")} if name == "overall" else
            {t: {k: v[k] for k in ("f1", "sq", "pq")} for t, v in summary[name].items()}
            for name in ("overall", "by_target")}


def pair(data: Path, out: Path, *, minutes: float, seed: int, unet_recipe: str) -> None:
    """Both models at once, one process and one thread each, the same minutes."""
    jobs = [subprocess.Popen([sys.executable, __file__, "run", model, str(data), "--out",
                              str(out), "--minutes", str(minutes), "--seed", str(seed),
                              "--unet-recipe", unet_recipe],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}) for model in MODELS]
    codes = [job.wait() for job in jobs]
    if any(codes):
        raise SystemExit(f"a run failed: exit codes {codes}")


def table(folders: list[Path]) -> str:
    """Mean ± sd over seeds per (data, model) of every result.json under `folders`."""
    rows = [json.loads(p.read_text()) for f in folders for p in sorted(f.glob("*/result.json"))]
    keys = ("dice_all", "dice_small", "dice_tiny", "dice_large", "object_f1", "pq",
            "prompt_accuracy", "absent_false_positive_rate")
    lines = ["| data | model | seeds | images seen | " + " | ".join(keys) + " |",
             "|---|---|---:|---:|" + "---:|" * len(keys)]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((Path(r["data"]).name, r["model"]), []).append(r)
    for (data, model), rs in sorted(groups.items()):
        cells = [_mean_sd([r[k] for r in rs]) for k in keys]
        seen = statistics.mean(r["images_seen"] for r in rs)
        lines.append(f"| {data} | {model} | {len(rs)} | {seen:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_sd(values: list[float | None]) -> str:
    xs = [100 * v for v in values if v is not None and v == v]  # None, NaN: not measured
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1f} ± {sd:.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("run", "pair"):
        s = sub.add_parser(name)
        if name == "run":
            s.add_argument("model", choices=MODELS)
        s.add_argument("data", type=Path)
        s.add_argument("--out", type=Path, required=True)
        s.add_argument("--minutes", type=float, default=None, help="budget (default 15)")
        s.add_argument("--seed", type=int, default=0)
        s.add_argument("--unet-recipe", choices=sorted(UNET_RECIPES), default="expert")
        if name == "run":
            s.add_argument("--steps", type=int, default=None,
                           help="a fixed step budget instead of minutes")
            s.add_argument("--set", dest="overrides", action="append", default=[],
                           metavar="KEY=VALUE", help="BoltzFormer recipe change, e.g. "
                           "data.rotations=true or model.text_encoder=builtin")
            s.add_argument("--tag", default="", help="names the candidate in its folder")
            s.add_argument("--score", choices=("test", "val"), default="test")
    c = sub.add_parser("ceiling")
    c.add_argument("data", type=Path)
    v = sub.add_parser("validate")
    v.add_argument("folders", type=Path, nargs="+", help="run folders (<model>-s<seed>)")
    k = sub.add_parser("curve")
    k.add_argument("folder", type=Path, help="a BoltzFormer run folder with snapshots")
    t = sub.add_parser("table")
    t.add_argument("folders", type=Path, nargs="+")
    args = p.parse_args()
    if args.command == "run":
        minutes = 15.0 if args.minutes is None and args.steps is None else args.minutes
        print(json.dumps(run(args.model, args.data, args.out, minutes=minutes, seed=args.seed,
                             unet_recipe=args.unet_recipe, steps=args.steps,
                             overrides=args.overrides, tag=args.tag, score=args.score),
                         indent=2))
    elif args.command == "pair":
        pair(args.data, args.out, minutes=args.minutes or 15.0, seed=args.seed,
             unet_recipe=args.unet_recipe)
    elif args.command == "validate":
        for folder in args.folders:
            print(json.dumps(validate(folder)))
    elif args.command == "curve":
        for row in curve(args.folder):
            print(json.dumps(row))
    elif args.command == "ceiling":
        print(json.dumps(ceiling(args.data), indent=2))
    else:
        print(table(args.folders))


if __name__ == "__main__":
    main()
