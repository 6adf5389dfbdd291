"""`boltzformer presets`: list the model presets, their sizes and (optionally) CPU speed."""

from __future__ import annotations

import argparse
import time

import torch

from boltzformer.modeling.boltzformer import build_model
from boltzformer.modeling.config import PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "presets",
        help="list model presets with parameter counts (and measured forward time)",
        description="List the model presets. With --time, build each one with random weights "
        "and measure the median forward time of one image on this machine.",
        epilog="example: boltzformer presets --time --threads 2",
    )
    p.add_argument("--time", action="store_true", help="measure forward time (slow for the "
                   "paper presets on a CPU)")
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    header = "| preset | backbone | input | queries | layers | hidden | parameters (M) |"
    if args.time:
        header += f" forward, 1 image, {args.device} (s) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, cfg in PRESETS.items():
        torch.manual_seed(0)
        model = build_model(name).eval().to(args.device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = (f"| {name} | {cfg.backbone} | {cfg.image_size}² | {cfg.num_queries} | "
               f"{cfg.num_layers} | {cfg.hidden_dim} | {params:.1f} |")
        if args.time:
            row += f" {_forward_seconds(model, cfg.image_size, args.repeats, args.device):.2f} |"
        print(row, flush=True)
    return 0


@torch.no_grad()
def _forward_seconds(model: torch.nn.Module, size: int, repeats: int, device: str) -> float:
    x = torch.rand(1, 3, size, size, device=device) * 255
    prompts = ["nodule in lung CT"]
    model(x, prompts)  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        model(x, prompts)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]
