"""Built-in synthetic benchmark: CT/MRI-like 2D slices with small, text-prompted targets.

Each image is an axial slice drawn from simple shapes in normalised coordinates [-1, 1]
(x to the image right = the patient's left, radiological convention; y down = posterior):

- chest CT (two levels): body wall, ribs, spine, left/right lung with a tree of vessels and
  vessel cross-sections, mediastinum, aorta, esophagus, and heart (lower) or trachea
  (upper); targets include pulmonary nodules that look like the vessel cross-sections
  (same density, overlapping sizes) but are rounder, larger on average, lobulated,
  spiculated or ground-glass;
- abdomen CT (portal-venous or plain) and MRI (T1- or T2-like): liver with hepatic vessels,
  cysts and tumours, gallbladder, spleen, left/right kidney, left/right adrenal gland
  (thin slivers beside diaphragmatic crura and renal vessels of similar look), aorta,
  inferior vena cava, pancreas, stomach, bowel loops, vertebra, muscles and fat.

Pixels come from a tissue map through a contrast table (HU and a display window for CT,
relative signal for MRI) plus organ texture, partial-volume blur and noise (Gaussian for
CT; bias field and Rician noise for MRI). Each image has its own generator seeded by
(seed, index), so output does not depend on the number of worker processes.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from tqdm import tqdm

from .biomedparse import default_prompt
from .errors import DataError

Point = tuple[float, float]


class Tissue(IntEnum):
    """Tissue classes painted into a scene; a contrast table maps each to a signal."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    MARROW = 5
    FLUID = 6
    LIVER = 7
    SPLEEN = 8
    CORTEX = 9
    MEDULLA = 10
    BLOOD = 11
    SOFT = 12
    GGO = 13
    TUMOR = 14
    ADRENAL = 15
    PANCREAS = 16
    WALL = 17
    BOWEL_CONTRAST = 18
    MYOCARDIUM = 19


@dataclass(frozen=True)
class Contrast:
    """Signal per tissue (HU for CT, relative for MRI) and texture amplitude per tissue.

    Texture amplitudes are fractions of the display range (the window width for CT).
    """

    values: Mapping[Tissue, float]
    texture: Mapping[Tissue, float]


def _table(**values: float) -> Mapping[Tissue, float]:
    return MappingProxyType({Tissue[name.upper()]: v for name, v in values.items()})


_CT_TEXTURE = _table(
    air=0.0, lung=0.03, fat=0.015, muscle=0.025, bone=0.05, marrow=0.08, fluid=0.004,
    liver=0.02, spleen=0.015, cortex=0.015, medulla=0.015, blood=0.006, soft=0.012,
    ggo=0.03, tumor=0.03, adrenal=0.012, pancreas=0.035, wall=0.02, bowel_contrast=0.03,
    myocardium=0.015,
)  # fmt: skip
_MR_TEXTURE = _table(
    air=0.0, lung=0.01, fat=0.025, muscle=0.03, bone=0.01, marrow=0.06, fluid=0.01,
    liver=0.025, spleen=0.02, cortex=0.02, medulla=0.02, blood=0.01, soft=0.02,
    ggo=0.02, tumor=0.04, adrenal=0.015, pancreas=0.04, wall=0.025, bowel_contrast=0.02,
    myocardium=0.02,
)  # fmt: skip

_CT_PORTAL = _table(
    air=-1000, lung=-860, fat=-100, muscle=55, bone=750, marrow=250, fluid=8, liver=110,
    spleen=120, cortex=185, medulla=140, blood=165, soft=40, ggo=-550, tumor=60, adrenal=50,
    pancreas=100, wall=90, bowel_contrast=320, myocardium=100,
)  # fmt: skip
_CT_PLAIN = _table(
    air=-1000, lung=-860, fat=-100, muscle=50, bone=750, marrow=250, fluid=8, liver=62,
    spleen=50, cortex=35, medulla=30, blood=42, soft=40, ggo=-550, tumor=32, adrenal=35,
    pancreas=45, wall=45, bowel_contrast=300, myocardium=45,
)  # fmt: skip
_MR_T1 = _table(
    air=0.0, lung=0.03, fat=0.85, muscle=0.3, bone=0.05, marrow=0.62, fluid=0.1, liver=0.52,
    spleen=0.38, cortex=0.42, medulla=0.3, blood=0.08, soft=0.35, ggo=0.15, tumor=0.28,
    adrenal=0.42, pancreas=0.58, wall=0.35, bowel_contrast=0.12, myocardium=0.35,
)  # fmt: skip
_MR_T2 = _table(
    air=0.0, lung=0.03, fat=0.7, muscle=0.18, bone=0.05, marrow=0.45, fluid=0.95, liver=0.28,
    spleen=0.55, cortex=0.5, medulla=0.64, blood=0.06, soft=0.3, ggo=0.4, tumor=0.68,
    adrenal=0.3, pancreas=0.36, wall=0.3, bowel_contrast=0.9, myocardium=0.3,
)  # fmt: skip

#: Contrast tables: CT in Hounsfield units (portal-venous and plain), MRI relative signal.
CONTRASTS: Mapping[str, Contrast] = MappingProxyType(
    {
        "ct_portal": Contrast(_CT_PORTAL, _CT_TEXTURE),
        "ct_plain": Contrast(_CT_PLAIN, _CT_TEXTURE),
        "mr_t1": Contrast(_MR_T1, _MR_TEXTURE),
        "mr_t2": Contrast(_MR_T2, _MR_TEXTURE),
    }
)

