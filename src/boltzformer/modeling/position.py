"""Sine positional encoding of a 2D token grid: DETR's and Mask2Former's, as the authors'
release uses it for the decoder's keys and the pixel decoder's encoder.

A token in row i, column j of an (h, w) grid has the normalised positions
y = (i + 1) / (h + 1e-6) * 2 pi and x = (j + 1) / (w + 1e-6) * 2 pi; with d/2 features per
axis and frequencies f_k = T^(2k / (d/2)), the y half is [sin(y/f_0), cos(y/f_0), sin(y/f_1),
cos(y/f_1), ...] (sine and cosine interleaved per frequency pair), then the x half alike.

The encoding is separable: the first half of a token's vector depends only on its row, the
second half only on its column. `GridPositions` keeps the two halves apart, so a dot product
with the encoding of any token costs two table look-ups instead of a d-vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class GridPositions:
    """Positional encoding of an (h, w) grid stored as pos[y * w + x] = [rows[y], cols[x]].

    rows: (h, d_r); cols: (w, d - d_r). Holds no gradient (a fixed encoding).
    """

    rows: Tensor
    cols: Tensor

    @property
    def dim(self) -> int:
        return self.rows.shape[1] + self.cols.shape[1]

    @property
    def num_tokens(self) -> int:
        return self.rows.shape[0] * self.cols.shape[0]

    def to(self, dtype: torch.dtype) -> GridPositions:
        return GridPositions(self.rows.to(dtype), self.cols.to(dtype))

    def dense(self) -> Tensor:
        """The full (h * w, d) encoding, row-major."""
        h, w = self.rows.shape[0], self.cols.shape[0]
        return torch.cat(
            [self.rows[:, None, :].expand(h, w, -1), self.cols[None, :, :].expand(h, w, -1)],
            dim=-1,
        ).reshape(h * w, self.dim)

    def dot(self, vectors: Tensor, tokens: Tensor) -> Tensor:
        """vectors (R, k, d), tokens (R, K) flat grid indices -> (R, k, K) vector . pos[token].

        Exact and O(R k (h + w) d + R k K): each vector is dotted with the h row and w column
        halves once, then the pairs are looked up.
        """
        split = self.rows.shape[1]
        w = self.cols.shape[0]
        by_row = vectors[..., :split] @ self.rows.T  # (R, k, h)
        by_col = vectors[..., split:] @ self.cols.T  # (R, k, w)
        k = vectors.shape[1]
        row_of = (tokens // w)[:, None, :].expand(-1, k, -1)
        col_of = (tokens % w)[:, None, :].expand(-1, k, -1)
        return by_row.gather(2, row_of) + by_col.gather(2, col_of)


def sine_positions(
    height: int, width: int, dim: int, *, device: torch.device | None = None,
    temperature: float = 10000.0,
) -> GridPositions:
    """The sine encoding of a (height, width) grid, half of `dim` for y and half for x."""
    if dim % 4:
        raise ValueError(f"positional encoding dim must be divisible by 4, got {dim}")
    half = dim // 2
    freq = temperature ** (2 * torch.arange(half // 2, device=device) / half)  # (half/2,)
    return GridPositions(rows=_axis(height, freq), cols=_axis(width, freq))


def _axis(size: int, freq: Tensor) -> Tensor:
    """(size, 2 * len(freq)): [sin(a/f_0), cos(a/f_0), sin(a/f_1), ...] at the cumulative
    positions a = (i + 1) / (size + 1e-6) * 2 pi, in float32 as DETR computes them."""
    a = torch.arange(1, size + 1, device=freq.device, dtype=torch.float32)
    a = a / (size + 1e-6) * (2 * math.pi)
    angle = a[:, None] / freq  # (size, half/2)
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)


def sine_position_encoding(
    height: int, width: int, dim: int, *, device: torch.device | None = None,
    temperature: float = 10000.0,
) -> Tensor:
    """Return (height * width, dim) fixed encodings, half for y and half for x, row-major."""
    return sine_positions(height, width, dim, device=device, temperature=temperature).dense()
