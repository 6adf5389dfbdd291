"""One phantom: choose site and contrast, paint the anatomy, render it (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .abdomen import draw_abdomen
from .chest import draw_chest
from .prompts import ABSENT_CANDIDATES, FOREIGN_CANDIDATES
from .render import render
from .scene import Scene
from .tables import CONTRASTS

_MIN_PIXELS = 3  # a present target has at least this many pixels


@dataclass(frozen=True)
class Phantom:
    """One synthetic slice: image (S, S) uint8 and masks {target: (S, S) bool}.

    `absent` names the target left out on purpose (its mask is empty), if any; `foreign` a
    target of the other site prompted on this slice (an empty mask too), if any.
    """

    image: np.ndarray
    masks: dict[str, np.ndarray]
    modality: str
    site: str
    contrast: str
    absent: str | None
    foreign: str | None = None


def make_phantom(
    index: int, *, size: int = 256, seed: int = 0, absent_fraction: float = 0.0,
    foreign_fraction: float = 0.0,
) -> Phantom:
    """Draw phantom number `index` of the set made from `seed` (deterministic, no I/O).

    With probability `absent_fraction` one of the site's optional targets is left out; with
    probability `foreign_fraction` one target of the other site is added; both get empty
    masks. The foreign draw comes after the image's, so it does not change the pixels."""
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
    draw = draw_chest if site == "chest" else draw_abdomen
    for _ in range(10):
        scene = Scene.empty(size)
        masks = {t: scene.mask(t) for t in draw(scene, rng, absent)}
        if all(int(m.sum()) >= _MIN_PIXELS for m in masks.values()):
            break
    else:
        raise RuntimeError(f"phantom {index} (seed {seed}): could not draw every target")
    if absent is not None:
        masks[absent] = np.zeros((size, size), dtype=bool)
    image = render(scene, rng, CONTRASTS[contrast], window)
    foreign = None
    if rng.random() < foreign_fraction:
        foreign = str(rng.choice(FOREIGN_CANDIDATES[site]))
        masks[foreign] = np.zeros((size, size), dtype=bool)
    return Phantom(image, masks, modality, site, contrast, absent, foreign)
