"""Issue 18's controls: where the demo's model fails on small objects.

Trains one variant of the demo's model (or the U-Net expert) on the demo's phantoms for a
fixed number of minutes, evaluates it on the test split (Dice, grounding), and writes
`result.json` beside the run. `table` gathers the results of many runs into one Markdown table.

    python benchmarks/small_objects.py train sentences --data DATA --out RUNS --minutes 6
    python benchmarks/small_objects.py train unet      --data DATA --out RUNS --minutes 6
    python benchmarks/small_objects.py eval RUNS/sentences-s0 --data DATA   # score again
    python benchmarks/small_objects.py search RUNS/labels-s0 --data DATA  # where it samples
    python benchmarks/small_objects.py ceiling --data DATA --out ceiling.json  # resolution
    python benchmarks/small_objects.py cost labels labels-s2 unet  # s per step, interleaved
    python benchmarks/small_objects.py table RUNS
    python benchmarks/small_objects.py spread RUNS   # mean ± sd over seeds per variant
    python benchmarks/small_objects.py spread demo_1 demo_2 demo_3  # over demo outputs
    python benchmarks/small_objects.py sides RUNS/labels-s0  # left/right prompts
    python benchmarks/small_objects.py one-sentence DATA DATA1  # one sentence per mask

`cost` times one training step of each variant, interleaved, on one thread: the ratio of two
variants' times gives the steps that stand for "equal minutes" when the machine is shared
(a step budget does not shrink when another job takes the CPU; a time budget does).

DATA is a phantom set as the demo makes it (`boltzformer synth DATA --images 1200 --size 256
--seed 0`). Compare variants trained side by side (two 1-thread runs at once) in one sitting:
a run's steps depend on what else the machine is doing.
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
import torch.nn.functional as F

from boltzformer.apps.demo import TRAINING, WITHOUT_EXISTENCE
from boltzformer.baselines import UNetBaselineConfig, UNetExpert, train_unet
from boltzformer.baselines.unet_training import masked_dice_bce
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluation.evaluate import dice_batch, evaluate, write_report
from boltzformer.evaluation.grounding import NONE
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.loss import dice_loss, training_loss
from boltzformer.train.trainer import train

UNET_BATCH = 8  # images per U-Net step

# The configuration the variants change: the demo's, with the paper's sampling (Eq. 5 alone,
# no exploration floor), A.5's rotations, the release's N(0, 1) initial queries and the
# demo's earlier lr of 2e-3, as the rows before the demo took up these changes were measured.
BASE = {"model.sampling_explore": 0.0, "data.rotations": True, "model.query_init_std": 1.0,
        "optim.lr": 2e-3, **WITHOUT_EXISTENCE}

# The settings the control table and Table 3 were measured at: one token per target, the
# exploration floor, no 90-degree turns ("final-q" adds small initial queries, "final-q-lr1"
# lr 1e-3 too: the demo now)
FINAL = {"model.text_encoder": "labels", "model.sampling_explore": 0.3, "data.rotations": False}
FINAL_Q = {**FINAL, "model.query_init_std": 0.02}

# name -> TrainConfig overrides on top of BASE; "expert": True trains the U-Net expert (on the
# data settings given; its model has no other settings).
VARIANTS: dict[str, dict[str, Any]] = {
    "sentences": {"model.text_encoder": "builtin"},  # the data's paraphrases (the old demo)
    "labels": {"model.text_encoder": "labels"},  # one learned token per target (no reading)
    "labels-full": {"model.text_encoder": "labels", "model.attention": "full"},
    "labels-masked": {"model.text_encoder": "labels", "model.attention": "masked"},
    "labels-512": {"model.text_encoder": "labels", "model.image_size": 512},
    "labels-s2": {"model.text_encoder": "labels", "model.semantic_stride": 2},
    "sentences-s2": {"model.semantic_stride": 2},
    # reading made fast (the toy's measurements): small initial queries, no text transformer
    "reading": {"model.query_init_std": 0.02, "model.text_layers": 0},
    "reading-s2": {"model.query_init_std": 0.02, "model.text_layers": 0,
                   "model.semantic_stride": 2},
    # search kept exploring: a third of each layer's draws uniform (not in the paper)
    "labels-explore": {"model.text_encoder": "labels", "model.sampling_explore": 0.3},
    "labels-explore-0.1": {"model.text_encoder": "labels", "model.sampling_explore": 0.1},
    "labels-explore-0.5": {"model.text_encoder": "labels", "model.sampling_explore": 0.5},
    # the same without A.5's 90-degree rotations (left/right kept in place), which the
    # "final-" variants change one setting of
    "labels-explore-norot": FINAL,
    "labels-q": {"model.text_encoder": "labels", "model.query_init_std": 0.02},
    "labels-explore-q": {"model.text_encoder": "labels", "model.sampling_explore": 0.3,
                         "model.query_init_std": 0.02},
    # the control table on the final code: the demo's settings with one thing changed
    "final-sentences": {**FINAL, "model.text_encoder": "builtin"},
    "final-full": {**FINAL, "model.attention": "full"},
    "final-masked": {**FINAL, "model.attention": "masked"},
    "final-q": FINAL_Q,
    # final-q at other learning rates than 2e-3 (lr1: the demo now)
    "final-q-lr1": {**FINAL_Q, "optim.lr": 1e-3},
    "final-q-lr3": {**FINAL_Q, "optim.lr": 3e-3},
    "final-reading": {**FINAL, "model.text_encoder": "builtin", "model.query_init_std": 0.02,
                      "model.text_layers": 0},
    "final-512": {**FINAL, "model.image_size": 512},
    "unet": {"expert": True},  # the expert's own recipe, as `demo --expert`
    # the demo's augmentation (crops, no turns), as the table of 2026-11-30 measured it
    "unet-norot": {"expert": True, "augment": True, "data.rotations": False},
}


def run(variant: str, data: Path, out: Path, *, minutes: float | None, steps: int | None,
        seed: int, threads: int, workers: int) -> dict[str, Any]:
    """Train `variant` for `minutes` or for `steps` of the demo's batch (4 images; the U-Net
    takes 8 images a step, so it gets half the steps: the same images seen)."""
    torch.set_num_threads(threads)
    run_dir = out / f"{variant}-s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    started = time.monotonic()
    demo = TRAINING.with_overrides({**BASE, "train.max_minutes": minutes or 1.0,
                                    "train.max_steps": None, "train.seed": seed,
                                    "data.workers": workers, "data.root": str(data)})
    overrides = dict(VARIANTS[variant])
    image_size = demo.model.resolve().image_size
    unet_steps = None if steps is None else steps * demo.train.batch_size // UNET_BATCH
    if overrides.pop("expert", False):
        augment = overrides.pop("augment", False)  # the expert's own recipe has none
        demo = demo.with_overrides(overrides)
        result = train_unet(data, run_dir / "run", minutes=minutes, steps=unet_steps,
                            batch_size=UNET_BATCH, image_size=image_size,
                            seed=seed, val_fraction=demo.data.val_fraction, workers=workers,
                            augment=augment, rotations=demo.data.rotations, progress=False)
        model: torch.nn.Module = result.model
        steps, images = result.metrics["steps"], result.metrics["images"]
    else:
        budget = ({"train.max_minutes": None, "train.max_steps": steps,
                   "train.snapshot_minutes": None} if steps else {})
        cfg = demo.with_overrides({**overrides, **budget})
        image_size = cfg.model.resolve().image_size
        trained = train(cfg, run_dir / "run", progress=False)
        model = BoltzFormer.from_pretrained(trained.best_checkpoint or trained.last_checkpoint)
        steps = trained.metrics.get("step")
        images = steps * demo.train.batch_size if steps else None
    info = {"variant": variant, "seed": seed, "minutes": minutes, "threads": threads,
            "budget_steps": steps,
            "steps": steps, "images_seen": images, "image_size": image_size,
            "train_minutes": (time.monotonic() - started) / 60}
    (run_dir / "train.json").write_text(json.dumps(info, indent=2) + "\n")
    return score(run_dir, data, model)


def load(run_dir: Path) -> torch.nn.Module:
    """The trained model of a run folder: BoltzFormer's best (else last) or the U-Net."""
    run = run_dir / "run"
    if (run / "model.safetensors").is_file():
        return UNetExpert.from_pretrained(run)
    return BoltzFormer.from_pretrained(run / "best" if (run / "best").is_dir() else run / "last")


