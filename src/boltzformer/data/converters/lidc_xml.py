"""LIDC-IDRI's reader XML (LidcReadMessage, namespace http://www.nih.gov) -> nodule masks.

Each `readingSession` is one radiologist; each `unblindedReadNodule` one nodule as that reader
saw it, one `roi` per slice: `imageSOP_UID`, `imageZposition`, `inclusion` (TRUE: the outline
is nodule; FALSE: a hole to cut out) and the outline's `edgeMap` (xCoord = column, yCoord =
row). Outlines are filled with their boundary (LIDC's readers drew them just outside the
nodule). A nodule < 3 mm is one point, its centre, with no extent: it is left out (and
counted). `nonNodule` points are not nodules and are not read.

The readers' annotations are grouped into nodules by overlap in 3D (two annotations that
share a voxel, directly or through others, are one nodule), and each nodule's mask is the
voxels that at least `agreement` of the readers who marked it include (pylidc's consensus).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DataError

#: The root element of LIDC's CT reading XML (the X-ray series have IdriReadMessage).
ROOT_TAG = "LidcReadMessage"


@dataclass(frozen=True)
class Roi:
    """One outline on one slice: its (n, 2) points as (x = column, y = row)."""

    sop_uid: str
    z: float | None
    inclusion: bool
    points: np.ndarray


@dataclass(frozen=True)
class Annotation:
    """One reader's outlines of one nodule."""

    reader: int
    nodule_id: str
    rois: tuple[Roi, ...]

    @property
    def is_point(self) -> bool:
        """A nodule < 3 mm, marked by its centre only."""
        return all(len(r.points) < 3 for r in self.rois)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child_text(element: ET.Element, name: str) -> str | None:
    for child in element:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def is_lidc_xml(path: Path) -> bool:
    """True when `path` is an XML file whose root is LIDC's LidcReadMessage."""
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return _local(element.tag) == ROOT_TAG
    except (ET.ParseError, OSError):
        return False
    return False


def read_annotations(path: Path) -> list[Annotation]:
    """Every reader's nodule annotations (point-only ones included, see `is_point`)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(f"{path}: not a readable XML file ({err})") from None
    if _local(root.tag) != ROOT_TAG:
        raise DataError(f"{path}: not LIDC's CT reading XML (root {_local(root.tag)})")
    out = []
    for reader, session in enumerate(_children(root, "readingSession")):
        for nodule in _children(session, "unblindedReadNodule"):
            rois = []
            for roi in _children(nodule, "roi"):
                try:
                    points = np.asarray([(int(float(_child_text(e, "xCoord") or "")),
                                          int(float(_child_text(e, "yCoord") or "")))
                                         for e in _children(roi, "edgeMap")], int)  # fmt: skip
                    z_text = _child_text(roi, "imageZposition")
                    z = float(z_text) if z_text else None
                except ValueError as err:
                    raise DataError(f"{path}: an unreadable roi coordinate ({err})") from None
                inclusion = (_child_text(roi, "inclusion") or "TRUE").upper() == "TRUE"
                rois.append(Roi(_child_text(roi, "imageSOP_UID") or "", z, inclusion,
                                points.reshape(-1, 2)))  # fmt: skip
            out.append(Annotation(reader, _child_text(nodule, "noduleID") or "", tuple(rois)))
    return out


def slice_of(roi: Roi, sop_index: Mapping[str, int], z_positions: Sequence[float],
             tolerance: float) -> int | None:
    """The slice a roi is on: by SOPInstanceUID, else the slice whose z is within `tolerance`
    of imageZposition; None when neither matches."""
    if roi.sop_uid in sop_index:
        return sop_index[roi.sop_uid]
    if roi.z is None or not z_positions:
        return None
    gaps = np.abs(np.asarray(z_positions) - roi.z)
    k = int(gaps.argmin())
    return k if gaps[k] <= tolerance else None


def fill_outline(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(n, 2) outline points (x, y) -> (H, W) bool: the polygon filled, boundary included."""
    canvas = Image.new("1", (shape[1], shape[0]), 0)
    ImageDraw.Draw(canvas).polygon([(int(x), int(y)) for x, y in points], fill=1, outline=1)
    return np.asarray(canvas, bool)


def annotation_mask(annotation: Annotation, slices: Mapping[int, list[Roi]],
                    shape: tuple[int, int]) -> dict[int, np.ndarray]:
    """One annotation's mask per slice k -> (H, W) bool: inclusions filled, then holes cut.
    `slices` holds its rois by the slice they matched."""
    masks = {}
    for k, rois in slices.items():
        mask = np.zeros(shape, bool)
        for roi in (r for r in rois if r.inclusion and len(r.points) >= 3):
            mask |= fill_outline(roi.points, shape)
        for roi in (r for r in rois if not r.inclusion and len(r.points) >= 3):
            mask &= ~fill_outline(roi.points, shape)
        if mask.any():
            masks[k] = mask
    return masks


def _overlap(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> bool:
    return any(bool((a[k] & b[k]).any()) for k in a.keys() & b.keys())


def cluster(masks: Sequence[dict[int, np.ndarray]]) -> list[list[int]]:
    """Indices of annotations grouped into nodules: connected by sharing a voxel."""
    parent = list(range(len(masks)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if root(i) != root(j) and _overlap(masks[i], masks[j]):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(masks)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def consensus(masks: Sequence[dict[int, np.ndarray]], readers: Sequence[int],
              agreement: float) -> tuple[dict[int, np.ndarray], int]:
    """One nodule's mask per slice from its annotations' `masks` (by `readers`): a voxel is
    nodule where at least `agreement` x (readers who marked the nodule) readers include it.
    Returns (mask per slice, number of readers)."""
    per_reader: dict[int, dict[int, np.ndarray]] = {}
    for mask, reader in zip(masks, readers):
        mine = per_reader.setdefault(reader, {})
        for k, plane in mask.items():
            mine[k] = mine[k] | plane if k in mine else plane
    need = agreement * len(per_reader) - 1e-9
    out = {}
    for k in sorted({k for m in per_reader.values() for k in m}):
        votes = sum(m[k].astype(np.int32) for m in per_reader.values() if k in m)
        plane = np.asarray(votes) >= need
        if plane.any():
            out[k] = plane
    return out, len(per_reader)
