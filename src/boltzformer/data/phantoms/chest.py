"""Chest CT anatomy: lungs with vessels, mediastinum, heart or trachea, and nodules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .geometry import Point, centroid, curve, random_wobble
from .scene import Scene, place
from .tables import Tissue
from .trunk import draw_body, ribs, vertebra


@dataclass(frozen=True)
class _Nodule:
    shape: np.ndarray
    centre: Point
    radius: float
    kind: str  # "solid", "spiculated" or "ground-glass"


def _nodule(scene: Scene, rng: np.random.Generator, lungs: np.ndarray) -> _Nodule | None:
    """Place one nodule in the lungs: radius log-uniform in [0.008, 0.062] (at least a pixel)."""
    c = scene.canvas
    r = float(np.exp(rng.uniform(np.log(max(0.008, 1.05 * c.px)), np.log(0.062))))
    kind = str(rng.choice(["solid", "spiculated", "ground-glass"], p=[0.65, 0.15, 0.2]))
    aspect, angle = rng.uniform(0.8, 1.2), rng.uniform(0, np.pi)
    wob = random_wobble(rng, 3, 7, rng.uniform(0.04, 0.14))
    juxtapleural = rng.random() < 0.15
    shape = place(
        scene, rng, lungs, r * aspect, r / aspect, angle, wob, inside=0.55 if juxtapleural else 1.0
    )
    if shape is None:
        return None
    return _Nodule(shape, centroid(c, shape), r, kind)


def _paint_nodule(
    scene: Scene, rng: np.random.Generator, nodule: _Nodule, lungs: np.ndarray, lung: str
) -> None:
    """Paint a nodule as soft tissue (the vessels' density), ground glass or with spicules."""
    c = scene.canvas
    common: dict[str, Any] = {"label": "nodule", "part_of": lung, "where": lungs}
    offset = rng.normal(0.0, 0.015)
    if nodule.kind == "ground-glass":
        scene.paint(nodule.shape, Tissue.GGO, offset=rng.normal(0.0, 0.03), **common)
        if rng.random() < 0.6:
            core_r = nodule.radius * rng.uniform(0.3, 0.6)
            core = c.blob(*nodule.centre, core_r, core_r) & nodule.shape
            scene.paint(core, Tissue.SOFT, offset=offset, **common)
        return
    scene.paint(nodule.shape, Tissue.SOFT, offset=offset, **common)
    if nodule.kind == "spiculated":
        x, y = nodule.centre
        for theta in rng.uniform(0, 2 * np.pi, rng.integers(4, 10)):
            length = nodule.radius * rng.uniform(1.4, 2.3)
            tip = (x + length * np.cos(theta), y + length * np.sin(theta))
            widths = [max(0.3 * nodule.radius, 0.55 * c.px), 0.2 * c.px]
            scene.paint(
                c.tube(np.array([nodule.centre, tip]), widths), Tissue.SOFT, offset=offset, **common
            )


def _lung_vessels(
    scene: Scene,
    rng: np.random.Generator,
    lung: np.ndarray,
    name: str,
    hilum: Point,
    nodules: list[_Nodule],
) -> None:
    """Branching vessels from the hilum and round vessel cross-sections, like nodules."""
    c = scene.canvas
    common: dict[str, Any] = {"label": "lung vessel", "part_of": name, "where": lung}
    thin = max(0.004, 0.45 * c.px)
    for target in c.points_in(rng, lung, int(rng.integers(5, 9))):
        path = curve(rng, hilum, (float(target[0]), float(target[1])), 0.12, 5)
        widths = np.linspace(rng.uniform(0.01, 0.018), thin, len(path))
        scene.paint(c.tube(path, widths), Tissue.SOFT, offset=rng.normal(0, 0.015), **common)
        for k in rng.choice([1, 2, 3], size=int(rng.integers(1, 3)), replace=False):
            step = path[k + 1] - path[k]
            turn = np.arctan2(step[1], step[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
            length = rng.uniform(0.08, 0.25)
            end = (path[k][0] + length * np.cos(turn), path[k][1] + length * np.sin(turn))
            twig = curve(rng, (float(path[k][0]), float(path[k][1])), end, 0.04, 3)
            scene.paint(
                c.tube(twig, np.linspace(widths[k] * 0.7, thin, 3)),
                Tissue.SOFT,
                offset=rng.normal(0, 0.015),
                **common,
            )
    dots = c.points_in(rng, lung, int(rng.integers(20, 46)))
    dist = np.hypot(dots[:, 0] - hilum[0], dots[:, 1] - hilum[1])
    radii = np.maximum(
        rng.uniform(0.005, 0.011, len(dots)) + 0.014 * np.exp(-dist / 0.3), 0.6 * c.px
    )
    for (x, y), r in zip(dots, radii, strict=True):
        if any(
            np.hypot(x - n.centre[0], y - n.centre[1]) < r + 2.5 * n.radius + 2 * c.px
            for n in nodules
        ):
            continue
        aspect = float(np.exp(rng.normal(0.0, 0.25)))
        blob = c.blob(float(x), float(y), r * aspect, r / aspect, rng.uniform(0, np.pi))
        scene.paint(blob, Tissue.SOFT, offset=rng.normal(0, 0.015), **common)


def draw_chest(scene: Scene, rng: np.random.Generator, absent: str | None) -> list[str]:
    """Paint a chest slice (upper level with trachea or lower with heart); returns targets."""
    c = scene.canvas
    body = draw_body(scene, rng)
    cy, cry = body.cy, body.cavity_ry
    vy, r_v = vertebra(scene, rng, body)
    upper = rng.random() < 0.4
    mid = rng.uniform(-0.02, 0.05)
    width = rng.uniform(0.1, 0.15) if upper else rng.uniform(0.12, 0.18)
    blocked = c.blob(
        mid, cy - 0.05, width, cry * 0.95, rng.uniform(-0.1, 0.1), random_wobble(rng, 2, 4, 0.06)
    )
    blocked |= c.blob(0.03, vy - 0.1, rng.uniform(0.12, 0.16), 0.09)  # posterior mediastinum
    blocked |= c.blob(0.0, vy + 0.02, 0.15, 0.13)  # spine and paravertebral gutters
    heart = None
    if not upper:
        hx, hy = mid + rng.uniform(0.06, 0.14), cy - rng.uniform(0.02, 0.12)
        hrx, hry, tilt = rng.uniform(0.24, 0.32), rng.uniform(0.2, 0.27), rng.uniform(-0.6, -0.2)
        hwob = random_wobble(rng, 2, 4, 0.04)
        heart = c.blob(hx, hy, hrx, hry, tilt, hwob)
        pericardium = c.blob(hx, hy, hrx + 0.03, hry + 0.03, tilt, hwob)
        blocked |= pericardium
    lungs = body.cavity & ~blocked
    gradient = np.broadcast_to((c.y - np.float32(cy)) * np.float32(0.03), lungs.shape)
    right, left = lungs & (c.x < mid), lungs & (c.x >= mid)
    scene.paint(right, Tissue.LUNG, "right lung", offset=gradient)
    scene.paint(left, Tissue.LUNG, "left lung", offset=gradient)

    angles = rng.uniform(-0.4 * np.pi, 1.4 * np.pi, int(rng.integers(8, 13)))
    keep = np.abs(angles - 0.5 * np.pi) > 0.18 * np.pi  # not over the spine
    keep &= np.abs(np.abs(angles - 0.5 * np.pi) - np.pi) > 0.2 * np.pi  # nor the sternum
    ribs(scene, rng, body, angles[keep])
    scene.paint(c.blob(mid * 0.5, cy - cry - 0.015, 0.05, 0.022), Tissue.BONE)  # sternum
    if heart is not None:
        scene.paint(pericardium, Tissue.FAT)
        scene.paint(heart, Tissue.MYOCARDIUM, "heart")
        for _ in range(2):
            radii = rng.uniform(0.07, 0.11), rng.uniform(0.06, 0.09)
            chamber = place(scene, rng, heart, *radii, rng.uniform(0, np.pi))
            if chamber is not None:
                scene.paint(chamber, Tissue.BLOOD, "heart")
    aortas = []
    if upper:
        ax, ay, ar = mid - 0.05, cy - rng.uniform(0.02, 0.1), rng.uniform(0.06, 0.085)
        aortas.append(c.blob(ax, ay, ar, ar * rng.uniform(0.9, 1.0)))
        svc_r = rng.uniform(0.035, 0.045)
        scene.paint(c.blob(ax - ar - svc_r - 0.01, ay - 0.02, svc_r, svc_r), Tissue.BLOOD)
    dx, dr = rng.uniform(0.09, 0.14), rng.uniform(0.04, 0.055)
    dy = vy - r_v * 0.6 - rng.uniform(0.02, 0.05)
    aortas.append(c.blob(dx, dy, dr, dr * rng.uniform(0.9, 1.0)))
    for aorta in aortas:
        scene.paint(aorta, Tissue.BLOOD, "aorta")
    if upper:
        tr = rng.uniform(0.05, 0.07)
        tx, ty = mid * 0.3, vy - r_v - rng.uniform(0.13, 0.18)
        scene.paint(c.blob(tx, ty, tr, tr * 0.9), Tissue.SOFT, "trachea")
        scene.paint(c.blob(tx, ty, tr - 0.012, tr * 0.9 - 0.012), Tissue.AIR, "trachea")
    erx, ery = rng.uniform(0.025, 0.035), rng.uniform(0.018, 0.026)
    ex, ey = dx - dr - erx - rng.uniform(0.005, 0.02), dy - rng.uniform(0.0, 0.04)
    scene.paint(c.blob(ex, ey, erx, ery, rng.uniform(-0.3, 0.3)), Tissue.SOFT, "esophagus")
    if rng.random() < 0.4:
        scene.paint(c.blob(ex, ey, 0.3 * erx, 0.3 * ery), Tissue.AIR, "esophagus")
    azygos_r = rng.uniform(0.012, 0.018)
    scene.paint(
        c.blob(ex - rng.uniform(0.04, 0.06), vy - r_v * 0.5, azygos_r, azygos_r), Tissue.BLOOD
    )

    lungs = scene.mask("right lung") | scene.mask("left lung")
    nodules = []
    if absent != "nodule":
        for _ in range(1 if rng.random() < 0.85 else 2):
            nodule = _nodule(scene, rng, lungs)
            if nodule is not None:
                nodules.append(nodule)
    for name, lung, side in (("right lung", right, -1), ("left lung", left, 1)):
        hilum = (mid + side * rng.uniform(0.12, 0.18), cy + rng.uniform(-0.05, 0.05))
        _lung_vessels(scene, rng, lung & lungs, name, hilum, nodules)
    for nodule in nodules:
        name = "right lung" if nodule.centre[0] < mid else "left lung"
        _paint_nodule(scene, rng, nodule, lungs, name)
    found = ["right lung", "left lung", "aorta", "esophagus", "trachea" if upper else "heart"]
    return found + (["nodule"] if nodules else [])
