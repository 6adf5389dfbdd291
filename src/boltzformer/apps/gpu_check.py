"""`make gpu-check` (`python -m boltzformer.apps.gpu_check --out gpu_check.json`): run once each
path that only a CUDA machine takes, and write what happened to one JSON file.

On a CUDA machine:

- `train`: `paper-hiera-s` at 1024² (its backbone randomly initialised, the preset's
  `backbone_pretrained: false`, so nothing is downloaded), a few optimiser steps under bf16
  autocast, through `train` itself (pinned-memory loading, checkpoints with the CUDA RNG
  state), on phantoms written for it;
- `torchrun`: `tiny` under `torchrun --nproc_per_node=<GPUs>` with NCCL, a few steps (with
  one GPU torchrun starts one process, which makes no process group: NCCL needs two GPUs);
- `predictor`: `Predictor` in float32, bfloat16 and float16 on a phantom, the same seed,
  and how far each dtype's probabilities lie from float32's;
- `bench`: `boltzformer bench --decoder-only` at 1024², every attention mode.

On a CPU the same code runs at `tiny` sizes (the `tiny` preset, 128², 2 steps) so that CI
keeps it working; the torchrun check is skipped there: tests/test_ddp.py already trains two
gloo processes under torchrun.

The JSON holds the device, the torch, CUDA, cuDNN and NCCL versions, and per check its
status ("ok", "failed" or "skipped"), seconds, peak GPU memory (null on a CPU), its figures
(losses, times, differences) and, when it failed, its one-line error. The command exits 1
when any check failed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from boltzformer.apps.bench import BenchSettings, run_benchmark
from boltzformer.data.phantoms import generate_phantoms, make_phantom
from boltzformer.inference.predictor import Predictor
from boltzformer.modeling.boltzformer import build_model
from boltzformer.train import TrainConfig, train

#: the dtypes the predictor check compares with float32
DTYPES: tuple[str, ...] = ("bfloat16", "float16")
#: largest mean |p - p_float32| of a dtype's probabilities the predictor check accepts (the
#: `tiny` model measured 4e-4 in bfloat16, tests/test_dtype.py)
MEAN_DIFF_LIMIT = 0.01
PROMPTS: tuple[str, ...] = ("lung", "heart", "nodule in lung CT")


@dataclass(frozen=True)
class CheckSettings:
    """What the checks run: `preset` at `size`² for `steps` training steps, on phantoms of
    `data_size`² (the data set resizes them); `gpus` processes under torchrun (0: skipped);
    the bench's `repeats` after `warmup`."""

    device: str
    preset: str
    size: int
    steps: int
    gpus: int
    data_size: int
    repeats: int
    warmup: int
    images: int = 5
    batch_size: int = 2

    @classmethod
    def for_device(cls, device: torch.device) -> CheckSettings:
        """The paper's sizes on CUDA, the `tiny` ones on a CPU."""
        if device.type == "cuda":
            return cls(str(device), "paper-hiera-s", 1024, 3, torch.cuda.device_count(), 256,
                       repeats=3, warmup=1)
        return cls(str(device), "tiny", 128, 2, 0, 128, repeats=1, warmup=0)


@dataclass
class Context:
    """The settings, the device and a work folder the checks share (the phantoms are
    written on first use)."""

    settings: CheckSettings
    device: torch.device
    work: Path
    _data: Path | None = field(default=None, repr=False)

    def data(self) -> Path:
        if self._data is None:
            s = self.settings
            # 80 / 20 split by image: enough training images for `steps` batches
            images = max(s.images, math.ceil(s.steps * s.batch_size / 0.8) + 1)
            self._data = self.work / "phantoms"
            generate_phantoms(self._data, images=images, size=s.data_size, seed=0,
                              test_fraction=0.2, workers=1)
        return self._data

    def train_config(self, preset: str, size: int, device: str) -> dict[str, Any]:
        """A training config of `steps` steps under bf16 autocast on the phantoms."""
        s = self.settings
        return {
            "model": {"preset": preset, "image_size": size},
            "data": {"root": str(self.data()), "workers": 0},
            "optim": {"warmup_steps": 1},
            "train": {"batch_size": s.batch_size, "prompts_per_image": 2, "epochs": s.steps,
                      "max_steps": s.steps, "log_every": 1, "checkpoint_every": s.steps,
                      "amp": "bf16", "device": device, "seed": 0},
        }


