"""`boltzformer presets`: the model presets' sizes and, optionally, their forward time."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from boltzformer.modeling.boltzformer import build_model
from boltzformer.modeling.config import PRESETS


def preset_rows(*, timed: bool = False, repeats: int = 3, threads: int | None = None,
                device: str = "cpu") -> Iterator[str]:
    """The Markdown table of the presets, a line at a time (each preset built with random
    weights; with `timed`, its median forward time of one image over `repeats`, with
    `threads` torch threads)."""
    if threads:
        torch.set_num_threads(threads)
    header = "| preset | backbone | input | queries | layers | hidden | parameters (M) |"
    if timed:
        header += f" forward, 1 image, {device} (s) |"
    yield header
    yield "|" + "---|" * (header.count("|") - 1)
    for name, cfg in PRESETS.items():
        torch.manual_seed(0)
        model = build_model(name).eval().to(device)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = (f"| {name} | {cfg.backbone} | {cfg.image_size}² | {cfg.num_queries} | "
               f"{cfg.num_layers} | {cfg.hidden_dim} | {params:.1f} |")
        if timed:
            row += f" {forward_seconds(model, cfg.image_size, repeats, device):.2f} |"
        yield row


@torch.no_grad()
def forward_seconds(model: torch.nn.Module, size: int, repeats: int, device: str) -> float:
    """Median seconds of one forward pass on a random size x size image, one prompt."""
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