#: Paraphrases per target after the canonical `<target> in <site> <modality>` prompt.
#: Placeholders: {mod} (CT, MRI), {adj} (thoracic, abdominal). "left" is the patient's left.
SENTENCES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "nodule": (
            "pulmonary nodule in chest {mod}",
            "small lung lesion in {mod} scan",
            "lung nodule on {adj} {mod}",
            "round nodule in the lung parenchyma on {mod}",
            "solitary pulmonary nodule in the chest {mod} image",
        ),
        "left lung": (
            "the patient's left lung on {adj} {mod}",
            "left lung field in chest {mod} scan",
            "left lung parenchyma on {mod}",
        ),
        "right lung": (
            "the patient's right lung on {adj} {mod}",
            "right lung field in chest {mod} scan",
            "right lung parenchyma on {mod}",
        ),
        "aorta": (
            "aorta on {adj} {mod}",
            "the aortic lumen in {mod} scan",
            "{adj} aorta in {mod} image",
        ),
        "esophagus": (
            "esophagus on {adj} {mod}",
            "oesophagus behind the heart and trachea in {mod} scan",
            "the gullet in chest {mod} image",
        ),
        "trachea": (
            "trachea on {adj} {mod}",
            "air-filled tracheal lumen in chest {mod} scan",
            "the windpipe in {mod} image",
        ),
        "heart": (
            "heart on {adj} {mod}",
            "cardiac chambers and myocardium in chest {mod} scan",
            "the heart in {mod} image",
        ),
        "liver": (
            "liver on {adj} {mod}",
            "hepatic parenchyma in {mod} scan",
            "the liver in the right upper abdomen on {mod}",
        ),
        "liver tumor": (
            "hepatic lesion on {adj} {mod}",
            "focal liver mass in {mod} scan",
            "tumor within the liver on {adj} {mod}",
            "liver neoplasm in {mod} image",
        ),
        "hepatic vessel": (
            "intrahepatic vessels on {adj} {mod}",
            "portal and hepatic veins inside the liver in {mod} scan",
            "thin blood vessels of the liver on {mod}",
        ),
        "gallbladder": (
            "gall bladder on {adj} {mod}",
            "fluid-filled gallbladder under the liver in {mod} scan",
            "the gallbladder in {mod} image",
        ),
        "spleen": (
            "spleen on {adj} {mod}",
            "splenic parenchyma in {mod} scan",
            "the spleen in the left upper abdomen on {mod}",
        ),
        "left kidney": (
            "the patient's left kidney on {adj} {mod}",
            "left renal parenchyma in {mod} scan",
            "kidney on the left side of the patient in {adj} {mod}",
        ),
        "right kidney": (
            "the patient's right kidney on {adj} {mod}",
            "right renal parenchyma in {mod} scan",
            "kidney on the right side of the patient in {adj} {mod}",
        ),
        "left adrenal gland": (
            "the patient's left adrenal gland on {adj} {mod}",
            "left suprarenal gland in {mod} scan",
            "thin left adrenal gland beside the aorta on {mod}",
        ),
        "right adrenal gland": (
            "the patient's right adrenal gland on {adj} {mod}",
            "right suprarenal gland in {mod} scan",
            "thin right adrenal gland behind the vena cava on {mod}",
        ),
        "inferior vena cava": (
            "IVC on {adj} {mod}",
            "postcava in {mod} scan",
            "the inferior vena cava beside the liver on {mod}",
        ),
        "pancreas": (
            "pancreatic gland on {adj} {mod}",
            "the pancreas in {mod} scan",
            "pancreas head, body and tail on {adj} {mod}",
        ),
        "stomach": (
            "gastric lumen and wall on {adj} {mod}",
            "the stomach in {mod} scan",
            "stomach in the left upper abdomen on {mod}",
        ),
    }
)

#: Targets that may be left out of an image on purpose (written with an empty mask).
ABSENT_CANDIDATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chest": ("nodule",),
        "abdomen": (
            "liver tumor",
            "left kidney",
            "right kidney",
            "left adrenal gland",
            "right adrenal gland",
            "gallbladder",
        ),
    }
)

_MIN_PIXELS = 3  # a present target has at least this many pixels


def sentences_for(target: str, site: str, modality: str) -> list[str]:
    """Prompts for one mask: the canonical `<target> in <site> <modality>`, then paraphrases."""
    adj = {"chest": "thoracic", "abdomen": "abdominal"}.get(site, site)
    extra = [s.format(mod=modality, adj=adj) for s in SENTENCES.get(target, ())]
    return [default_prompt(target, site, modality), *extra]


# -- geometry -------------------------------------------------------------------------------
class _Canvas:
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

    def tube(self, points: np.ndarray, half_widths: np.ndarray | float) -> np.ndarray:
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


def _wobble(rng: np.random.Generator, kmin: int, kmax: int, amp: float) -> np.ndarray:
    """(K, 3) random radial harmonics for `_Canvas.blob`, amplitude falling with k."""
    ks = np.arange(kmin, kmax + 1, dtype=np.float32)
    amps = amp * rng.uniform(0.2, 1.0, ks.size) / np.sqrt(ks / kmin)
    return np.stack([ks, amps, rng.uniform(0, 2 * np.pi, ks.size)], 1)


