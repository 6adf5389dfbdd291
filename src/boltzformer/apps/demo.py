"""`boltzformer demo`: the main job end to end on built-in data, on a CPU in minutes.

    phantoms (boltzformer synth) -> train `tiny` (boltzformer train) -> evaluate the test
    split (boltzformer evaluate) -> figures: test predictions, Boltzmann sampling, loss curve

Everything lands in one folder (default `demo_output/`):

    report.md            Dice overall / small (< 1 %, and its tiny part < 0.1 %) / large, per
                         target, failure rate, objects (detection, PQ), figures
    predictions.png      test images with ground truth (red) and prediction (green)
    sampling.png         which tokens a query attended to, layer by layer (the paper's Fig. 4)
    loss_curve.png       training and validation loss
    dice_vs_size.png     Dice against object size
    metrics.json, per_sample.csv, run/ (checkpoints, metrics.jsonl, snapshots/ of the weights
    every 2 minutes), data/ (the phantoms)

`python benchmarks/demo_curve.py demo_output` scores the snapshots: the curve of Dice
against training minutes.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from boltzformer.apps.bench import machine_description
from boltzformer.data import BiomedParseDataset, generate_phantoms, list_splits
from boltzformer.evaluation.calibrate import (
    Calibration,
    calibrate_gates,
    format_table,
    with_calibration,
    write_calibration,
)
from boltzformer.evaluation.evaluate import evaluate, scoring_split, write_report
from boltzformer.inference.predictor import Predictor
from boltzformer.inference.viz import GridItem, prediction_grid, sampling_figure
from boltzformer.inference.windowed import window_settings
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import (
    DataConfig,
    LoopConfig,
    LossConfig,
    ModelSpec,
    OptimConfig,
    TrainConfig,
)
from boltzformer.train.data import crops_of
from boltzformer.train.plan import resolve_plan
from boltzformer.train.run_dir import DEMO_RUN
from boltzformer.train.trainer import train

DEMO_STEPS = 700  # the demo's optimiser steps (`--steps`)

# The demo's training: the recipe of docs/training.md (deep supervision, K prompts per encoded
# image, a cosine decay to the end of the time budget). docs/results/demo.md gives the measured
# time and Dice of these settings.
TRAINING = TrainConfig(
    # "labels": one learned token per target (a closed vocabulary): at equal images seen it
    # found 21.6 % small-object Dice against 9.0 % reading the data's sentences ("builtin"),
    # which hedge over organs. "sampling_explore" 0.3: a third of each layer's draws uniform
    # (not the paper): at equal minutes, 3 seeds, small 16.9 ± 1.4 / all 29.4 ± 1.0 against
    # Eq. 5 alone's 14.4 ± 3.8 / 25.8 ± 5.3. "query_init_std" 0.02: initial queries small
    # against the text tokens (not the release's N(0, 1)), so the prompt tells them apart
    # from the first steps: without rotations, at equal steps, 3 seeds, small 25.1 ± 2.3 ->
    # 28.0 ± 2.0, prompt accuracy 43.5 -> 49.7 % (docs/results/small_objects.md)
    # "existence_head" (not the paper; trained with the decoder, "existence_detach" false):
    # a per-prompt probability that the target is there, below 0.5 an empty mask. With two
    # absent names per training image ("negatives") and absent pairs left to the head alone
    # ("absent_masks" false), at equal steps on phantoms with absent targets, 2 seeds: absent
    # false positives 19.3 / 18.9 % against 23.2 / 22.4 %, small 44.3 / 46.6 against
    # 25.3 / 16.5, tiny 14.4 / 16.4 against 0.0 (docs/results/absent_targets.md)
    model=ModelSpec(preset="tiny", overrides={"image_size": 256, "text_encoder": "labels",
                                              "sampling_explore": 0.3,
                                              "query_init_std": 0.02,
                                              "existence_head": True,
                                              "existence_detach": False}),
    # validation (5 % of the training images) only picks the checkpoint. "rotations" off (not
    # the paper's A.5): the phantoms, like CT and MRI slices, come in one orientation, and
    # with the turns a left organ lands where the right one was; at equal steps, 3 seeds,
    # small 16.9 ± 1.4 -> 25.1 ± 2.3, all 29.4 ± 1.0 -> 36.5 ± 1.4
    data=DataConfig(workers=2, val_fraction=0.05, rotations=False, negatives=2),
    # lr 1e-3: on these settings, at equal steps, 3 seeds, small 39.4 ± 1.7 against 2e-3's
    # 28.0 ± 2.0 (3e-3 collapsed into one mask for every prompt); with the sentence reader
    # 2e-3 had been the better (docs/training.md)
    optim=OptimConfig(lr=1e-3, warmup_steps=20),
    loss=LossConfig(absent_masks=False),
    # bf16 where the CPU or GPU has it natively, convolutions channels-last: on a Xeon with
    # AMX the step 2.17x the pairs/s of the float32 step before issue 25 (1.36x today's
    # float32), and at equal steps (200, 2 seeds) test Dice small 34.7 / 33.8 against
    # float32's 31.8 / 27.7 (docs/benchmarks.md); elsewhere float32, as before
    # a budget in steps, not minutes: the same command and seed train the same model on any
    # machine under any load (a 9-minute budget gave 136 or 645 steps on one machine,
    # small-object Dice 11.4 or 61.0, depending on what else ran); 700 steps take about 10
    # minutes on this project's 2-core machine (docs/results/demo.md)
    train=LoopConfig(batch_size=4, prompts_per_image=8, epochs=100, patience=None,
                     max_steps=DEMO_STEPS, seed=0, checkpoint_every=200, snapshot_minutes=2.0,
                     amp="auto", channels_last=True),
)

# The demo without the existence head (`--no-existence-head`; its recipe before 2026-12-03):
# the paper's model, every prompt answered with a mask, absent pairs teaching the masks, no
# negatives. The scripts in docs/results whose tables were measured so apply it too.
WITHOUT_EXISTENCE: dict[str, object] = {
    "model.existence_head": False, "model.existence_detach": True, "data.negatives": 0,
    "loss.absent_masks": True}


@dataclass(frozen=True)
class DemoSettings:
    """What the demo does besides training: its folder, its data (the phantoms it generates,
    or a user's BiomedParse-layout folder) and whether the U-Net expert trains too.
    `training` is the run (its budget: `train.max_steps`, or `train.max_minutes`)."""

    out_dir: Path = DEMO_RUN.parent  # the folder `predict`, `serve`, ... look in by default
    images: int = 1200  # phantom images (80 % train, 20 % test)
    # a BiomedParse-layout folder with `train` and `test` splits (e.g. `boltzformer convert`'s
    # output) instead of the phantoms; None: generate `images` phantoms in out_dir/data
    data: Path | None = None
    training: TrainConfig = TRAINING
    progress: bool = True
    expert: bool = False  # also train the U-Net expert for the same budget and compare
    # absent targets in the phantoms (docs/data.md): the share of images with one of the site's
    # optional targets left out, and the share that also gets a target of the other site
    # (a lung on an abdomen slice); both written as empty masks flagged absent. In use the
    # prompted structure is often not there (most CT slices hold no nodule), so the demo's
    # phantoms have absent targets in every split: 254 of its 2,601 test prompts
    absent_share: float = 0.5
    # the size floor (not the paper; modeling/size_floor.py), chosen on the validation split
    # after training (`boltzformer calibrate`) for BoltzFormer and the expert alike: answers
    # smaller than a fraction of their target's usual smallest size are empty
    size_floor: bool = True

    def __post_init__(self) -> None:
        if self.images < 10:
            raise ValueError(f"the demo needs at least 10 images, got {self.images}")
        if not 0.0 <= self.absent_share <= 1.0:
            raise ValueError(f"absent_share must be in [0, 1], got {self.absent_share}")

    def train_config(self, data_dir: Path) -> TrainConfig:
        """`training` on the phantoms in `data_dir`."""
        return self.training.replace(data=replace(self.training.data, root=str(data_dir)))


def budget_text(loop: LoopConfig) -> str:
    """A run's budget in words: "700 steps", "9 min" or "700 steps or 9 min"."""
    parts = ([] if loop.max_steps is None else [f"{loop.max_steps} steps"]) + (
        [] if loop.max_minutes is None else [f"{loop.max_minutes:g} min"])
    return " or ".join(parts) or f"{loop.epochs} epochs"


def budget_flags(loop: LoopConfig) -> str:
    """The demo's flags for a run's budget: "--steps 700", "--minutes 9", or both."""
    return " ".join(([] if loop.max_steps is None else [f"--steps {loop.max_steps}"]) + (
        [] if loop.max_minutes is None else [f"--minutes {loop.max_minutes:g}"]))


def _load() -> str:
    """The 1-minute load average, or "unknown" where the system has none."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def busy_note() -> str | None:
    """A tip when other work already keeps the cores busy: several torch threads then wait
    on each other (on this project's 2-core machine at load 5.5: 2.48 s a step with 2
    threads, 0.41 s with one; quiet: 0.81 s against 1.42 s; docs/results/demo.md)."""
    threads, cores = torch.get_num_threads(), os.cpu_count() or 1
    if threads < 2 or not hasattr(os, "getloadavg"):
        return None
    load = os.getloadavg()[0]
    if load < cores - 0.5:
        return None
    return (f"note: the machine is busy (load average {load:.1f} on {cores} cores), and "
            f"{threads} torch threads slow down badly under load: OMP_NUM_THREADS=1 trains "
            f"several times faster then (the same steps; figures within seed noise)")


def machine_text() -> str:
    """The machine in a few words: CPU model (or GPU), cores and torch threads."""
    info = machine_description(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    chip = info.get("gpu") or info.get("cpu_model") or info["processor"]
    return f"{chip}, {info['cpu_count']} cores, torch threads: {info['torch_threads']}"


def _pct(value: float | None) -> str:
    """A share in % with one decimal; "–" for an empty group (None or NaN)."""
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def headline(metrics: dict[str, Any]) -> str:
    """The summary line of an evaluation's Dice: "small objects 51.9 (tiny 30.2), large 93.0,
    all 62.5" (weighted strata; tiny, < 0.1 % of the image, is a part of small), and, when the
    split has absent targets, "; absent: 3.1 % false positives" (and the existence AUROC)."""
    w = metrics["size_strata"]["weighted"]
    tiny = w.get("tiny", {}).get("dice_mean")
    line = (f"small objects {_pct(w['small']['dice_mean'])} (tiny {_pct(tiny)}), "
            f"large {_pct(w['large']['dice_mean'])}, all {_pct(metrics['overall']['dice_mean'])}")
    absent = metrics.get("absent", {})
    if absent.get("n"):
        line += f"; absent: {_pct(absent['false_positive_rate'])} % false positives"
        if absent.get("existence"):
            line += f" (existence AUROC {absent['existence']['auroc']:.3f})"
    return line


def _comparison(ours: dict[str, Any], train_metrics: dict[str, Any], expert: dict[str, Any],
                s: DemoSettings) -> list[str]:
    """A table of BoltzFormer against the U-Net expert trained for the same budget."""

    def row(name: str, m: dict[str, Any], steps: str) -> str:
        w, g = m["size_strata"]["weighted"], m["grounding"]
        absent = m.get("absent", {})
        fp = f"{_pct(absent['false_positive_rate'])} %" if absent.get("n") else "–"
        return (f"| {name} | {steps} | {_pct(w['small']['dice_mean'])} | "
                f"{_pct(w['tiny']['dice_mean'])} | {_pct(w['large']['dice_mean'])} | "
                f"{_pct(m['overall']['dice_mean'])} | {_pct(m['overall']['failure_rate'])} % | "
                f"{_pct(g['prompt_accuracy'])} % | {_pct(g['hedging'])} % | {fp} |")

    unet, loop = expert["train"], s.training.train
    return [
        f"## Against the U-Net expert (same data, same {budget_text(loop)})",
        "",
        "Dice in %; small: objects < 1 % of the image, tiny: the part of small < 0.1 %; "
        "absent FP: prompts whose target is not in the image answered with a mask.",
        "",
        "| model | steps | small | tiny | large | all | failures | prompt accuracy | hedging "
        "| absent FP |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        row("BoltzFormer tiny", ours,
            f"{train_metrics.get('step')} x {loop.batch_size} images "
            f"({train_metrics.get('minutes', 0):.1f} min)"),
        row("U-Net expert", expert["metrics"],
            f"{unet['steps']} x 8 images ({unet['seconds'] / 60:.1f} min)"),
        "",
        "The expert's own report: [expert/report.md](expert/report.md).",
        "",
    ]


def _floor_section(floor: Calibration, expert: dict[str, Any] | None) -> list[str]:
    """How the gates were chosen on the validation split (and the expert's floor)."""
    lines = ["## The existence threshold and size floor (not the paper's)", "",
             "An answer whose existence probability is below the threshold, or smaller than "
             "FRACTION times its target's 5th-percentile size in the training items, is an "
             "empty mask; both are chosen on the validation items (`boltzformer calibrate`; "
             "score: an absent target 1 when left empty, a present one its Dice). Every test "
             "figure of this report is with them.", "",
             "BoltzFormer: " + format_table(floor)]
    if expert and expert.get("floor"):
        lines += ["U-Net expert: " + format_table(expert["floor"])]
    return lines


def _pick_examples(rows: list[dict], count: int) -> list[int]:
    """Indices of test samples to draw: mostly small objects, varied targets, and a few large."""
    order = sorted(range(len(rows)), key=lambda i: rows[i]["area"])
    small = [i for i in order if rows[i]["size"] == "small"]
    large = [i for i in order if rows[i]["size"] == "large"]
    picked: list[int] = []
    seen: set[str] = set()
    for i in small[::-1]:  # larger small objects first: easiest to see in a thumbnail
        if rows[i]["target"] not in seen and len(picked) < count - 2:
            picked.append(i)
            seen.add(rows[i]["target"])
    for i in large[len(large) // 2 :: max(1, len(large) // 4)]:
        if len(picked) < count:
            picked.append(i)
    return picked


def _prompt(model: BoltzFormer, sample: dict[str, Any]) -> str:
    """The item's sentence, or its target name for a closed-vocabulary ("labels") model."""
    return sample["prompt"] if model.text_encoder.labels is None else sample["target"]


def _figures(model: BoltzFormer, test: BiomedParseDataset, rows: list[dict], out: Path,
             seed: int) -> dict[str, Path]:
    predictor = Predictor(model, seed=seed)
    items = []
    for i in _pick_examples(rows, 8):
        sample = test[i]
        image = sample["image"].permute(1, 2, 0).numpy().astype(np.uint8)
        predictor.set_image(image)
        prob = predictor.predict([_prompt(model, sample)]).prob[0]
        items.append(GridItem(image=image, prob=prob, gt=sample["mask"][0].numpy() > 0.5,
                              caption=f"{_prompt(model, sample)} ({100 * sample['area']:.2f} %)"))
    prediction_grid(items, out / "predictions.png")

    # The sampling figure: the smallest chest nodule the model found best, else any small one.
    nodules = [i for i, r in enumerate(rows) if r["target"] == "nodule" and r["area"] > 0]
    pool = nodules or [i for i, r in enumerate(rows) if r["size"] == "small"]
    best = max(pool, key=lambda i: (rows[i]["dice"], -rows[i]["area"]))
    sample = test[best]
    image = sample["image"].permute(1, 2, 0).numpy().astype(np.uint8)
    predictor.set_image(image)
    trace = predictor.sampling(_prompt(model, sample))
    sampling_figure(image, trace.keep_masks, trace.prob, sample["mask"][0].numpy() > 0.5,
                    path=out / "sampling.png", title=f"\"{sample['prompt']}\"")
    return {"predictions": out / "predictions.png", "sampling": out / "sampling.png"}


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run the whole demo; returns the metrics, their `headline` (and the expert's), the
    paths written, the training's final metrics (`train`: step, ...) and the minutes taken."""
    started = time.monotonic()
    loop, size = s.training.train, s.training.model.resolve().image_size
    busy = busy_note()
    if busy:
        print(busy)
    out = Path(s.out_dir)
    data_dir = out / "data" if s.data is None else Path(s.data)
    if s.data is not None:
        missing = {"train", "test"} - set(list_splits(data_dir))
        if missing:
            raise ValueError(f"{data_dir} is not a BiomedParse-layout folder with train and test "
                             f"splits (missing: {', '.join(sorted(missing))}); see docs/data.md")
        print(f"[1/4] using the data in {data_dir}")
    elif not (data_dir / "test.json").is_file():
        print(f"[1/4] generating {s.images} phantom images in {data_dir}")
        generate_phantoms(data_dir, images=s.images, size=size, seed=loop.seed,
                          absent_fraction=s.absent_share, foreign_fraction=s.absent_share,
                          progress=s.progress)
    else:
        print(f"[1/4] reusing the phantoms in {data_dir}")

    run_dir = out / DEMO_RUN.name
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a demo starts from scratch; `boltzformer train` resumes
    cfg = resolve_plan(s.train_config(data_dir), say=lambda line: print(f"[+] {line}"))
    print(f"[2/4] training the tiny model for {budget_text(loop)} in {run_dir}")
    result = train(cfg, run_dir, progress=s.progress)
    checkpoint = result.best_checkpoint or result.last_checkpoint

    model = BoltzFormer.from_pretrained(checkpoint)
    floor = None
    if s.size_floor:
        print("[3/4] choosing the existence threshold and size floor on the validation split")
        floor = calibrate_gates(model, cfg, progress=s.progress)
        with_calibration(model, floor.floor, floor.existence_threshold)
        write_calibration(checkpoint, floor.floor, floor.existence_threshold)
    print(f"[3/4] evaluating {checkpoint} on the test split")
    test, windows = scoring_split(model.config, data_dir)  # crops: windows at own size
    ev = evaluate(model, test, seed=loop.seed, progress=s.progress, windows=windows)
    paths = write_report(ev, out)

    print("[4/4] drawing figures")
    paths.update(_figures(model, test, ev.samples, out, loop.seed))
    curve = run_dir / "loss_curve.png"
    if curve.is_file():
        shutil.copy(curve, out / "loss_curve.png")
        paths["loss_curve"] = out / "loss_curve.png"
    expert = _expert(s, cfg, test, out / "expert") if s.expert else None
    minutes = (time.monotonic() - started) / 60
    _write_demo_report(out, paths, result.metrics, s, minutes, expert, ev.metrics, floor)
    return {"metrics": ev.metrics, "headline": headline(ev.metrics), "paths": paths,
            "train": result.metrics,
            "minutes": minutes, "expert": expert["metrics"] if expert else None,
            "expert_headline": headline(expert["metrics"]) if expert else None}


def _expert(s: DemoSettings, cfg: TrainConfig, test: BiomedParseDataset, out: Path
            ) -> dict[str, Any]:
    """The U-Net expert beside the demo's run (`train_expert` with the run's config `cfg`)."""
    print(f"[+] training the U-Net expert for the same {budget_text(s.training.train)} in {out}")
    return train_expert(cfg, out, test, size_floor=s.size_floor, progress=s.progress)


def train_expert(cfg: TrainConfig, out: Path, test: BiomedParseDataset, *,
                 size_floor: bool = True, progress: bool = True) -> dict[str, Any]:
    """The U-Net expert (one output channel per target) trained as BoltzFormer is by `cfg`
    (a run's config: its data, split, seed, image size, `train.max_minutes`, precision and
    layout `train.amp`, `train.channels_last`) with its own recipe (`train_unet`'s defaults:
    constant lr, no augmentation), written to `out`/model, its size floor chosen on the
    validation items (`size_floor`) and its evaluation on `test` (read as `scoring_split`
    reads it: at own size when the run trained on crops) written to `out` (the
    [baselines] extra is needed). With `data.negatives` (every image annotates every target
    it holds) it supervises every channel, an unannotated target as empty, as BoltzFormer's
    absent prompts do. It trains on the run's crops (its data plan, `resolve_plan`, made
    here if the config leaves it open). Returns the test metrics, the training's and the
    floor."""
    try:
        from boltzformer.baselines import train_unet  # an optional extra: imported on use
    except ImportError as err:
        raise RuntimeError("--expert needs the U-Net baseline: pip install -e '.[baselines]' "
                           f"({err})") from None
    if cfg.data.root is None:
        raise ValueError("the expert needs the run's data: data.root is not set")
    root = cfg.data.root
    if out.exists():
        shutil.rmtree(out)
    cfg = resolve_plan(cfg)
    size = cfg.model.resolve()
    # a time budget: the same minutes; a step budget: the same steps, of 8 images where
    # BoltzFormer's take 4 (the U-Net's step costs about as much: 2805 steps against 2979 in
    # the same 60 minutes, docs/results/demo.md), so it trains the same minutes or more
    minutes = cfg.train.max_minutes
    result = train_unet(root, out / "model", minutes=minutes,
                        steps=cfg.train.max_steps if minutes is None else None,
                        image_size=size.image_size, seed=cfg.train.seed,
                        val_fraction=cfg.data.val_fraction, workers=cfg.data.workers,
                        supervise="all" if cfg.data.negatives else "annotated",
                        amp=cfg.train.amp, channels_last=cfg.train.channels_last,
                        crops=crops_of(cfg.data, size.image_size),
                        window_overlap=size.window_overlap, progress=progress)
    floor = None
    if size_floor:
        floor = calibrate_gates(result.model, cfg, progress=progress)
        with_calibration(result.model, floor.floor)
        write_calibration(out / "model", floor.floor)
    ev = evaluate(result.model, test, seed=cfg.train.seed, progress=progress,
                  windows=window_settings(result.model.config))
    write_report(ev, out)
    return {"metrics": ev.metrics, "train": result.metrics, "floor": floor}


def _write_demo_report(out: Path, paths: dict[str, Path], train_metrics: dict[str, Any],
                       s: DemoSettings, minutes: float, expert: dict[str, Any] | None,
                       metrics: dict[str, Any], floor: Calibration | None) -> None:
    """Prepend what ran, the comparison with the expert, the size floor's choice and the
    figures to the report."""
    body = paths["report"].read_text()
    loop, model = s.training.train, s.training.model.resolve()
    size = model.image_size
    source = (f"--images {s.images} --absent-share {s.absent_share:g}" if s.data is None
              else f"--data {s.data}")
    source += (f" --negatives {s.training.data.negatives} "
               f"--{'' if model.existence_head else 'no-'}existence-head"
               f"{'' if s.size_floor else ' --no-size-floor'}")
    given = s.training.data  # the crop flags as given (None: planned, not spelled out)
    source += "".join(f" --{flag} {value:g}" for flag, value in (
        ("crop-size", given.crop_size), ("scale", given.scale)) if value is not None)
    data = (f"{s.images} phantom images ({size}x{size})" if s.data is None
            else f"the train split of {s.data} at {size}x{size}")
    head = [
        "# BoltzFormer demo",
        "",
        f"`boltzformer demo {budget_flags(loop)} {source} --image-size "
        f"{size} --text-encoder {model.text_encoder} --seed {loop.seed}`: "
        f"{data}, the `tiny` model trained "
        f"from scratch for {train_metrics.get('step')} steps ({loop.batch_size} images of up to "
        f"{loop.prompts_per_image} prompts each, "
        f"{'bfloat16' if train_metrics.get('amp') == 'bf16' else 'float32'}) in "
        f"{train_metrics.get('minutes', 0):.1f} min, "
        f"evaluated on the held-out test split. Whole demo: {minutes:.1f} min on "
        f"{machine_text()} (load average {_load()}).",
        "",
        *(_comparison(metrics, train_metrics, expert, s) if expert else []),
        *(_floor_section(floor, expert) if floor else []),
        "![test predictions](predictions.png)",
        "",
        "Ground truth outlined in red, prediction in green.",
        "",
        "![Boltzmann sampling across layers](sampling.png)",
        "",
        "![loss curve](loss_curve.png)",
        "",
    ]
    paths["report"].write_text("\n".join(head) + body)
