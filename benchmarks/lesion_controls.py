"""Issue 41's controls and its three-way comparison, at equal steps.

Controls: why BoltzFormer does not learn lesions of a few pixels that a U-Net learns in the
same steps. One change at a time from the demo's recipe (apps/demo.py TRAINING) on a data
folder of real small lesions (e.g. the MS lesions, one patient held out as the test split).
Three-way: on large images, the demo's recipe as planned from the data (`demo`: crops at
native resolution, sliding windows at test time), the same on whole images resized
(`whole`), and the U-Net expert on the same crops and windows (`unet`; `unet-whole` resized).
Every run is scored without a size floor (a separate question) and, for models with the
existence head, also with the head off; a model trained on crops is scored at the images'
own size through its windows (`scoring_split`).

    python benchmarks/lesion_controls.py train demo --data DATA --out RUNS --steps 600
    python benchmarks/lesion_controls.py train unet --data DATA --out RUNS --steps 600
    python benchmarks/lesion_controls.py table RUNS [RUNS ...]
    python benchmarks/lesion_controls.py result RUNS/demo-s0 --data DATA --variant demo
    python benchmarks/lesion_controls.py score RUNS/crops-no-head-s0 --data DATA \
        --variant crops-no-head --images 10   # scored again on the first 10 test images
    python benchmarks/lesion_controls.py gate RUNS/demo-s0   # existence threshold calibrated

`train` writes RUNS/<variant>-s<seed>/ with the run (run/), its evaluation (eval/, and
eval_head_off/ where the model has the head) and result.json. `table` prints one row per run:
Dice of present lesions (all, small < 1 %, tiny < 0.1 % of the image), object detection F1
at IoU >= 0.5 per size bin, the absent prompts painted and the existence head's accuracy.
`gate` chooses the existence threshold on the run's validation items (`calibrate_gates`, no
size floor) and scores the test split at it into eval_calibrated/ (result.json's
`scores_calibrated`). Run two one-thread jobs side by side (OMP_NUM_THREADS=1); steps, not
minutes, so another job on the machine changes only the wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import Subset

from boltzformer.apps.demo import TRAINING, WITHOUT_EXISTENCE
from boltzformer.baselines import train_unet
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.calibrate import calibrate_gates, format_table
from boltzformer.evaluation.evaluate import evaluate, scoring_split, write_report
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import TrainConfig
from boltzformer.train.data import crops_of
from boltzformer.train.plan import resolve_plan
from boltzformer.train.trainer import train

# name -> TrainConfig overrides on the demo's recipe; "expert" trains the U-Net expert as
# `demo --expert` does (its own recipe, 8 images a step, the same steps), and a "unet.<name>"
# key passes `train_unet` its option <name> (e.g. "unet.dice": "batch")
VARIANTS: dict[str, dict[str, Any]] = {
    "demo": {},  # the demo's recipe: existence head, labels, exploration floor, layer_pool 2
    "no-head": WITHOUT_EXISTENCE,  # no existence head: absent pairs train the mask path
    "paper": {**WITHOUT_EXISTENCE, "model.sampling_explore": 0.0},  # Eq. 5 alone, no head
    "full": {"model.attention": "full"},  # every token attended: no sampling at all
    "pool1": {"loss.layer_pool": 1},  # deep supervision at S's stride 4, not pooled to 8
    "s2": {"model.semantic_stride": 2},  # the finer mask path (stride 2)
    "ratio0.3": {"model.sampling_ratio": 0.3},  # 30 % of the tokens drawn, not 10 %
    "tau2": {"model.tau0": 2.0},  # a hotter start of the cooling schedule
    "no-aug": {"data.augment": False},  # A.5's crops off (the U-Net's recipe has none)
    "lr2": {"optim.lr": 2e-3},
    "whole": {"data.crop_size": 0},  # whole images resized, whatever the plan says
    "unet": {"expert": True},  # on the plan's crops and windows, as `demo --expert`
    "unet-whole": {"expert": True, "data.crop_size": 0},
    "unet-fp32": {"expert": True, "train.amp": "none"},  # the expert in float32, not bf16
    # the same with nnU-Net's batch Dice (one Dice per target over the batch, not per slice)
    "unet-fp32-bdice": {"expert": True, "train.amp": "none", "unet.dice": "batch"},
    # the strongest expert recipe tried on MS: the same with augmentation (crops, turns) and
    # a warmed-up cosine schedule, meant for a longer budget
    "unet-strong": {"expert": True, "train.amp": "none", "unet.dice": "batch",
                    "unet.augment": True, "unet.schedule": "cosine"},
    # on crops (as planned for large images): every crop on an object; no existence head
    "crops-objects1": {"data.object_crops": 1.0},
    "crops-no-head": WITHOUT_EXISTENCE,
    # crops of 256 (the demo's image_size) at native resolution whatever the plan says
    "crops": {"data.crop_size": 256, "data.scale": 1.0},
    "unet-crops": {"expert": True, "data.crop_size": 256, "data.scale": 1.0},
    # crops of 256 of the image at half its resolution (a 1024² image's crop covers a quarter)
    "crops-half": {"data.crop_size": 256, "data.scale": 0.5},
    "unet-crops-half": {"expert": True, "data.crop_size": 256, "data.scale": 0.5},
    # the plan's crops with at most one target the crop leaves out kept (absent) per group
    "crops-cap1": {"data.cropped_out": 1},
    "crops-half-cap1": {"data.crop_size": 256, "data.scale": 0.5, "data.cropped_out": 1},
    # a model input of 128, so that on 1024² phantoms (5th-percentile object 17 px) the whole
    # image resized keeps it 2 px across and the plan chooses crops (of 128 at scale 0.25)
    "plan128": {"model.image_size": 128},
    # the same with every target of an image in one group (K = 16 >= the phantoms' 12 to 14
    # targets an image; K = 8 splits an image into two groups): twice the (crop, target)
    # pairs a step, the expert's way of seeing every target of every crop
    "plan128-k16": {"model.image_size": 128, "train.prompts_per_image": 16},
    # the same with the stride-2 mask path
    "plan128-k16-s2": {"model.image_size": 128, "train.prompts_per_image": 16,
                       "model.semantic_stride": 2},
    "whole128": {"model.image_size": 128, "data.crop_size": 0},
    "unet-plan128": {"expert": True, "model.image_size": 128},
    "unet-plan128-bdice": {"expert": True, "model.image_size": 128, "unet.dice": "batch"},
}


def summarise(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of one evaluation's metrics.json."""
    strata = metrics["size_strata"]["weighted"]
    objects = metrics.get("objects", {}).get("overall", {})
    by_size = objects.get("by_size", {})
    absent = metrics.get("absent", {})
    return {
        "all": metrics["overall"]["dice_mean"],
        "small": strata.get("small", {}).get("dice_mean"),
        "tiny": strata.get("tiny", {}).get("dice_mean"),
        "f1": objects.get("f1"),
        "f1_by_size": {name: v.get("f1") for name, v in by_size.items()},
        "dice_by_target": {name: v["dice_mean"] for name, v in metrics["by_target"].items()},
        "tp_fn_by_size": {name: (v.get("tp"), v.get("fn")) for name, v in by_size.items()},
        "absent_fp": absent.get("false_positive_rate"),
        "existence_accuracy": absent.get("existence", {}).get("accuracy")
        if isinstance(absent.get("existence"), dict) else None,
    }