def _curve(rng: np.random.Generator, p0: Point, p1: Point, bend: float, n: int) -> np.ndarray:
    """(n, 2) points of a quadratic Bezier from p0 to p1, bowed sideways by up to `bend`."""
    a, b = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    d = b - a
    normal = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    control = (a + b) / 2 + normal * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * control + t**2 * b


def _centroid(c: _Canvas, shape: np.ndarray) -> Point:
    rows, cols = np.nonzero(shape)
    return float((cols.mean() + 0.5) * c.px - 1), float((rows.mean() + 0.5) * c.px - 1)


@dataclass
class _Scene:
    """Tissue, signal offset and label maps of one slice being painted (later paint wins)."""

    canvas: _Canvas
    tissue: np.ndarray
    offset: np.ndarray
    labels: np.ndarray
    ids: dict[tuple[str, str | None], int] = field(default_factory=dict)

    @classmethod
    def empty(cls, size: int) -> _Scene:
        shape = (size, size)
        return cls(
            _Canvas(size),
            np.zeros(shape, np.uint8),
            np.zeros(shape, np.float32),
            np.zeros(shape, np.uint8),
        )

    def paint(
        self,
        shape: np.ndarray,
        tissue: Tissue,
        label: str | None = None,
        *,
        part_of: str | None = None,
        offset: float | np.ndarray = 0.0,
        where: np.ndarray | None = None,
    ) -> None:
        """Paint `shape` (restricted to `where`); `label` part of `part_of` counts in both."""
        region = shape if where is None else shape & where
        label_id = 0 if label is None else self.ids.setdefault((label, part_of), len(self.ids) + 1)
        np.copyto(self.tissue, np.uint8(tissue), where=region)
        np.copyto(self.offset, offset, where=region, casting="same_kind")
        np.copyto(self.labels, np.uint8(label_id), where=region)

    def mask(self, name: str) -> np.ndarray:
        """(S, S) bool: pixels labelled `name` or labelled as a part of `name`."""
        lut = np.zeros(256, dtype=bool)
        for (label, parent), i in self.ids.items():
            lut[i] = name in (label, parent)
        return lut[self.labels]


def _place(
    scene: _Scene,
    rng: np.random.Generator,
    region: np.ndarray,
    rx: float,
    ry: float,
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
    *,
    inside: float = 1.0,
    tries: int = 40,
) -> np.ndarray | None:
    """A `_Canvas.blob` centred in `region` with at least `inside` of its area there."""
    for cx, cy in scene.canvas.points_in(rng, region, tries):
        shape = scene.canvas.blob(float(cx), float(cy), rx, ry, angle, wobble)
        total = int(shape.sum())
        if total and (shape & region).sum() >= inside * total:
            return shape
    return None


# -- shared anatomy -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Body:
    """The body (S, S) mask and its inner cavity: centre y `cy`, radii, posterior edge `back`."""

    body: np.ndarray
    cavity: np.ndarray
    cy: float
    cavity_rx: float
    cavity_ry: float

    @property
    def back(self) -> float:
        return self.cy + self.cavity_ry


def _body(scene: _Scene, rng: np.random.Generator) -> _Body:
    """Body outline, subcutaneous fat, muscle wall (thick at the back) and the fat-filled cavity."""
    c = scene.canvas
    rx, ry, cy = rng.uniform(0.8, 0.93), rng.uniform(0.6, 0.72), rng.uniform(-0.02, 0.06)
    wob = _wobble(rng, 2, 5, 0.03)
    body = c.blob(0, cy, rx, ry, 0, wob)
    scene.paint(body, Tissue.FAT)
    fat = rng.uniform(0.03, 0.1)
    scene.paint(c.blob(0, cy, rx - fat, ry - 0.8 * fat, 0, wob), Tissue.MUSCLE)
    wall, back = rng.uniform(0.035, 0.06), rng.uniform(0.05, 0.08)
    crx, cry = rx - fat - wall, ry - 0.8 * fat - wall - back
    cavity = c.blob(0, cy - back, crx, cry, 0, wob)
    scene.paint(cavity, Tissue.FAT)
    return _Body(body, cavity, cy - back, crx, cry)


def _vertebra(scene: _Scene, rng: np.random.Generator, body: _Body) -> tuple[float, float]:
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


def _ribs(scene: _Scene, rng: np.random.Generator, body: _Body, angles: Iterable[float]) -> None:
    """Rib cross-sections just outside the cavity at the given angles (radians)."""
    c = scene.canvas
    for theta in angles:
        cx = (body.cavity_rx + 0.03) * np.cos(theta)
        cy = body.cy + (body.cavity_ry + 0.03) * np.sin(theta)
        tangent = theta + np.pi / 2
        rx, ry = rng.uniform(0.025, 0.04), rng.uniform(0.012, 0.018)
        scene.paint(c.blob(cx, cy, rx, ry, tangent), Tissue.BONE, where=body.body)
        scene.paint(c.blob(cx, cy, rx * 0.6, ry * 0.45, tangent), Tissue.MARROW, where=body.body)


# -- chest ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Nodule:
    shape: np.ndarray
    centre: Point
    radius: float
    kind: str  # "solid", "spiculated" or "ground-glass"


