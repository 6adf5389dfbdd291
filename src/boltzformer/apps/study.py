"""`boltzformer study`: the paper's comparisons (Tables 3-8) on the built-in benchmark.

Every run trains the `tiny` model under the same budget (minutes or steps, data, backbone, seed
set) with the training recipe (deep supervision, K prompts per image; docs/training.md) and is
evaluated on the same test split with Table 2's size strata. Beside the paper's tables: the
recipe's own switches (deep supervision on/off, K = 1 against K) and the expert baseline, a
U-Net with one output channel per target trained on the same data for the same minutes.
Runs that share a configuration and seed (the default Boltzmann model appears in every table)
are trained once. Finished runs are not redone: the study resumes where it stopped.

    OUT_DIR/data/                the phantom benchmark
    OUT_DIR/runs/<run>-s<seed>/  one training run each, with result.json
    OUT_DIR/<table>.md, .csv     one table per paper table (mean ± std over seeds)
    OUT_DIR/study.png            all tables as bar charts
    OUT_DIR/summary.md           every table, the command, the date and the machine
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import platform
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from boltzformer.data import BiomedParseDataset, generate_phantoms
from boltzformer.evaluation.evaluate import evaluate
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.train.config import DataConfig, LoopConfig, ModelSpec, OptimConfig, TrainConfig
from boltzformer.train.trainer import train

CONSTANT_PROMPT = "object in image"  # the text control: every prompt replaced by this

# Every run's recipe and budget (`train.max_minutes` or `train.max_steps`); each run sets its
# seed, the data folder and its variant's changes. `data.workers` is shared among the jobs.
TRAINING = TrainConfig(
    model=ModelSpec(preset="tiny", overrides={"image_size": 128}),
    # validation only logs: every run is scored at its end
    data=DataConfig(workers=2, val_fraction=0.05),
    optim=OptimConfig(lr=2e-3, warmup_steps=20),  # warm-up: at most a tenth of a step budget
    train=LoopConfig(batch_size=4, epochs=1000, patience=None, max_minutes=2.5,
                     checkpoint_every=200),
)
# The smoke version: tiny data, 3 steps a run.
QUICK_TRAINING = TRAINING.with_overrides({
    "model.image_size": 96, "train.batch_size": 2, "train.max_steps": 3,
    "train.max_minutes": None, "data.workers": 0,
})


@dataclass(frozen=True)
class Variant:
    """One row of a table: model overrides, training overrides ("section.key": value), whether
    the prompt is replaced, or the U-Net expert baseline instead of BoltzFormer."""

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    constant_prompt: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    expert: bool = False

    @property
    def key(self) -> str:
        """A folder name; equal configurations share it (and so share the run)."""
        if self.expert:
            return "unet-expert"
        parts = [f"{k}={v}" for k, v in sorted({**self.overrides, **self.training}.items())]
        if self.constant_prompt:
            parts.append("constant-prompt")
        return "_".join(parts) or "boltzmann"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    variants: tuple[Variant, ...]
    main: bool = False  # main tables use every seed; ablations use `ablation_seeds`


def _sweep(field_name: str, values: list[Any], fmt: str) -> tuple[Variant, ...]:
    return tuple(Variant(fmt.format(v), {} if v == _DEFAULTS[field_name] else {field_name: v})
                 for v in values)


_DEFAULTS = {"tau0": 1.0, "sampling_ratio": 0.1, "num_queries": 10, "text_prior": True,
             "pigma": True}

TABLES: tuple[Table, ...] = (
    Table("table3_attention", "Attention: full vs 0.5 threshold vs Boltzmann sampling "
          "(paper Table 3)",
          (Variant("full attention", {"attention": "full"}),
           Variant("0.5 threshold", {"attention": "masked"}),
           Variant("Boltzmann sampling")), main=True),
    Table("text_control", "Does the benchmark need the text? Prompted vs one constant prompt "
          "vs the target handed over (one learned token per target name: no reading)",
          (Variant("prompted"), Variant(f"constant prompt '{CONSTANT_PROMPT}'",
                                        constant_prompt=True),
           Variant("one token per target", {"text_encoder": "labels"})), main=True),
    Table("table4_tau0", "Base temperature tau0 (paper Table 4)",
          _sweep("tau0", [0.25, 0.5, 1.0, 2.0], "tau0 = {}")),
    Table("table5_ratio", "Sampling ratio N / tokens (paper Table 5)",
          _sweep("sampling_ratio", [0.05, 0.1, 0.2, 0.5], "ratio = {:.0%}")),
    Table("table6_queries", "Number of queries (paper Table 6)",
          _sweep("num_queries", [1, 10, 32], "{} queries")),
    Table("table7_prior", "Text-conditioned query prior (paper Table 7)",
          (Variant("unconditioned prior", {"text_prior": False}),
           Variant("text-conditioned prior"))),
    Table("table8_pigma", "PiGMA pixel-grounded correction (paper Table 8)",
          (Variant("query ensemble only", {"pigma": False}),
           Variant("with pixel-grounded correction"))),
    Table("deep_supervision", "Deep supervision of every decoder layer (off: the paper's loss)",
          (Variant("final loss only (paper)", training={"loss.deep_supervision": False}),
           Variant("each query's mask"),
           Variant("ensemble mean", training={"loss.target": "mean"})), main=True),
    Table("prompts_per_image", "Prompts decoded per encoded image (K)",
          (Variant("K = 1 (one pair per image)", training={"train.prompts_per_image": 1}),
           Variant(f"K = {TRAINING.train.prompts_per_image}")), main=True),
    Table("expert_baseline", "Expert baseline: U-Net, one output channel per target (the "
          "paper's nnU-Net comparison)",
          (Variant("U-Net expert (segmentation-models-pytorch)", expert=True),
           Variant("BoltzFormer (text prompt)")), main=True),
)


@dataclass(frozen=True)
class StudySettings:
    """Which tables, over how many seeds, on how many phantom images, how many runs at once;
    `training` is every run's recipe and budget: minutes of training per run (a time budget,
    as users have), or `train.max_steps` (reproducible to the bit, for tests)."""

    out_dir: Path
    seeds: int = 3
    ablation_seeds: int = 1
    images: int = 600
    jobs: int = 2  # runs trained at once, each in its own process with cpus / jobs threads
    tables: tuple[str, ...] = tuple(t.name for t in TABLES)
    progress: bool = True
    training: TrainConfig = TRAINING

    @classmethod
    def quick(cls, out_dir: Path, **kw: Any) -> StudySettings:
        """A minutes-long smoke version: every table, one seed, a few steps, tiny data."""
        values: dict[str, Any] = dict(seeds=1, ablation_seeds=1, images=16, jobs=1,
                                      training=QUICK_TRAINING)
        values.update(kw)
        return cls(out_dir=out_dir, **values)


def plan(s: StudySettings) -> list[tuple[Table, Variant, int]]:
    """Every (table, variant, seed) cell of the study, in order."""
    cells = []
    for table in TABLES:
        if table.name not in s.tables:
            continue
        seeds = s.seeds if table.main else min(s.seeds, s.ablation_seeds)
        cells += [(table, v, seed) for v in table.variants for seed in range(seeds)]
    return cells


def cell_config(s: StudySettings, data: Path, variant: Variant, seed: int) -> TrainConfig:
    """The training of one (variant, seed): `s.training` with the seed, the data, this job's
    share of the workers and the variant's changes."""
    base = s.training
    steps = base.train.max_steps
    overrides = {
        "data.root": str(data), "data.workers": base.data.workers // s.jobs,
        "data.prompt": CONSTANT_PROMPT if variant.constant_prompt else None,
        "train.seed": seed,
        "optim.warmup_steps": (min(base.optim.warmup_steps, steps // 10) if steps
                               else base.optim.warmup_steps),
        **{f"model.{key}": value for key, value in variant.overrides.items()},
        **variant.training,
    }
    return base.with_overrides(overrides)


def run_cell(s: StudySettings, data: Path, variant: Variant, seed: int) -> dict[str, Any]:
    """Train and evaluate one (variant, seed), or read its result if it is done."""
    run_dir = s.out_dir / "runs" / f"{variant.key}-s{seed}"
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    started = time.monotonic()
    if variant.expert:
        model, steps = _train_expert(s, data, run_dir, seed)
        prompt = None
    else:
        cfg = cell_config(s, data, variant, seed)
        resume = (run_dir / "last").is_dir()
        result = train(cfg, run_dir, resume=resume, progress=False)
        model = BoltzFormer.from_pretrained(result.last_checkpoint)
        steps, prompt = result.metrics["step"], cfg.data.prompt
    test = BiomedParseDataset(data, "test", image_size=s.training.model.resolve().image_size,
                              train=False, prompt=prompt)
    ev = evaluate(model, test, seed=seed, progress=False)
    m = ev.metrics
    out = {
        "variant": variant.key, "seed": seed, "steps": steps,
        "small": m["size_strata"]["weighted"]["small"]["dice_mean"],
        "large": m["size_strata"]["weighted"]["large"]["dice_mean"],
        "all": m["overall"]["dice_mean"],
        "failure_rate": m["overall"]["failure_rate"],
        "minutes": (time.monotonic() - started) / 60,
    }
    result_file.write_text(json.dumps(out, indent=2) + "\n")
    return out


def _train_expert(s: StudySettings, data: Path, run_dir: Path, seed: int
                  ) -> tuple[torch.nn.Module, int]:
    """The U-Net expert on the same split, images per step and budget (restarted if a
    previous attempt was interrupted: it keeps no resumable state)."""
    from boltzformer.baselines import train_unet  # an optional extra: imported on use

    if run_dir.exists():
        shutil.rmtree(run_dir)
    cfg = s.training
    result = train_unet(data, run_dir, minutes=cfg.train.max_minutes, steps=cfg.train.max_steps,
                        image_size=cfg.model.resolve().image_size,
                        batch_size=cfg.train.batch_size, seed=seed,
                        val_fraction=cfg.data.val_fraction, workers=cfg.data.workers // s.jobs,
                        progress=False)  # the expert's own recipe (issue 24), not BoltzFormer's
    return result.model, result.metrics["steps"]


def _threads_per_job(s: StudySettings) -> int:
    """Torch threads for each run: all of them for one job, else an equal share of the CPUs."""
    return torch.get_num_threads() if s.jobs == 1 else max(1, (os.cpu_count() or 1) // s.jobs)


def _init_job(threads: int) -> None:
    """A parallel job's process: its share of the CPU threads."""
    torch.set_num_threads(threads)


def run_study(s: StudySettings) -> dict[str, Path]:
    """Run every cell (resuming; `s.jobs` at a time), then write the tables, the figure and
    the summary."""
    if s.jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {s.jobs}")
    s.out_dir.mkdir(parents=True, exist_ok=True)
    data = s.out_dir / "data"
    if not (data / "test.json").is_file():
        size = max(96, s.training.model.resolve().image_size)
        generate_phantoms(data, images=s.images, size=size, seed=0,
                          progress=s.progress)
    todo = list({(v.key, seed): (v, seed) for _table, v, seed in plan(s)}.values())
    results: dict[tuple[str, int], dict[str, Any]] = {}
    bar = tqdm(total=len(todo), desc="study", unit="run", disable=not s.progress)
    if s.jobs == 1:
        for variant, seed in todo:
            bar.set_postfix_str(f"{variant.key} s{seed}")
            results[(variant.key, seed)] = run_cell(s, data, variant, seed)
            bar.update()
    else:  # independent runs in parallel processes: more images/s than one run on all cores
        with ProcessPoolExecutor(s.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_job, initargs=(_threads_per_job(s),)) as pool:
            futures = {pool.submit(run_cell, s, data, variant, seed): (variant, seed)
                       for variant, seed in todo}
            for future in as_completed(futures):
                variant, seed = futures[future]
                results[(variant.key, seed)] = future.result()
                bar.set_postfix_str(f"done {variant.key} s{seed}")
                bar.update()
    bar.close()
    return write_tables(s, results)


def _stats(values: list[float]) -> str:
    if not values:
        return "n/a"
    arr = 100 * np.asarray(values, dtype=float)
    if len(arr) == 1:
        return f"{arr[0]:.1f}"  # one seed: no spread to show
    return f"{arr.mean():.1f} ± {arr.std(ddof=1):.1f}"


def write_tables(s: StudySettings, results: dict[tuple[str, int], dict[str, Any]]
                 ) -> dict[str, Path]:
    """One Markdown + CSV table per paper table, a bar-chart figure and summary.md."""
    paths: dict[str, Path] = {}
    sections = []
    for table in TABLES:
        if table.name not in s.tables:
            continue
        rows = []
        for v in table.variants:
            runs = [r for (key, _), r in sorted(results.items()) if key == v.key]
            runs = [r for r in runs if table.main or r["seed"] < s.ablation_seeds]
            rows.append((v, runs))
        md = [f"## {table.title}", "",
              "| variant | small (< 1 %) Dice | large (≥ 1 %) Dice | all Dice | failure rate "
              "| seeds |", "|---|---:|---:|---:|---:|---:|"]
        with (s.out_dir / f"{table.name}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["variant", "seed", "small", "large", "all", "failure_rate"])
            for v, runs in rows:
                md.append(
                    f"| {v.label} | {_stats([r['small'] for r in runs])} | "
                    f"{_stats([r['large'] for r in runs])} | {_stats([r['all'] for r in runs])}"
                    f" | {_stats([r['failure_rate'] for r in runs])} | {len(runs)} |")
                for r in runs:
                    writer.writerow([v.label, r["seed"], r["small"], r["large"], r["all"],
                                     r["failure_rate"]])
        md.append("")
        (s.out_dir / f"{table.name}.md").write_text("\n".join(md))
        paths[table.name] = s.out_dir / f"{table.name}.md"
        sections.append(("\n".join(md), table, rows))
    paths["figure"] = _figure(s, sections)
    paths["summary"] = _summary(s, [md for md, _, _ in sections], list(results.values()))
    return paths


def _figure(s: StudySettings, sections: list) -> Path:
    """One bar chart per table, 4 to a row: mean Dice (bars) and every seed's run (dots)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, len(sections))
    rows_of_panels = -(-len(sections) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows_of_panels), dpi=110)
    FigureCanvasAgg(fig)
    for k, (_, table, rows) in enumerate(sections):
        ax = fig.add_subplot(rows_of_panels, cols, k + 1)
        x = np.arange(len(rows))
        for j, (group, color) in enumerate((("small", "#d62728"), ("large", "#1f77b4"))):
            offset = (j - 0.5) * 0.38
            means = [100 * np.mean([r[group] for r in runs]) if runs else 0 for _, runs in rows]
            ax.bar(x + offset, means, 0.38, color=color, alpha=0.6,
                   label=f"{group}: mean" if k == 0 else None)
            for i, (_, runs) in enumerate(rows):
                values = [100 * r[group] for r in runs]
                ax.plot([x[i] + offset] * len(values), values, "o", ms=3, color=color,
                        markeredgecolor="black", markeredgewidth=0.4,
                        label=f"{group}: one seed" if k == 0 and i == 0 else None)
        ax.set_xticks(x, [v.label for v, _ in rows], rotation=25, ha="right", fontsize=7)
        ax.set_title(table.title.split(" (")[0], fontsize=8)
        ax.set_ylabel("Dice (%)", fontsize=8)
        ax.set_ylim(0, 100)
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    path = s.out_dir / "study.png"
    fig.savefig(path)
    return path


def _budget(s: StudySettings) -> str:
    minutes, steps = s.training.train.max_minutes, s.training.train.max_steps
    parts = ([f"{minutes:g} min of training"] if minutes else []) + (
        [f"{steps} steps"] if steps else [])
    return " or ".join(parts)


def _summary(s: StudySettings, tables: list[str], runs: list[dict[str, Any]]) -> Path:
    tables_arg = ("" if set(s.tables) == {t.name for t in TABLES}
                  else " --tables " + " ".join(s.tables))
    loop, size = s.training.train, s.training.model.resolve().image_size
    head = [
        "# BoltzFormer study on the built-in phantom benchmark", "",
        f"- date: {date.today().isoformat()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; {s.jobs} run(s) at once, "
        f"{_threads_per_job(s)} torch thread(s) each; "
        f"{platform.python_implementation()} {platform.python_version()}, torch "
        f"{torch.__version__}",
        f"- budget per run: {_budget(s)} of {loop.batch_size} images per step (up to "
        f"{loop.prompts_per_image} prompts each), peak learning rate {s.training.optim.lr:g}, "
        f"at {size}x{size}, "
        f"`tiny` preset from scratch (the U-Net: the same minutes and images per step); data: "
        f"{s.images} phantom images (80 % train, of which 20 % validation; 20 % test)",
        f"- seeds: {s.seeds} for the main tables, {min(s.seeds, s.ablation_seeds)} for ablations",
        f"- command: `boltzformer study OUT_DIR --seeds {s.seeds} "
        f"{f'--steps {loop.max_steps}' if loop.max_steps else f'--minutes {loop.max_minutes:g}'}"
        f" --images "
        f"{s.images} --jobs {s.jobs}{tables_arg}`",
        f"- time: {len(runs)} runs, {sum(r['minutes'] for r in runs):.0f} run-minutes of training"
        f" and evaluation ({s.jobs} at once)",
        "- Dice in %, mean ± std over seeds (one value where one seed ran); small = object < 1 %"
        " of the image (paper Table 2); failure rate = share of present targets missed"
        " completely", "",
        "![study](study.png)", "",
    ]
    path = s.out_dir / "summary.md"
    path.write_text("\n".join(head + tables))
    return path
