"""Sine positional encoding of a 2D token grid (as in DETR and Mask2Former)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sine_position_encoding(
    height: int, width: int, dim: int, *, device: torch.device | None = None,
    temperature: float = 10000.0,
) -> Tensor:
    """Return (height * width, dim) fixed encodings, half for y and half for x, row-major."""
    if dim % 4:
        raise ValueError(f"positional encoding dim must be divisible by 4, got {dim}")
    half = dim // 2
    scale = 2 * math.pi
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * scale
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * scale
    freq = temperature ** (2 * (torch.arange(half // 2, device=device) ) / half)
    py = y[:, None] / freq  # (h, half/2)
    px = x[:, None] / freq  # (w, half/2)
    py = torch.cat([py.sin(), py.cos()], dim=-1)  # (h, half)
    px = torch.cat([px.sin(), px.cos()], dim=-1)  # (w, half)
    pos = torch.cat(
        [py[:, None, :].expand(height, width, half), px[None, :, :].expand(height, width, half)],
        dim=-1,
    )
    return pos.reshape(height * width, dim)
