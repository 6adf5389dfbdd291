"""Shapes on a pixel grid in normalised coordinates [-1, 1]: blobs, tubes, curves, points."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]


class Canvas:
    """Boolean shapes on an S x S grid of normalised coordinates, computed in bounding boxes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.px = 2.0 / size  # one pixel in normalised units
        centres = ((np.arange(size, dtype=np.float32) + 0.5) * self.px - 1.0).astype(np.float32)
        self.x = centres[None, :]
        self.y = centres[:, None]

    def _box(self, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice] | None:
        s = self.size
        c0, c1 = max(int((x0 + 1) / self.px), 0), min(int((x1 + 1) / self.px) + 2, s)
        r0, r1 = max(int((y0 + 1) / self.px), 0), min(int((y1 + 1) / self.px) + 2, s)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def blob(
        self,
        cx: float,
        cy: float,
        rx: float,
        ry: float,
        angle: float = 0.0,
        wobble: np.ndarray | None = None,
    ) -> np.ndarray:
        """(S, S) bool: an ellipse whose radius varies as 1 + sum a_k cos(k theta + phi_k).

        `wobble`: (K, 3) rows of (k, a_k, phi_k) or None.
        """
        out = np.zeros((self.size, self.size), dtype=bool)
        grow = 1.0 + (0.0 if wobble is None else float(np.abs(wobble[:, 1]).sum()))
        reach = max(rx, ry) * grow + self.px
        box = self._box(cx - reach, cx + reach, cy - reach, cy + reach)
        if box is None:
            return out
        rows, cols = box
        dx = self.x[:, cols] - np.float32(cx)
        dy = self.y[rows, :] - np.float32(cy)
        ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        u = (dx * ca + dy * sa) / np.float32(rx)
        v = (dy * ca - dx * sa) / np.float32(ry)
        rho2 = u * u + v * v
        if wobble is None:
            out[rows, cols] = rho2 < 1.0
        else:
            theta = np.arctan2(v, u)
            limit = np.ones_like(theta)
            for k, amp, phase in wobble:
                limit += np.float32(amp) * np.cos(np.float32(k) * theta + np.float32(phase))
            out[rows, cols] = rho2 < limit * limit
        return out

    def tube(self, points: np.ndarray, half_widths: npt.ArrayLike) -> np.ndarray:
        """(S, S) bool: a polyline (N, 2) thickened by half-widths given per vertex."""
        pts = np.asarray(points, dtype=np.float32)
        widths = np.broadcast_to(np.asarray(half_widths, dtype=np.float32), (len(pts),))
        out = np.zeros((self.size, self.size), dtype=bool)
        segments = zip(pts[:-1], pts[1:], widths[:-1], widths[1:], strict=True)
        for (x0, y0), (x1, y1), w0, w1 in segments:
            reach = max(w0, w1) + self.px
            box = self._box(
                min(x0, x1) - reach, max(x0, x1) + reach, min(y0, y1) - reach, max(y0, y1) + reach
            )
            if box is None:
                continue
            rows, cols = box
            dx = self.x[:, cols] - x0
            dy = self.y[rows, :] - y0
            sx, sy = x1 - x0, y1 - y0
            t = np.clip((dx * sx + dy * sy) / max(sx * sx + sy * sy, 1e-12), 0.0, 1.0)
            ex, ey = dx - t * sx, dy - t * sy
            w = w0 + t * (w1 - w0)
            out[rows, cols] |= ex * ex + ey * ey < w * w
        return out

    def points_in(self, rng: np.random.Generator, region: np.ndarray, n: int) -> np.ndarray:
        """(n, 2) random points (x, y) inside a region (empty array if the region is empty)."""
        flat = np.flatnonzero(region)
        if flat.size == 0:
            return np.zeros((0, 2), dtype=np.float32)
        pick = flat[rng.integers(0, flat.size, n)]
        jitter = rng.uniform(0.0, 1.0, (n, 2))
        cols, rows = pick % self.size, pick // self.size
        return np.stack([cols + jitter[:, 0], rows + jitter[:, 1]], 1) * self.px - 1.0


def random_wobble(rng: np.random.Generator, kmin: int, kmax: int, amp: float) -> np.ndarray:
    """(K, 3) random radial harmonics for `Canvas.blob`, amplitude falling with k."""
    ks = np.arange(kmin, kmax + 1, dtype=np.float32)
    amps = amp * rng.uniform(0.2, 1.0, ks.size) / np.sqrt(ks / kmin)
    return np.stack([ks, amps, rng.uniform(0, 2 * np.pi, ks.size)], 1)


def curve(rng: np.random.Generator, p0: Point, p1: Point, bend: float, n: int) -> np.ndarray:
    """(n, 2) points of a quadratic Bezier from p0 to p1, bowed sideways by up to `bend`."""
    a, b = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    control = (a + b) / 2 + normal * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b


def centroid(c: Canvas, shape: np.ndarray) -> Point:
    rows, cols = np.nonzero(shape)
    return float((cols.mean() + 0.5) * c.px - 1), float((rows.mean() + 0.5) * c.px - 1)
