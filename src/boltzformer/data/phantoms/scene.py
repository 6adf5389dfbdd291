"""The tissue, offset and label maps of one slice being painted, and placing shapes in it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Canvas
from .tables import Tissue


@dataclass
class Scene:
    """Tissue, signal offset and label maps of one slice being painted (later paint wins)."""

    canvas: Canvas
    tissue: np.ndarray
    offset: np.ndarray
    labels: np.ndarray
    ids: dict[tuple[str, str | None], int] = field(default_factory=dict)

    @classmethod
    def empty(cls, size: int) -> Scene:
        shape = (size, size)
        return cls(
            Canvas(size),
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


def place(
    scene: Scene,
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
    """A `Canvas.blob` centred in `region` with at least `inside` of its area there."""
    for cx, cy in scene.canvas.points_in(rng, region, tries):
        shape = scene.canvas.blob(float(cx), float(cy), rx, ry, angle, wobble)
        total = int(shape.sum())
        if total and (shape & region).sum() >= inside * total:
            return shape
    return None