def score(run_dir: Path, data: Path, model: torch.nn.Module | None = None) -> dict[str, Any]:
    """Evaluate a run's model on the test split; write eval/ and result.json."""
    info = json.loads((run_dir / "train.json").read_text())
    model = model if model is not None else load(run_dir)
    test = BiomedParseDataset(data, "test", image_size=info["image_size"], train=False)
    ev = evaluate(model, test, seed=info["seed"], progress=False)
    write_report(ev, run_dir / "eval")
    summary = summarise(info, ev.metrics)
    (run_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarise(info: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """A result.json: the run's `info` and the figures of its evaluation's metrics `m`
    ("tiny", the part of small < 0.1 % of the image, is None for evaluations made before the
    stratum existed, and when the split has no tiny object)."""
    return {
        **info,
        "small": m["size_strata"]["weighted"]["small"]["dice_mean"],
        "tiny": m["size_strata"]["weighted"].get("tiny", {}).get("dice_mean"),
        "large": m["size_strata"]["weighted"]["large"]["dice_mean"],
        "all": m["overall"]["dice_mean"],
        "failure_rate": m["overall"]["failure_rate"],
        "prompt_accuracy": m.get("grounding", {}).get("prompt_accuracy"),
        "hedging": m.get("grounding", {}).get("hedging"),
        "by_target": {k: v["dice_mean"] for k, v in m["by_target"].items()},
    }


def results(folders: list[Path]) -> list[dict[str, Any]]:
    """The result.json of every run in `folders` (folders of runs of this script), and a
    result of the same form for each folder that is a `boltzformer demo` output (its
    metrics.json and run/; variant "demo")."""
    rows = []
    for folder in folders:
        if (folder / "metrics.json").is_file():  # a demo's output folder
            records = (folder / "run" / "metrics.jsonl").read_text().splitlines()
            end = next(r for r in map(json.loads, records) if r["kind"] == "end")
            metrics = json.loads((folder / "metrics.json").read_text())
            rows.append(summarise({"variant": "demo", "seed": metrics["seed"],
                                   "steps": end["step"]}, metrics))
        else:
            rows += [json.loads(p.read_text()) for p in sorted(folder.glob("*/result.json"))]
    return rows


def ceiling(data: Path, *, per_target: int = 60, steps: int = 150) -> dict[str, Any]:
    """The resolution ceiling: the best any model predicting logits at stride s can do.

    For each small target of the test split (the first `per_target` of each kind), logits at
    stride s are optimised freely (Adam, `steps` steps of Dice + BCE, starting from the logit of
    each cell's coverage) so that, bilinearly upsampled to the input as the model upsamples,
    they match the mask; the Dice of the result thresholded at 0 is the ceiling. "coverage" is
    the unoptimised start: the logit of the share of each cell the object covers."""
    torch.set_num_threads(1)
    test = BiomedParseDataset(data, "test", image_size=256, train=False)
    masks: dict[str, list[torch.Tensor]] = {}
    for i, sample in enumerate(test.samples):
        if sample.area is not None and 0 < sample.area < 0.01:
            group = masks.setdefault(sample.target, [])
            if len(group) < per_target:
                group.append(test[i]["mask"])
    out: dict[str, Any] = {}
    for target, group in sorted(masks.items()):
        m = torch.stack(group)
        size = m.shape[-2:]
        out[target] = {"n": len(group)}
        for stride in (2, 4, 8):
            z = torch.logit(F.avg_pool2d(m, stride).clamp(1e-3, 1 - 1e-3))
            start = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            z.requires_grad_(True)
            opt = torch.optim.Adam([z], lr=0.1)
            for _ in range(steps):
                up = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
                loss = dice_loss(up, m) + F.binary_cross_entropy_with_logits(up, m)
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                up = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
                out[target][f"stride{stride}"] = float(dice_batch(up > 0, m > 0.5).mean())
                out[target][f"coverage{stride}"] = float(dice_batch(start > 0, m > 0.5).mean())
        print(target, {k: round(100 * v, 1) if k != "n" else v for k, v in out[target].items()},
              flush=True)
    return out


def cost(variants: list[str], rounds: int = 6) -> dict[str, list[float]]:
    """Seconds per training step of each variant, 1 thread, interleaved round by round so
    that whatever else the machine does falls on every variant alike: forward + backward
    with deep supervision + AdamW step of the variant's model (demo configuration) on 4
    random 256^2 images x 8 targets; the U-Net: 8 images, all targets' channels. The ratio
    of two variants' times is the ratio of the steps they make in equal minutes."""
    torch.set_num_threads(1)
    labels = [f"t{i}" for i in range(19)]
    steps: dict[str, Any] = {}
    for variant in variants:
        overrides = dict(VARIANTS[variant])
        if overrides.pop("expert", False):
            unet = UNetExpert(UNetBaselineConfig(tuple(labels))).train()
            opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
            images = torch.rand(UNET_BATCH, 3, 256, 256) * 255
            masks = (torch.rand(UNET_BATCH, len(labels), 256, 256) > 0.99).float()
            annotated = torch.ones(UNET_BATCH, len(labels), dtype=torch.bool)

            def unet_step(unet=unet, opt=opt, images=images, masks=masks,
                          annotated=annotated) -> None:
                loss = masked_dice_bce(unet.channel_logits(images), masks, annotated)
                opt.zero_grad()
                loss.backward()
                opt.step()
            steps[variant] = unet_step
            continue
        cfg = TRAINING.with_overrides({**BASE, **overrides, "model.text_labels": labels})
        model = BoltzFormer.from_config(cfg.model.resolve()).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        size = cfg.model.resolve().image_size
        images = torch.rand(4, 3, size, size) * 255
        index = torch.arange(4).repeat_interleave(8)
        names = labels[:8] * 4
        prompts = names if model.text_encoder.labels is not None else [
            f"{n} in CT" for n in names]
        masks = (torch.rand(32, 1, size, size) > 0.99).float()

        def step(model=model, opt=opt, images=images, index=index, names=names,
                 prompts=prompts, masks=masks) -> None:
            out = model(images, prompts, image_index=index, targets=names,
                        return_layers=True)
            loss = training_loss(out.logits, masks, out.layer_logits)[0]
            opt.zero_grad()
            loss.backward()
            opt.step()
        steps[variant] = step
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        for variant, step in steps.items():
            started = time.perf_counter()
            step()
            times[variant].append(time.perf_counter() - started)
    return {v: t[1:] for v, t in times.items()}


@torch.no_grad()
def search(run_dir: Path, data: Path, *, items: int = 400, seed: int = 0) -> dict[str, Any]:
    """Where the decoder looks: for the first `items` present targets of the test split, per
    layer, the share of the target's cells (on the layer's token grid) that at least one
    query sampled ("coverage"), and the share of sampled tokens on the target against the
    target's share of the grid ("focus", 1 = no better than uniform). Small targets only and
    all. Writes search.json in the run folder."""
    model = load(run_dir).eval()
    info = json.loads((run_dir / "train.json").read_text())
    test = BiomedParseDataset(data, "test", image_size=info["image_size"], train=False)
    generator = torch.Generator().manual_seed(seed)
    stats: dict[str, list[list[tuple[float, float]]]] = {"small": [], "all": []}
    taken = 0
    for i in range(len(test)):
        item = test[i]
        if not item["mask"].any():
            continue
        taken += 1
        if taken > items:
            break
        prompt = item["target"] if model.text_encoder.labels is not None else item["prompt"]
        out = model(item["image"][None], [prompt], generator=generator, return_sampling=True)
        per_layer = []
        for keep in out.keep_masks:  # (1, Q, h, w)
            cells = F.adaptive_max_pool2d(item["mask"][None], keep.shape[-2:])[0, 0] > 0
            union = keep[0].any(0)
            coverage = float((union & cells).sum() / cells.sum())
            kept = keep[0].float().sum()
            on_target = float((keep[0] & cells).float().sum() / kept.clamp_min(1))
            per_layer.append((coverage, on_target / float(cells.float().mean())))
        for group in ("small", "all"):
            if group == "all" or item["area"] < 0.01:
                stats[group].append(per_layer)
    summary = {
        group: {"n": len(rows),
                "coverage": [float(sum(r[l][0] for r in rows) / len(rows))
                             for l in range(len(rows[0]))] if rows else [],
                "focus": [float(sum(r[l][1] for r in rows) / len(rows))
                          for l in range(len(rows[0]))] if rows else []}
        for group, rows in stats.items()
    }
    (run_dir / "search.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def one_sentence(data: Path, out: Path) -> None:
    """A copy of the phantom set `data` in `out` whose every mask keeps only its first
    sentence ("aorta in abdomen CT"): one fixed sentence per target, site and modality. The
    image and mask folders are linked, not copied."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in data.iterdir():
        if entry.suffix == ".json":
            index = json.loads(entry.read_text())
            for annotation in index["annotations"]:
                annotation["sentences"] = annotation["sentences"][:1]
            (out / entry.name).write_text(json.dumps(index))
        elif not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry.resolve())


def sides(run_dir: Path) -> dict[str, Any]:
    """For the prompts of a left or right organ: the share whose best-matching target is the
    prompted organ, its mirror image, nothing, or another organ, from the grounding
    confusion of a run's eval/metrics.json (or a report folder's metrics.json, such as the
    demo's demo_output; absent targets, which have no best match, are not in it)."""
    path = run_dir / "eval" / "metrics.json"  # a run of this script; else a report folder
    metrics = json.loads((path if path.is_file() else run_dir / "metrics.json").read_text())
    mirror = {"left": "right", "right": "left"}
    counts = {"prompted": 0, "mirrored": 0, "none": 0, "other": 0}
    for target, matches in metrics["grounding"]["confusion"].items():
        side, _, organ = target.partition(" ")
        if side not in mirror:
            continue
        for best, n in matches.items():
            key = ("prompted" if best == target else "mirrored"
                   if best == f"{mirror[side]} {organ}" else "none" if best == NONE else "other")
            counts[key] += n
    total = sum(counts.values())
    return {"n": total, **{k: v / max(total, 1) for k, v in counts.items()}}


def table(folders: list[Path]) -> str:
    rows = results(folders)
    head = ("| run | steps | small | tiny | large | all | failures | prompt acc. | hedging |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def pct(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"

    lines = [head] + [
        f"| {r['variant']} s{r['seed']} | {r['steps']} | {pct(r['small'])} | "
        f"{pct(r.get('tiny'))} | {pct(r['large'])} | {pct(r['all'])} | "
        f"{pct(r['failure_rate'])} % | {pct(r['prompt_accuracy'])} | {pct(r['hedging'])} |"
        for r in rows
    ]
    return "\n".join(lines)


def spread(folders: list[Path]) -> str:
    """Mean ± standard deviation over seeds (or demo runs) of each variant's results (paper
    Table 3). Tiny (objects < 0.1 % of the image, a part of small) is over the runs that
    have it (n given when some lack it: older results, or no tiny object in the split)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results(folders):
        groups.setdefault(r["variant"], []).append(r)
    keys = ("small", "tiny", "large", "all", "failure_rate", "prompt_accuracy", "hedging")
    lines = ["| variant | seeds | steps | small | tiny | large | all | failures | prompt acc. "
             "| hedging |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, rows in groups.items():
        cells = []
        for key in keys:
            found = [100 * r[key] for r in rows
                     if r.get(key) is not None and math.isfinite(r[key])]
            if not found:
                cells.append("–")
                continue
            values = torch.tensor(found, dtype=torch.float64)
            sd = float(values.std()) if len(found) > 1 else 0.0
            some = f" (n={len(found)})" if len(found) < len(rows) else ""
            cells.append(f"{float(values.mean()):.1f} ± {sd:.1f}{some}")
        steps = "/".join(str(r["steps"]) for r in rows)
        seeds = ",".join(str(r["seed"]) for r in rows)
        lines.append(f"| {variant} | {seeds} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("train", help="train and evaluate one variant")
    t.add_argument("variant", choices=sorted(VARIANTS))
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    budget = t.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float)
    budget.add_argument("--steps", type=int, help="steps of 4 images (the U-Net: half as "
                                                  "many of 8)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--workers", type=int, default=1)
    e = sub.add_parser("eval", help="evaluate a trained run folder again")
    e.add_argument("run_dirs", type=Path, nargs="+")
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("search", help="where a trained run's queries sample, per layer")
    r.add_argument("run_dirs", type=Path, nargs="+")
    r.add_argument("--data", type=Path, required=True)
    r.add_argument("--items", type=int, default=400)
    r.add_argument("--threads", type=int, default=1)
    c = sub.add_parser("ceiling", help="the Dice a mask at stride 2, 4 or 8 can reach at best")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True, help="a JSON file for the results")
    k = sub.add_parser("cost", help="seconds per training step of variants, interleaved")
    k.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    k.add_argument("--rounds", type=int, default=6)
    s = sub.add_parser("table", help="a Markdown table of the runs' result.json (or demo "
                       "output folders)")
    s.add_argument("folders", type=Path, nargs="+")
    m = sub.add_parser("spread", help="mean ± sd over seeds per variant (Table 3), or over "
                       "demo output folders")
    m.add_argument("folders", type=Path, nargs="+")
    o = sub.add_parser("one-sentence", help="a copy of DATA with one sentence per mask")
    o.add_argument("data", type=Path)
    o.add_argument("out", type=Path)
    d = sub.add_parser("sides", help="left/right prompts: prompted, mirrored or no match")
    d.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.verb == "train":
        result = run(args.variant, args.data, args.out, minutes=args.minutes, steps=args.steps,
                     seed=args.seed, threads=args.threads, workers=args.workers)
        print(json.dumps(result, indent=2))
    elif args.verb == "eval":
        torch.set_num_threads(args.threads)
        for run_dir in args.run_dirs:
            print(json.dumps(score(run_dir, args.data), indent=2))
    elif args.verb == "cost":
        times = cost(args.variants, args.rounds)
        base = sorted(times[args.variants[0]])[len(times[args.variants[0]]) // 2]
        for variant, seconds in times.items():
            median = sorted(seconds)[len(seconds) // 2]
            print(f"{variant}: median {median:.2f} s/step ({base / median:.2f} x the steps of "
                  f"{args.variants[0]} in equal minutes); " +
                  " ".join(f"{t:.2f}" for t in seconds), flush=True)
    elif args.verb == "ceiling":
        args.out.write_text(json.dumps(ceiling(args.data), indent=2) + "\n")
    elif args.verb == "search":
        torch.set_num_threads(args.threads)
        for run_dir in args.run_dirs:
            result = search(run_dir, args.data, items=args.items)
            for group, v in result.items():
                print(f"{run_dir.name} {group} (n={v['n']}): coverage "
                      f"{' '.join(f'{c:.2f}' for c in v['coverage'])}; focus "
                      f"{' '.join(f'{f:.1f}' for f in v['focus'])}")
    elif args.verb == "spread":
        print(spread(args.folders))
    elif args.verb == "one-sentence":
        one_sentence(args.data, args.out)
    elif args.verb == "sides":
        for run_dir in args.run_dirs:
            r = sides(run_dir)
            print(f"{run_dir.name} (n={r['n']}): prompted {100 * r['prompted']:.1f} %, "
                  f"mirrored {100 * r['mirrored']:.1f} %, none {100 * r['none']:.1f} %, "
                  f"other {100 * r['other']:.1f} %")
    else:
        print(table(args.folders))


if __name__ == "__main__":
    main()
