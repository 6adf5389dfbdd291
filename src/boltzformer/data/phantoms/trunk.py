"""Anatomy both sites share: body wall and cavity, vertebra with paraspinal muscles, ribs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .geometry import random_wobble
from .scene import Scene
from .tables import Tissue


@dataclass(frozen=True)
class Body:
    """The body (S, S) mask and its inner cavity: centre y `cy`, radii, posterior edge `back`."""

    body: np.ndarray
    cavity: np.ndarray
    cy: float
    cavity_rx: float
    cavity_ry: float

    @property
    def back(self) -> float:
        return self.cy + self.cavity_ry


def draw_body(scene: Scene, rng: np.random.Generator) -> Body:
    """Body outline, subcutaneous fat, muscle wall (thick at the back) and the fat-filled cavity."""
    c = scene.canvas
    rx, ry, cy = rng.uniform(0.8, 0.93), rng.uniform(0.6, 0.72), rng.uniform(-0.02, 0.06)
    wob = random_wobble(rng, 2, 5, 0.03)
    body = c.blob(0, cy, rx, ry, 0, wob)
    scene.paint(body, Tissue.FAT)
    fat = rng.uniform(0.03, 0.1)
    scene.paint(c.blob(0, cy, rx - fat, ry - 0.8 * fat, 0, wob), Tissue.MUSCLE)
    wall, back = rng.uniform(0.035, 0.06), rng.uniform(0.05, 0.08)
    crx, cry = rx - fat - wall, ry - 0.8 * fat - wall - back
    cavity = c.blob(0, cy - back, crx, cry, 0, wob)
    scene.paint(cavity, Tissue.FAT)
    return Body(body, cavity, cy - back, crx, cry)


def vertebra(scene: Scene, rng: np.random.Generator, body: Body) -> tuple[float, float]:
    """Vertebra bulging into the cavity's back, with canal, arch and paraspinal muscles.

    Returns (centre y, radius) of the vertebral body.
    """
    c = scene.canvas
    r = rng.uniform(0.075, 0.1)
    vy = body.back - rng.uniform(0.45, 0.65) * r
    for side in (-1, 1):
        muscle = c.blob(side * 0.15, vy + r + 0.06, 0.1, 0.075, side * 0.3)
        scene.paint(muscle, Tissue.MUSCLE, where=body.body)
    scene.paint(c.blob(0, vy + r + 0.04, 0.06, 0.055), Tissue.BONE, where=body.body)
    scene.paint(c.blob(0, vy + r + 0.1, 0.018, 0.06), Tissue.BONE, where=body.body)
    scene.paint(c.blob(0, vy + r + 0.035, 0.032, 0.03), Tissue.FLUID)
    scene.paint(c.blob(0, vy, r, r * 0.92), Tissue.BONE)
    scene.paint(c.blob(0, vy, r - 0.012, r * 0.92 - 0.012), Tissue.MARROW)
    return vy, r


def ribs(scene: Scene, rng: np.random.Generator, body: Body, angles: Iterable[float]) -> None:
    """Rib cross-sections just outside the cavity at the given angles (radians)."""
    c = scene.canvas
    for theta in angles:
        cx = (body.cavity_rx + 0.03) * np.cos(theta)
        cy = body.cy + (body.cavity_ry + 0.03) * np.sin(theta)
        tangent = theta + np.pi / 2
        rx, ry = rng.uniform(0.025, 0.04), rng.uniform(0.012, 0.018)
        scene.paint(c.blob(cx, cy, rx, ry, tangent), Tissue.BONE, where=body.body)
        scene.paint(c.blob(cx, cy, rx * 0.6, ry * 0.45, tangent), Tissue.MARROW, where=body.body)
