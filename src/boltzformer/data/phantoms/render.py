"""Rendering a painted scene into pixels: contrast, texture, blur, noise and display window."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from .scene import Scene
from .tables import Contrast, Tissue


def _unit_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(S, S) Gaussian noise smoothed by `sigma` pixels, rescaled to unit standard deviation."""
    field_ = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma)
    return field_ / max(float(field_.std()), 1e-6)


def render(
    scene: Scene, rng: np.random.Generator, contrast: Contrast, window: tuple[float, float] | None
) -> np.ndarray:
    """(S, S) uint8 image of a scene: CT through `window` (width, level) or MRI if None."""
    size = scene.canvas.size
    scale = size / 256
    unit = window[0] if window is not None else 1.0
    values = np.array([contrast.values[t] for t in Tissue], dtype=np.float32)
    texture = np.array([contrast.texture[t] for t in Tissue], dtype=np.float32)
    if window is not None:  # per-image contrast variation; air stays air
        values[1:] += rng.normal(0.0, 0.015 * unit, len(values) - 1).astype(np.float32)
    else:
        values *= np.clip(rng.normal(1.0, 0.08, len(values)), 0.7, 1.3).astype(np.float32)
    grain = 0.8 * _unit_noise(rng, size, 1.0 * scale) + 0.6 * _unit_noise(rng, size, 3.5 * scale)
    image = values[scene.tissue] + unit * (scene.offset + texture[scene.tissue] * grain)
    image = gaussian_filter(image, 0.55 * scale)
    if window is not None:
        image += unit * rng.uniform(0.012, 0.035) * _unit_noise(rng, size, 0.6 * scale)
        width, level = window
        shown = (image - (level - width / 2)) / width
    else:
        c = scene.canvas
        a = rng.uniform(-0.15, 0.15, 4).astype(np.float32)
        bias = 1 + a[0] * c.x + a[1] * c.y + a[2] * c.x * c.y + a[3] * (c.x**2 + c.y**2)
        image = np.clip(image, 0.0, None) * np.clip(bias, 0.6, 1.4)
        sigma = rng.uniform(0.015, 0.035)
        real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.sqrt(real * real + imag * imag)  # Rician magnitude noise
        shown = image / max(float(np.percentile(image, 99.7)), 1e-6)
    return (np.clip(shown, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