def check_train(ctx: Context) -> dict[str, Any]:
    """`train` of the preset at its size for a few bf16 steps; every loss must be finite."""
    s = ctx.settings
    cfg = TrainConfig.from_dict(ctx.train_config(s.preset, s.size, ctx.device.type))
    result = train(cfg, ctx.work / "run", progress=False)
    losses = _losses(ctx.work / "run")
    details = {"preset": s.preset, "image_size": s.size, "steps": result.metrics["step"],
               "amp": result.metrics["amp"], "losses": losses,
               "pairs_per_s": result.metrics["pairs_per_s"]}
    return _finite(details, losses, f"{s.steps} training steps")


def check_torchrun(ctx: Context) -> dict[str, Any]:
    """`tiny` under torchrun, one process per GPU, a few steps; skipped without GPUs."""
    s = ctx.settings
    if s.gpus == 0:
        return {"status": "skipped", "reason": "no GPU: tests/test_ddp.py trains two gloo "
                "processes under torchrun on the CPU"}
    config, run = ctx.work / "torchrun.yaml", ctx.work / "torchrun_run"
    config.write_text(yaml.safe_dump(ctx.train_config("tiny", 256, "cuda")))
    source = str(Path(__file__).resolve().parents[2])  # the folder holding boltzformer/
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node", str(s.gpus), "-m", "boltzformer", "train", "--config",
         str(config), "--out", str(run), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise RuntimeError(f"torchrun exited with {proc.returncode}: "
                           f"{lines[-1] if lines else 'no output'}")
    losses = _losses(run)
    end = [r for r in _records(run) if r.get("kind") == "end"]
    world = end[-1]["world_size"] if end else None
    details = {"processes": s.gpus, "world_size": world, "losses": losses,
               "backend": "nccl" if s.gpus > 1 else "none (one process)"}
    return _finite(details, losses, "torchrun steps")


def check_predictor(ctx: Context) -> dict[str, Any]:
    """`Predictor` in float32 and each of `DTYPES` on one phantom, the same seed: time, peak
    memory, and each dtype's mean and max |p - p_float32|."""
    s = ctx.settings
    torch.manual_seed(0)
    model = build_model(s.preset, image_size=s.size)
    image = make_phantom(0, size=s.data_size).image
    results: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for dtype in ("float32", *DTYPES):
        _reset_peak(ctx.device)
        start = time.perf_counter()
        predictor = Predictor(copy.deepcopy(model), device=ctx.device, seed=0, dtype=dtype)
        predictor.set_image(image)
        prob = predictor.predict(list(PROMPTS)).prob
        row: dict[str, Any] = {"seconds": time.perf_counter() - start,
                               "peak_memory_mb": _peak_mb(ctx.device),
                               "output_dtype": str(prob.dtype)}
        if reference is None:
            reference = prob
        else:
            diff = np.abs(prob - reference)
            row.update(mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()))
        results[dtype] = row
        del predictor
    details: dict[str, Any] = {"preset": s.preset, "image_size": s.size, "dtypes": results,
                               "mean_abs_diff_limit": MEAN_DIFF_LIMIT}
    bad = [d for d in DTYPES if not results[d]["mean_abs_diff"] <= MEAN_DIFF_LIMIT]
    if bad:
        details.update(status="failed", error=f"{', '.join(bad)} probabilities differ from "
                       f"float32's by more than {MEAN_DIFF_LIMIT} on average")
    return details