def run(variant: str, data: Path, out: Path, *, steps: int, seed: int,
        workers: int) -> dict[str, Any]:
    """Train `variant` for `steps` and score it on the test split (no size floor)."""
    run_dir = out / f"{variant}-s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    overrides = dict(VARIANTS[variant])
    expert = overrides.pop("expert", False)
    expert_options = {key.removeprefix("unet."): overrides.pop(key)
                      for key in list(overrides) if key.startswith("unet.")}
    cfg = TRAINING.with_overrides({"train.max_steps": steps, "train.max_minutes": None,
                                   "train.snapshot_minutes": None, "train.seed": seed,
                                   "data.workers": workers, "data.root": str(data),
                                   **overrides})
    names = BiomedParseDataset(data, "train", image_size=None).target_names
    if len(names) == 1:  # one target: no other names to prompt as absent
        cfg = cfg.with_overrides({"data.negatives": 0})
    cfg = resolve_plan(cfg, say=print)
    started = time.monotonic()
    model: torch.nn.Module
    if expert:
        size = cfg.model.resolve()
        result = train_unet(data, run_dir / "run", steps=steps, image_size=size.image_size,
                            seed=seed, val_fraction=cfg.data.val_fraction, workers=workers,
                            supervise="all" if cfg.data.negatives else "annotated",
                            amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                            crops=crops_of(cfg.data, size.image_size),
                            window_overlap=size.window_overlap, progress=False,
                            **expert_options)
        model, done = result.model, result.metrics["steps"]
    else:
        trained = train(cfg, run_dir / "run", progress=False)
        model = BoltzFormer.from_pretrained(trained.last_checkpoint)
        done = trained.metrics.get("step")
    info: dict[str, Any] = {
        "variant": variant, "seed": seed, "steps": done, "data": str(data),
        "image_size": cfg.model.resolve().image_size, "crop_size": cfg.data.crop_size,
        "train_minutes": (time.monotonic() - started) / 60}
    test, windows = scoring_split(model.config, data)
    info.update(score(model, test, windows, run_dir, seed))
    info["eval_minutes"] = (time.monotonic() - started) / 60 - info["train_minutes"]
    (run_dir / "result.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def result_of(run_dir: Path, data: Path, variant: str, seed: int, **extra: Any
              ) -> dict[str, Any]:
    """result.json (with `extra` fields) rebuilt from a run folder's training records and
    the evaluations written in it (eval/, and eval_head_off/ when present)."""
    records = [json.loads(line) for line in
               (run_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    end = next(r for r in records if r["kind"] == "end")
    config = yaml.safe_load((run_dir / "run" / "config.yaml").read_text())
    info: dict[str, Any] = {
        "variant": variant, "seed": seed, "steps": end["step"], "data": str(data),
        "image_size": config["model"].get("image_size"),
        "crop_size": config["data"].get("crop_size"), "train_minutes": end["minutes"], **extra,
        "scores": summarise(json.loads((run_dir / "eval" / "metrics.json").read_text()))}
    off = run_dir / "eval_head_off" / "metrics.json"
    if off.is_file():
        info["scores_head_off"] = summarise(json.loads(off.read_text()))
    (run_dir / "result.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def score(model: torch.nn.Module, dataset: Any, windows: Any, run_dir: Path, seed: int
          ) -> dict[str, Any]:
    """`model` scored on `dataset` without a size floor, into run_dir/eval, and with the
    existence head ignored into run_dir/eval_head_off where it has one: their figures."""
    scores: dict[str, Any] = {}
    passes = [("scores", "eval", 0.5)]
    if getattr(getattr(model, "config", None), "existence_head", False):
        passes.append(("scores_head_off", "eval_head_off", 0.0))
    for key, folder, threshold in passes:
        ev = evaluate(model, dataset, seed=seed, progress=False, size_floor=False,
                      existence_threshold=threshold, windows=windows)
        write_report(ev, run_dir / folder)
        scores[key] = summarise(ev.metrics)
    return scores


def score_run(run_dir: Path, data: Path, variant: str, seed: int, images: int | None
              ) -> dict[str, Any]:
    """Score a trained run's BoltzFormer (run/last) again on DATA's test split, its first
    `images` images only when given (a windowed model on 1024² images takes seconds an
    image), head on and off, and write result.json as `train` does."""
    model = BoltzFormer.from_pretrained(run_dir / "run" / "last")
    test, windows = scoring_split(model.config, data)
    dataset: Any = test
    if images is not None:
        first = set(sorted({s.image_path for s in test.samples})[:images])
        dataset = Subset(test, [i for i, s in enumerate(test.samples) if s.image_path in first])
    score(model, dataset, windows, run_dir, seed)
    return result_of(run_dir, data, variant, seed, test_images=images)


def gate_run(run_dir: Path) -> dict[str, Any]:
    """The existence threshold chosen on the run's validation items (no size floor), the
    test split scored at it into run_dir/eval_calibrated, and result.json updated."""
    cfg = TrainConfig.from_yaml(run_dir / "run" / "config.yaml")
    if cfg.data.root is None:
        raise SystemExit(f"{run_dir}: its config.yaml names no data.root")
    model = BoltzFormer.from_pretrained(run_dir / "run" / "last")
    cal = calibrate_gates(model, cfg, fractions=[0.0], progress=False)
    if cal.existence_threshold is None:
        raise SystemExit(f"{run_dir}: the model has no existence head")
    test, windows = scoring_split(model.config, cfg.data.root)
    ev = evaluate(model, test, seed=cfg.train.seed, progress=False, size_floor=False,
                  existence_threshold=cal.existence_threshold, windows=windows)
    write_report(ev, run_dir / "eval_calibrated")
    (run_dir / "eval_calibrated" / "calibration.md").write_text(format_table(cal))
    info = json.loads((run_dir / "result.json").read_text())
    info["scores_calibrated"] = {"existence_threshold": cal.existence_threshold,
                                 **summarise(ev.metrics)}
    (run_dir / "result.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{100 * value:.1f}"


def _calibrated(cal: dict[str, Any] | None) -> str:
    if not cal:
        return ""
    return (f"{cal['existence_threshold']:g} / {_pct(cal['all'])} / {_pct(cal['tiny'])} / "
            f"{_pct(cal['f1'])} / {_pct(cal['absent_fp'])}")


def table(folders: list[Path]) -> str:
    """One Markdown row per run folder's result.json."""
    lines = ["| run | steps | crop | Dice all | small | tiny | F1 | F1 <0.01% | F1 0.01-0.1% | "
             "F1 0.1-1% | found <0.1 % | absent painted | existence acc. | "
             "head off: Dice / tiny / F1 / absent painted | calibrated gate: threshold / Dice "
             "/ tiny / F1 / absent painted |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for folder in folders:
        for path in sorted(folder.glob("*/result.json")):
            r = json.loads(path.read_text())
            s, off, cal = r["scores"], r.get("scores_head_off"), r.get("scores_calibrated")
            f1 = s["f1_by_size"]
            found = [s["tp_fn_by_size"].get(b, (0, 0)) for b in ("<0.01%", "0.01-0.1%")]
            tp, total = sum(t or 0 for t, _ in found), sum((t or 0) + (n or 0) for t, n in found)
            head_off = (f"{_pct(off['all'])} / {_pct(off['tiny'])} / {_pct(off['f1'])} / "
                        f"{_pct(off['absent_fp'])}" if off else "")
            lines.append(
                f"| {r['variant']}-s{r['seed']} | {r['steps']} | {r.get('crop_size', 0) or '–'} | "
                f"{_pct(s['all'])} | "
                f"{_pct(s['small'])} | {_pct(s['tiny'])} | {_pct(s['f1'])} | "
                f"{_pct(f1.get('<0.01%'))} | {_pct(f1.get('0.01-0.1%'))} | "
                f"{_pct(f1.get('0.1-1%'))} | {tp} of {total} | {_pct(s['absent_fp'])} | "
                f"{_pct(s['existence_accuracy'])} | {head_off} | {_calibrated(cal)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("train", help="train and score one variant")
    t.add_argument("variant", choices=sorted(VARIANTS))
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--steps", type=int, default=600)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1)
    rs = sub.add_parser("result", help="result.json of a run whose head-off scoring was cut")
    rs.add_argument("run_dir", type=Path)
    rs.add_argument("--data", type=Path, required=True)
    rs.add_argument("--variant", required=True)
    rs.add_argument("--seed", type=int, default=0)
    sc = sub.add_parser("score", help="score a trained run again (its first test images)")
    sc.add_argument("run_dir", type=Path)
    sc.add_argument("--data", type=Path, required=True)
    sc.add_argument("--variant", required=True)
    sc.add_argument("--seed", type=int, default=0)
    sc.add_argument("--images", type=int, default=None)
    gt = sub.add_parser("gate", help="calibrate a run's existence threshold, score the test")
    gt.add_argument("run_dir", type=Path)
    tb = sub.add_parser("table", help="the Markdown table of run folders")
    tb.add_argument("folders", type=Path, nargs="+")
    args = parser.parse_args()
    if args.verb == "train":
        info = run(args.variant, args.data, args.out, steps=args.steps, seed=args.seed,
                   workers=args.workers)
        print(json.dumps(info["scores"]))
    elif args.verb == "score":
        info = score_run(args.run_dir, args.data, args.variant, args.seed, args.images)
        print(json.dumps(info["scores"]))
    elif args.verb == "gate":
        print(json.dumps(gate_run(args.run_dir)["scores_calibrated"]))
    elif args.verb == "result":
        print(json.dumps(result_of(args.run_dir, args.data, args.variant, args.seed)["scores"]))
    else:
        print(table(args.folders))


if __name__ == "__main__":
    main()