def _nodule(scene: _Scene, rng: np.random.Generator, lungs: np.ndarray) -> _Nodule | None:
    """Place one nodule in the lungs: radius log-uniform in [0.008, 0.062] (at least a pixel)."""
    c = scene.canvas
    r = float(np.exp(rng.uniform(np.log(max(0.008, 1.05 * c.px)), np.log(0.062))))
    kind = str(rng.choice(["solid", "spiculated", "ground-glass"], p=[0.65, 0.15, 0.2]))
    aspect, angle = rng.uniform(0.8, 1.2), rng.uniform(0, np.pi)
    wob = _wobble(rng, 3, 7, rng.uniform(0.04, 0.14))
    juxtapleural = rng.random() < 0.15
    shape = _place(
        scene, rng, lungs, r * aspect, r / aspect, angle, wob, inside=0.55 if juxtapleural else 1.0
    )
    if shape is None:
        return None
    return _Nodule(shape, _centroid(c, shape), r, kind)


def _paint_nodule(
    scene: _Scene, rng: np.random.Generator, nodule: _Nodule, lungs: np.ndarray, lung: str
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
    scene: _Scene,
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
        path = _curve(rng, hilum, (float(target[0]), float(target[1])), 0.12, 5)
        widths = np.linspace(rng.uniform(0.01, 0.018), thin, len(path))
        scene.paint(c.tube(path, widths), Tissue.SOFT, offset=rng.normal(0, 0.015), **common)
        for k in rng.choice([1, 2, 3], size=int(rng.integers(1, 3)), replace=False):
            step = path[k + 1] - path[k]
            turn = np.arctan2(step[1], step[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
            length = rng.uniform(0.08, 0.25)
            end = (path[k][0] + length * np.cos(turn), path[k][1] + length * np.sin(turn))
            twig = _curve(rng, (float(path[k][0]), float(path[k][1])), end, 0.04, 3)
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


def _chest(scene: _Scene, rng: np.random.Generator, absent: str | None) -> list[str]:
    """Paint a chest slice (upper level with trachea or lower with heart); returns targets."""
    c = scene.canvas
    body = _body(scene, rng)
    cy, cry = body.cy, body.cavity_ry
    vy, r_v = _vertebra(scene, rng, body)
    upper = rng.random() < 0.4
    mid = rng.uniform(-0.02, 0.05)
    width = rng.uniform(0.1, 0.15) if upper else rng.uniform(0.12, 0.18)
    blocked = c.blob(
        mid, cy - 0.05, width, cry * 0.95, rng.uniform(-0.1, 0.1), _wobble(rng, 2, 4, 0.06)
    )
    blocked |= c.blob(0.03, vy - 0.1, rng.uniform(0.12, 0.16), 0.09)  # posterior mediastinum
    blocked |= c.blob(0.0, vy + 0.02, 0.15, 0.13)  # spine and paravertebral gutters
    heart = None
    if not upper:
        hx, hy = mid + rng.uniform(0.06, 0.14), cy - rng.uniform(0.02, 0.12)
        hrx, hry, tilt = rng.uniform(0.24, 0.32), rng.uniform(0.2, 0.27), rng.uniform(-0.6, -0.2)
        hwob = _wobble(rng, 2, 4, 0.04)
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
    _ribs(scene, rng, body, angles[keep])
    scene.paint(c.blob(mid * 0.5, cy - cry - 0.015, 0.05, 0.022), Tissue.BONE)  # sternum
    if heart is not None:
        scene.paint(pericardium, Tissue.FAT)
        scene.paint(heart, Tissue.MYOCARDIUM, "heart")
        for _ in range(2):
            radii = rng.uniform(0.07, 0.11), rng.uniform(0.06, 0.09)
            chamber = _place(scene, rng, heart, *radii, rng.uniform(0, np.pi))
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


# -- abdomen --------------------------------------------------------------------------------
def _kidney(
    scene: _Scene, rng: np.random.Generator, name: str, side: int, vy: float, scale: float
) -> Point:
    """A bean-shaped kidney with medulla, sinus fat and pelvis; returns its hilum."""
    c = scene.canvas
    kx, ky = side * rng.uniform(0.27, 0.34), vy + rng.uniform(-0.07, 0.0)
    rx, ry = rng.uniform(0.065, 0.085) * scale, rng.uniform(0.09, 0.125) * scale
    tilt = -side * rng.uniform(0.25, 0.6)
    scene.paint(c.blob(kx, ky, rx + 0.03, ry + 0.03, tilt), Tissue.FAT)  # perirenal fat
    hilum = (kx - side * rx * 0.8, ky - ry * 0.2)
    bean = c.blob(kx, ky, rx, ry, tilt, _wobble(rng, 2, 3, 0.04))
    bean &= ~c.blob(hilum[0] - side * rx * 0.15, hilum[1], rx * 0.45, ry * 0.3, tilt)
    scene.paint(bean, Tissue.CORTEX, name)
    for _ in range(int(rng.integers(3, 6))):
        pyramid = _place(scene, rng, bean, rx * 0.25, ry * 0.18, rng.uniform(0, np.pi))
        if pyramid is not None:
            scene.paint(pyramid, Tissue.MEDULLA, name)
    sinus = c.blob(hilum[0] + side * rx * 0.35, hilum[1], rx * 0.35, ry * 0.3, tilt) & bean
    scene.paint(sinus, Tissue.FAT, name)
    scene.paint(
        c.blob(hilum[0] + side * rx * 0.3, hilum[1], rx * 0.18, ry * 0.15) & bean,
        Tissue.FLUID,
        name,
    )
    return hilum


def _adrenal(scene: _Scene, rng: np.random.Generator, name: str, apex: Point, side: int) -> None:
    """A thin adrenal limb (right) or inverted-Y (left) drawn only into fat."""
    c = scene.canvas
    half = max(rng.uniform(0.007, 0.013), 0.55 * c.px)
    limbs = 1 if side < 0 and rng.random() < 0.6 else 2
    shape = np.zeros_like(scene.labels, dtype=bool)
    base = np.pi / 2 + side * rng.uniform(0.2, 0.6)  # pointing posteriorly and laterally
    for k in range(limbs):
        theta = base + (k - (limbs - 1) / 2) * rng.uniform(0.5, 0.9)
        length = rng.uniform(0.06, 0.1)
        end = (apex[0] + length * np.cos(theta), apex[1] + length * np.sin(theta))
        path = _curve(rng, apex, end, 0.015, 4)
        shape |= c.tube(path, np.linspace(half * 1.2, half * 0.8, len(path)))
    scene.paint(shape, Tissue.ADRENAL, name, where=scene.tissue == Tissue.FAT)


def _abdomen(scene: _Scene, rng: np.random.Generator, absent: str | None) -> list[str]:
    """Paint an upper-abdomen slice at kidney/adrenal level; returns the targets drawn."""
    c = scene.canvas
    body = _body(scene, rng)
    cy, crx, cry = body.cy, body.cavity_rx, body.cavity_ry
    vy, r_v = _vertebra(scene, rng, body)
    for side in (-1, 1):  # psoas
        scene.paint(c.blob(side * (r_v + 0.04), vy - 0.01, 0.045, 0.05), Tissue.MUSCLE)
    in_fat = scene.tissue == Tissue.FAT
    free = body.cavity & (c.y < cy + 0.15)
    for _ in range(int(rng.integers(5, 12))):  # bowel loops
        r = rng.uniform(0.025, 0.06)
        at = c.points_in(rng, free, 1)
        if len(at) == 0:
            break
        x, y = (float(v) for v in at[0])
        content = rng.choice([Tissue.FLUID, Tissue.AIR, Tissue.SOFT, Tissue.BOWEL_CONTRAST])
        scene.paint(c.blob(x, y, r, r * rng.uniform(0.7, 1.0)), Tissue.WALL, where=in_fat)
        scene.paint(c.blob(x, y, r - 0.009, r * 0.8 - 0.009), Tissue(content), where=in_fat)

    sx, sy = crx * rng.uniform(0.2, 0.4), cy - cry * rng.uniform(0.3, 0.5)
    srx, sry, stilt = rng.uniform(0.12, 0.2), rng.uniform(0.09, 0.14), rng.uniform(-0.5, 0.5)
    stomach = c.blob(sx, sy, srx, sry, stilt, _wobble(rng, 2, 4, 0.05)) & body.cavity
    scene.paint(stomach, Tissue.WALL, "stomach")
    lumen = c.blob(sx, sy, srx - 0.018, sry - 0.018, stilt) & stomach
    contents = Tissue.FLUID if rng.random() < 0.6 else Tissue.SOFT
    scene.paint(lumen, contents, "stomach")
    scene.paint(lumen & (c.y < sy - sry * rng.uniform(0.0, 0.6)), Tissue.AIR, "stomach")

    lx, ly = -crx * rng.uniform(0.35, 0.5), cy - rng.uniform(0.02, 0.14)
    lrx, lry = crx * rng.uniform(0.4, 0.58), cry * rng.uniform(0.6, 0.88)
    liver = c.blob(lx, ly, lrx, lry, rng.uniform(-0.3, 0.2), _wobble(rng, 2, 4, 0.06))
    liver &= body.cavity & ~c.blob(0.0, vy, r_v + 0.05, r_v + 0.05)
    scene.paint(liver, Tissue.LIVER, "liver")
    porta = (lx + lrx * rng.uniform(0.3, 0.5), ly + lry * rng.uniform(0.0, 0.2))
    for target in c.points_in(rng, liver, int(rng.integers(2, 5))):
        path = _curve(rng, porta, (float(target[0]), float(target[1])), 0.1, 5)
        widths = np.linspace(rng.uniform(0.012, 0.02), max(0.005, 0.5 * c.px), len(path))
        scene.paint(
            c.tube(path, widths), Tissue.BLOOD, "hepatic vessel", part_of="liver", where=liver
        )
    for x, y in c.points_in(rng, liver, int(rng.integers(3, 9))):
        r = max(rng.uniform(0.008, 0.02), 0.6 * c.px)
        scene.paint(
            c.blob(float(x), float(y), r, r * rng.uniform(0.7, 1.0)),
            Tissue.BLOOD,
            "hepatic vessel",
            part_of="liver",
            where=liver,
        )
    for _ in range(int(rng.integers(0, 3))):  # simple cysts: sharp, water-like distractors
        r = rng.uniform(0.01, 0.035)
        cyst = _place(scene, rng, liver, r, r * 0.9)
        if cyst is not None:
            scene.paint(cyst, Tissue.FLUID, "liver")
    tumours = 0
    if absent != "liver tumor":
        for _ in range(1 if rng.random() < 0.6 else int(rng.integers(2, 4))):
            r = float(np.exp(rng.uniform(np.log(max(0.012, 1.1 * c.px)), np.log(0.08))))
            wob, aspect = _wobble(rng, 2, 6, rng.uniform(0.04, 0.12)), rng.uniform(0.8, 1.2)
            tumour = _place(scene, rng, liver, r * aspect, r / aspect, rng.uniform(0, np.pi), wob)
            if tumour is None:
                continue
            offset = rng.normal(0.0, 0.02)
            if rng.random() < 0.3:  # enhancing rim
                scene.paint(
                    tumour, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset + 0.08
                )
                core = (
                    c.blob(*_centroid(c, tumour), r * aspect * 0.75, r / aspect * 0.75, 0.0, wob)
                    & tumour
                )
                scene.paint(core, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset)
            else:
                scene.paint(tumour, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset)
            tumours += 1

    has_gallbladder = absent != "gallbladder" and rng.random() < 0.85
    if has_gallbladder:
        grx, gry, gtilt = rng.uniform(0.045, 0.075), rng.uniform(0.03, 0.05), rng.uniform(0, np.pi)
        edge = liver & (c.x > lx + 0.2 * lrx) & (c.y < ly + 0.1 * lry)
        gallbladder = _place(scene, rng, edge, grx, gry, gtilt, inside=0.6)
        has_gallbladder = gallbladder is not None
        if gallbladder is not None:
            scene.paint(gallbladder & body.cavity, Tissue.WALL, "gallbladder")
            inner = c.blob(*_centroid(c, gallbladder), grx - 0.008, gry - 0.008, gtilt)
            scene.paint(inner & gallbladder, Tissue.FLUID, "gallbladder")

    px_, py_ = crx * rng.uniform(0.62, 0.75), cy + cry * rng.uniform(0.05, 0.35)
    prx, pry, ptilt = rng.uniform(0.1, 0.15), rng.uniform(0.18, 0.27), -rng.uniform(0.3, 0.7)
    spleen = c.blob(px_, py_, prx, pry, ptilt, _wobble(rng, 2, 4, 0.05))
    spleen &= ~c.blob(px_ - rng.uniform(0.07, 0.1), py_, prx * 0.85, pry * 0.8, ptilt)
    scene.paint(spleen & body.cavity, Tissue.SPLEEN, "spleen")

    kidneys = {}
    for name, side in (("right kidney", -1), ("left kidney", 1)):
        if absent != name:
            kidneys[name] = _kidney(scene, rng, name, side, vy, rng.uniform(0.65, 1.05))

    ax, ar = rng.uniform(0.02, 0.07), rng.uniform(0.04, 0.055)
    ay = vy - r_v - ar - rng.uniform(0.005, 0.02)
    ix, iy = ax - rng.uniform(0.14, 0.19), ay - rng.uniform(0.0, 0.04)
    irx, iry = rng.uniform(0.045, 0.065), rng.uniform(0.03, 0.045)
    for side, top in ((1, (ax + 0.045, ay - 0.05)), (-1, (ax - 0.045, ay - 0.055))):  # crura
        path = _curve(rng, top, (ax + side * rng.uniform(0.06, 0.09), vy - 0.01), 0.03, 5)
        scene.paint(
            c.tube(path, max(rng.uniform(0.008, 0.014), 0.55 * c.px)),
            Tissue.MUSCLE,
            where=scene.tissue == Tissue.FAT,
        )
    scene.paint(c.blob(ax, ay, ar, ar * rng.uniform(0.9, 1.0)), Tissue.BLOOD, "aorta")
    scene.paint(
        c.blob(ix, iy, irx, iry, rng.uniform(-0.3, 0.3)), Tissue.BLOOD, "inferior vena cava"
    )

    in_fat = scene.tissue == Tissue.FAT
    tail = (px_ - prx * 0.9, py_ - pry * 0.2)
    neck = (ax + rng.uniform(-0.02, 0.03), ay - rng.uniform(0.12, 0.17))
    head = (ix + rng.uniform(-0.01, 0.04), iy - rng.uniform(0.08, 0.13))
    path = np.concatenate([_curve(rng, tail, neck, 0.05, 6), _curve(rng, neck, head, 0.03, 4)[1:]])
    widths = rng.uniform(0.022, 0.034) * np.exp(rng.normal(0.0, 0.12, len(path)))
    widths[-1] *= 1.3  # the head is the widest part
    scene.paint(c.tube(path, widths), Tissue.PANCREAS, "pancreas", where=in_fat)
    vessels = [  # splenic vein, SMA, SMV, renal veins and arteries: thin distractors
        (c.tube(path[:6] + np.float32([0.0, 0.03]), max(0.009, 0.55 * c.px)), Tissue.BLOOD),
    ]
    sma_y = ay - rng.uniform(0.08, 0.11)
    vessels.append((c.blob(ax, sma_y, *(2 * [rng.uniform(0.012, 0.016)])), Tissue.BLOOD))
    vessels.append((c.blob(ax - 0.06, sma_y, *(2 * [rng.uniform(0.015, 0.022)])), Tissue.BLOOD))
    for hx, hy in kidneys.values():
        vein, artery = rng.uniform(0.008, 0.013), rng.uniform(0.005, 0.008)
        for start, half in (((ix, iy), vein), ((ax, ay), artery)):
            vessel_path = _curve(rng, start, (hx, hy), 0.04, 5)
            vessels.append((c.tube(vessel_path, max(half, 0.5 * c.px)), Tissue.BLOOD))
    for shape, tissue in vessels:
        scene.paint(shape, tissue, where=scene.tissue == Tissue.FAT)

    if absent != "right adrenal gland":
        apex = (ix + rng.uniform(-0.02, 0.02), iy + iry + rng.uniform(0.015, 0.035))
        _adrenal(scene, rng, "right adrenal gland", apex, -1)
    if absent != "left adrenal gland":
        apex = (ax + ar + rng.uniform(0.03, 0.06), ay - rng.uniform(0.0, 0.04))
        _adrenal(scene, rng, "left adrenal gland", apex, 1)

    angles = np.concatenate(
        [rng.uniform(0.1 * np.pi, 0.38 * np.pi, 3), rng.uniform(0.62 * np.pi, 0.9 * np.pi, 3)]
    )
    _ribs(scene, rng, body, angles[rng.random(6) < 0.7])

    found = [
        "liver",
        "hepatic vessel",
        "spleen",
        "aorta",
        "inferior vena cava",
        "pancreas",
        "stomach",
        *kidneys,
    ]
    found += [n for n in ("right adrenal gland", "left adrenal gland") if n != absent]
    found += ["liver tumor"] * (tumours > 0) + ["gallbladder"] * has_gallbladder
    return found


# -- rendering ------------------------------------------------------------------------------
def _unit_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """(S, S) Gaussian noise smoothed by `sigma` pixels, rescaled to unit standard deviation."""
    field_ = gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma)
    return field_ / max(float(field_.std()), 1e-6)


def _render(
    scene: _Scene, rng: np.random.Generator, contrast: Contrast, window: tuple[float, float] | None
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


@dataclass(frozen=True)
class Phantom:
    """One synthetic slice: image (S, S) uint8 and masks {target: (S, S) bool}.

    `absent` names the target left out on purpose (its mask is empty), if any.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    modality: str
    site: str
    contrast: str
    absent: str | None


def make_phantom(
    index: int, *, size: int = 256, seed: int = 0, absent_fraction: float = 0.0
) -> Phantom:
    """Draw phantom number `index` of the set made from `seed` (deterministic, no I/O)."""
    rng = np.random.default_rng([seed, index])
    kind = rng.random()
    if kind < 0.35:
        site, modality = "chest", "CT"
        contrast = "ct_portal" if rng.random() < 0.5 else "ct_plain"
        width = rng.uniform(1000, 1400)  # lung window with air just below its bottom
        window = (width, width / 2 - 1000 + rng.uniform(-20, 60))
    elif kind < 0.7:
        site, modality = "abdomen", "CT"
        contrast = "ct_portal" if rng.random() < 0.7 else "ct_plain"
        window = (rng.uniform(350, 450), rng.uniform(30, 60))
    else:
        site, modality, window = "abdomen", "MRI", None
        contrast = "mr_t2" if rng.random() < 0.6 else "mr_t1"
    absent = None
    if rng.random() < absent_fraction:
        absent = str(rng.choice(ABSENT_CANDIDATES[site]))
    draw = _chest if site == "chest" else _abdomen
    for _ in range(10):
        scene = _Scene.empty(size)
        masks = {t: scene.mask(t) for t in draw(scene, rng, absent)}
        if all(int(m.sum()) >= _MIN_PIXELS for m in masks.values()):
            break
    else:
        raise RuntimeError(f"phantom {index} (seed {seed}): could not draw every target")
    if absent is not None:
        masks[absent] = np.zeros((size, size), dtype=bool)
    image = _render(scene, rng, CONTRASTS[contrast], window)
    return Phantom(image, masks, modality, site, contrast, absent)


# -- writing a data set ---------------------------------------------------------------------
def _write_one(task: tuple[int, str, int, int, float, str]) -> dict[str, Any]:
    """Draw phantom `index` and write its image and masks; returns what the JSON needs."""
    index, split, size, seed, absent_fraction, out_dir = task
    phantom = make_phantom(index, size=size, seed=seed, absent_fraction=absent_fraction)
    out = Path(out_dir)
    stem = f"{index:05d}_{phantom.modality}_{phantom.site}"
    Image.fromarray(phantom.image).save(out / split / f"{stem}.png", compress_level=3)
    masks = []
    for target in sorted(phantom.masks):
        mask = phantom.masks[target]
        mask_file = f"{stem}_{target.replace(' ', '+')}.png"
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(
            out / f"{split}_mask" / mask_file, compress_level=1
        )
        masks.append((mask_file, target, float(mask.mean()), target == phantom.absent))
    return {
        "index": index,
        "split": split,
        "file_name": f"{stem}.png",
        "modality": phantom.modality,
        "site": phantom.site,
        "contrast": phantom.contrast,
        "masks": masks,
    }


def _coco(records: list[dict[str, Any]], split: str, size: int, seed: int) -> dict[str, Any]:
    """BiomedParse/COCO-like JSON of one split, with `area_fraction` and `absent` added."""
    categories = {name: i + 1 for i, name in enumerate(SENTENCES)}
    images, annotations = [], []
    for rec in records:
        images.append(
            {
                "id": rec["index"],
                "file_name": rec["file_name"],
                "height": size,
                "width": size,
                "modality": rec["modality"],
                "site": rec["site"],
                "contrast": rec["contrast"],
            }
        )
        for mask_file, target, area, absent in rec["masks"]:
            sentences = sentences_for(target, rec["site"], rec["modality"])
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": rec["index"],
                    "category_id": categories[target],
                    "file_name": rec["file_name"],
                    "mask_file": mask_file,
                    "split": split,
                    "target": target,
                    "area_fraction": area,
                    "absent": absent,
                    "sentences": [
                        {"raw": s, "sent": s, "sent_id": j} for j, s in enumerate(sentences)
                    ],
                }
            )
    return {
        "info": {"description": "boltzformer synthetic phantoms", "seed": seed, "size": size},
        "categories": [{"id": i, "name": name} for name, i in categories.items()],
        "images": images,
        "annotations": annotations,
    }


def size_statistics(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-target rows: where it occurs, mask count, absent count and area % statistics."""
    areas: dict[str, list[float]] = {}
    absent: dict[str, int] = {}
    where: dict[str, set[str]] = {}
    for rec in records:
        for _, target, area, is_absent in rec["masks"]:
            where.setdefault(target, set()).add(f"{rec['modality']} {rec['site']}")
            if is_absent:
                absent[target] = absent.get(target, 0) + 1
            else:
                areas.setdefault(target, [])
                areas[target].append(area * 100)
    rows = []
    for target in sorted(where, key=lambda t: np.mean(areas.get(t, [0.0]))):
        values = np.asarray(areas.get(target, [np.nan]))
        rows.append(
            {
                "target": target,
                "where": ", ".join(sorted(where[target])),
                "masks": int(np.isfinite(values).sum()),
                "absent": absent.get(target, 0),
                "mean_pct": float(np.mean(values)),
                "median_pct": float(np.median(values)),
                "min_pct": float(np.min(values)),
                "max_pct": float(np.max(values)),
                "share_below_1pct": float(np.mean(values < 1.0)),
            }
        )
    return rows


def format_size_table(rows: list[dict[str, Any]]) -> str:
    """The size statistics as a Markdown table (areas in % of the image)."""
    lines = [
        "| target | where | masks | absent | mean % | median % | min % | max % | share < 1 % |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['where']} | {r['masks']} | {r['absent']} | "
            f"{r['mean_pct']:.3f} | {r['median_pct']:.3f} | {r['min_pct']:.4f} | "
            f"{r['max_pct']:.2f} | {r['share_below_1pct']:.2f} |"
        )
    return "\n".join(lines)


def generate_phantoms(
    out_dir: str | Path,
    *,
    images: int = 2000,
    size: int = 256,
    seed: int = 0,
    test_fraction: float = 0.2,
    absent_fraction: float = 0.0,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a phantom data set in the BiomedParse format and return a summary.

    Writes `train/`, `train_mask/`, `train.json` (and the same for `test`: the last
    round(images x test_fraction) images), `size_stats.md` and `size_stats.csv`. Each image
    has one mask per target drawn in it; with probability `absent_fraction` one target is
    left out and written with an empty mask. `workers`: processes (default: all CPUs for 64+
    images). The summary holds the counts, the per-target size rows ("stats") and "seconds".
    """
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if size < 96:
        raise ValueError(f"size must be at least 96 pixels (small targets need room), got {size}")
    if not 0.0 <= test_fraction < 1.0 or not 0.0 <= absent_fraction <= 1.0:
        raise ValueError("test_fraction must be in [0, 1) and absent_fraction in [0, 1]")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not an empty folder; choose a new output folder")
    start = time.perf_counter()
    n_test = round(images * test_fraction)
    splits = ["train"] * (images - n_test) + ["test"] * n_test
    for split in sorted(set(splits)):
        (out / split).mkdir(parents=True, exist_ok=True)
        (out / f"{split}_mask").mkdir(exist_ok=True)
    tasks = [(i, splits[i], size, seed, absent_fraction, str(out)) for i in range(images)]
    if workers is None:
        workers = (os.cpu_count() or 1) if images >= 64 else 1
    with tqdm(total=images, disable=not progress, desc="phantoms", unit="img") as bar:
        if workers <= 1:
            records = []
            for task in tasks:
                records.append(_write_one(task))
                bar.update()
        else:
            # fork where there is one (as torch's DataLoader does): spawn would re-import the
            # caller's __main__, which breaks scripts and `python -m` without a main guard.
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            with context.Pool(workers) as pool:
                records = []
                chunk = max(1, min(32, images // (8 * workers)))
                for rec in pool.imap(_write_one, tasks, chunksize=chunk):
                    records.append(rec)
                    bar.update()

    for split in sorted(set(splits)):
        chosen = [r for r in records if r["split"] == split]
        text = json.dumps(_coco(chosen, split, size, seed), indent=1)
        (out / f"{split}.json").write_text(text, encoding="utf-8")
    stats = size_statistics(records)
    (out / "size_stats.md").write_text(format_size_table(stats) + "\n", encoding="utf-8")
    with (out / "size_stats.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(stats[0]))
        writer.writeheader()
        writer.writerows(stats)
    names = sorted(set(splits))
    return {
        "out_dir": str(out),
        "images": {s: splits.count(s) for s in names},
        "masks": {s: sum(len(r["masks"]) for r in records if r["split"] == s) for s in names},
        "size": size,
        "seed": seed,
        "stats": stats,
        "seconds": time.perf_counter() - start,
    }