def check_bench(ctx: Context) -> dict[str, Any]:
    """`bench --decoder-only` at the check's size, every attention mode."""
    s = ctx.settings
    result = run_benchmark(BenchSettings(preset=s.preset, sizes=(s.size,), parts=("decoder",),
                                         repeats=s.repeats, warmup=s.warmup,
                                         device=s.device))
    modes = {r["mode"]: {"forward_seconds": r["forward_seconds"],
                         "forward_backward_seconds": r["forward_backward_seconds"],
                         "peak_memory_bytes": r.get("peak_memory_bytes")}
             for r in result["results"]}
    return {"preset": s.preset, "size": s.size, "modes": modes,
            "agreement": result["agreement"]}


#: the checks, in the order they run
CHECKS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "train": check_train,
    "torchrun": check_torchrun,
    "predictor": check_predictor,
    "bench": check_bench,
}


def run_checks(settings: CheckSettings, names: tuple[str, ...], work: Path) -> dict[str, Any]:
    """Run the checks `names` (of `CHECKS`) in `work`; the report's JSON-ready dict."""
    device = torch.device(settings.device)
    ctx = Context(settings, device, work)
    report = {**environment(device), "settings": asdict(settings), "checks": {}}
    for name in names:
        report["checks"][name] = _run_one(CHECKS[name], ctx)
    report["ok"] = all(c["status"] != "failed" for c in report["checks"].values())
    return report


def environment(device: torch.device) -> dict[str, Any]:
    """The device and the versions the checks ran with."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _run_one(check: Callable[[Context], dict[str, Any]], ctx: Context) -> dict[str, Any]:
    """One check's record: its status, seconds, peak GPU memory and figures; an exception
    is recorded as a failure with its one-line error, so the other checks still run."""
    _reset_peak(ctx.device)
    start = time.perf_counter()
    try:
        details = check(ctx)
    except Exception as err:  # any failure is the finding: recorded, not raised
        details = {"status": "failed", "error": one_line(err)}
    return {"status": details.pop("status", "ok"), "seconds": time.perf_counter() - start,
            "peak_memory_mb": _peak_mb(ctx.device), **details}


def one_line(err: BaseException) -> str:
    """`err` as one line: its type and the first line of its message."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _finite(details: dict[str, Any], losses: list[float], what: str) -> dict[str, Any]:
    if not losses:
        return {**details, "status": "failed", "error": f"{what} recorded no loss"}
    if not all(math.isfinite(v) for v in losses):
        return {**details, "status": "failed", "error": f"{what}: a loss is not finite"}
    return details


def _records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _losses(run: Path) -> list[float]:
    """The loss of every training record of a run folder (log_every 1: every step)."""
    return [r["loss"] for r in _records(run) if r.get("kind") == "train"]


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    """Peak GPU memory allocated since the last reset, in MiB; None on a CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m boltzformer.apps.gpu_check",
        description="Run the CUDA paths once (training paper-hiera-s at 1024² in bf16, tiny "
        "under torchrun with NCCL, the Predictor in bf16 and fp16, bench --decoder-only at "
        "1024²) and write what happened to one JSON file; on a CPU the same code at tiny "
        "sizes. Exits 1 when a check failed.")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), metavar="JSON",
                        help="the report (default gpu_check.json)")
    parser.add_argument("--device", default="auto",
                        help="auto (default: cuda when available), cpu, cuda or cuda:N")
    parser.add_argument("--checks", default=",".join(CHECKS), metavar="NAMES",
                        help=f"comma-separated checks to run (default all: "
                        f"{','.join(CHECKS)})")
    args = parser.parse_args(argv)
    names = tuple(n.strip() for n in args.checks.split(",") if n.strip())
    if not names or any(n not in CHECKS for n in names):
        parser.error(f"--checks: choose from {', '.join(CHECKS)}")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    with tempfile.TemporaryDirectory(prefix="boltzformer-gpu-check-") as tmp:
        report = run_checks(CheckSettings.for_device(device), names, Path(tmp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, check in report["checks"].items():
        note = check.get("error") or check.get("reason") or ""
        print(f"{name:10s} {check['status']:8s} {check['seconds']:7.1f} s  {note}".rstrip())
    print(f"{'all checks passed' if report['ok'] else 'a check failed'}; wrote {args.out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
