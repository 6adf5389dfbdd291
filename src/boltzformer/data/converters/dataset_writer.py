"""Writing converted images and masks in the BiomedParse layout, shared by every converter.

    OUT/<split>/<id>_<modality>_<site>.png             images (RGB or grayscale, 8-bit)
    OUT/<split>_mask/<image stem>_<target>.png         masks, 0/255 ('+' for spaces)
    OUT/<split>_instances/<mask file name>             optional: 16-bit instance ids, 0 = none
    OUT/<split>.json                                   COCO-like, prompts in `sentences`
    OUT/size_stats.md, size_stats.csv                  object size per target

An empty mask is an *absent* target (the prompt names something that is not in the image):
it is written, and flagged `"absent": true` in the JSON.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from ..size_stats import format_size_table, size_statistics, write_size_stats

#: sentences(target, modality, site) -> the prompts of one mask, the first the plainest.
Sentences = Callable[[str, str, str], list[str]]


def name_part(text: str) -> str:
    """A piece of a file name: spaces (and `_`, the reader's separator) become `+`."""
    return "+".join(text.replace("_", " ").split())


def image_stem(image_id: str, modality: str, site: str) -> str:
    """`<id>_<modality>_<site>`, the stem the reader parses (`parse_image_stem`)."""
    return f"{'-'.join(image_id.split())}_{name_part(modality)}_{name_part(site)}"


def relabel(instances: np.ndarray) -> np.ndarray:
    """Instance ids renumbered 1..n (0 stays background), in the order of the old ids:
    (H, W) uint16."""
    ids, inverse = np.unique(instances, return_inverse=True)
    new = np.arange(ids.size) + (0 if ids.size and ids[0] == 0 else 1)
    if new.size and new.max() > 65535:
        raise DataError(f"{new.max()} objects in one mask: more than a 16-bit map can hold")
    return new[inverse].reshape(instances.shape).astype(np.uint16)


def split_by_name(names: list[str], test_fraction: float, seed: int) -> dict[str, str]:
    """name -> "train" | "test": the round(n x fraction) names first in the order of
    sha256(f"{seed}:{name}") are test, so the split depends on neither file order nor listing."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    test = set(ranked[: round(len(names) * test_fraction)])
    return {n: "test" if n in test else "train" for n in names}


def tile_origins(length: int, tile: int | None) -> list[int]:
    """Start offsets of tiles of side `tile` covering `length` pixels: a step of `tile`, the
    last tile moved back to end at the border (it overlaps its neighbour); one tile (0) when
    `tile` is None or the length is not over it."""
    if tile is None or length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile))
    return starts + [length - tile]


@dataclass
class TargetMask:
    """One target of one image: a (H, W) bool mask and, optionally, its (H, W) instance ids."""

    target: str
    mask: np.ndarray
    instances: np.ndarray | None = None


@dataclass
class DatasetWriter:
    """Collects images and masks split by split, then writes the JSON and size statistics.

    `out` must be new or empty. `sentences` gives each mask's prompts; `description` goes
    into each JSON's "info"; `absent` ("empty" or "skip") says whether targets absent from
    an image are written as empty masks or left out.
    """

    out: Path
    sentences: Sentences
    description: str
    absent: str = "empty"
    info: dict[str, Any] = field(default_factory=dict)
    _records: dict[str, list[dict[str, Any]]] = field(default_factory=dict, init=False)
    _volumes: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _targets: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.absent not in ("empty", "skip"):
            raise ValueError(f"absent must be 'empty' or 'skip', got {self.absent!r}")
        self.out = Path(self.out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())):
            raise DataError(
                f"{self.out}: exists and is not an empty folder; choose a new output folder"
            )

    def add_volume(self, case: str, meta: Mapping[str, Any]) -> None:
        """Record a source volume (`source`, `shape`, `affine`, `axis`, ...) for the JSON."""
        self._volumes[case] = dict(meta)

    def add(
        self,
        split: str,
        image_id: str,
        image: np.ndarray,
        modality: str,
        site: str,
        targets: list[TargetMask],
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one image (H, W) or (H, W, 3) uint8 and its masks; returns masks written.

        `extra` fields go into the image's JSON entry (e.g. "volume", "slice", "source").
        """
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"image must be (H, W) or (H, W, 3) uint8, got {image.dtype} "
                             f"{image.shape}")  # fmt: skip
        records = self._records.setdefault(split, [])
        if not records:
            for name in (split, f"{split}_mask"):
                (self.out / name).mkdir(parents=True, exist_ok=True)
        stem = image_stem(image_id, modality, site)
        file_name = f"{stem}.png"
        Image.fromarray(image).save(self.out / split / file_name, compress_level=3)
        masks = []
        for item in targets:
            if item.mask.shape != image.shape[:2]:
                raise ValueError(f"{item.target}: mask {item.mask.shape} differs from image "
                                 f"{image.shape[:2]}")  # fmt: skip
            absent = not item.mask.any()
            if absent and self.absent == "skip":
                continue
            self._targets.setdefault(item.target, len(self._targets) + 1)
            mask_file = f"{stem}_{name_part(item.target)}.png"
            pixels = item.mask.astype(np.uint8) * np.uint8(255)
            Image.fromarray(pixels).save(self.out / f"{split}_mask" / mask_file, compress_level=1)
            objects = None
            if item.instances is not None:
                ids = relabel(np.where(item.mask, item.instances, 0))
                objects = int(ids.max())
                folder = self.out / f"{split}_instances"
                folder.mkdir(exist_ok=True)
                Image.fromarray(ids).save(folder / mask_file, compress_level=1)
            masks.append((mask_file, item.target, float(item.mask.mean()), absent, objects))
        records.append(
            {
                "id": len(records),
                "file_name": file_name,
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "modality": modality,
                "site": site,
                "masks": masks,
                "extra": dict(extra or {}),
            }
        )
        return len(masks)

    def _coco(self, split: str) -> dict[str, Any]:
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for rec in self._records[split]:
            images.append({k: rec[k] for k in ("id", "file_name", "height", "width",
                                               "modality", "site")} | rec["extra"])  # fmt: skip
            for mask_file, target, area, absent, objects in rec["masks"]:
                sentences = self.sentences(target, rec["modality"], rec["site"])
                ann: dict[str, Any] = {
                    "id": len(annotations),
                    "image_id": rec["id"],
                    "category_id": self._targets[target],
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
                if objects is not None:
                    ann["objects"] = objects
                annotations.append(ann)
        data: dict[str, Any] = {
            "info": {"description": self.description} | self.info,
            "categories": [{"id": i, "name": name} for name, i in self._targets.items()],
            "images": images,
            "annotations": annotations,
        }
        cases = {img["volume"] for img in images if "volume" in img}
        if cases:
            data["volumes"] = {c: self._volumes[c] for c in sorted(cases)}
        return data

    def finish(self) -> dict[str, Any]:
        """Write each split's JSON and the size statistics; return counts and the size rows."""
        if not self._records:
            raise DataError(f"{self.out}: nothing was converted")
        for split in self._records:
            text = json.dumps(self._coco(split), indent=1)
            (self.out / f"{split}.json").write_text(text, encoding="utf-8")
        every = [
            {"modality": r["modality"], "site": r["site"], "masks": [m[:4] for m in r["masks"]]}
            for records in self._records.values()
            for r in records
        ]
        stats = size_statistics(every)
        write_size_stats(self.out, stats)
        return {
            "out_dir": str(self.out),
            "images": {s: len(r) for s, r in self._records.items()},
            "masks": {s: sum(len(x["masks"]) for x in r) for s, r in self._records.items()},
            "absent": {
                s: sum(m[3] for x in r for m in x["masks"]) for s, r in self._records.items()
            },
            "objects": {
                s: sum(m[4] or 0 for x in r for m in x["masks"]) for s, r in self._records.items()
            },
            "stats": stats,
        }


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """Human-readable lines of a `finish()` summary: counts per split."""
    return [
        f"{split}: {n} images, {summary['masks'][split]} masks "
        f"({summary['absent'][split]} of them empty = absent targets)"
        + (f", {summary['objects'][split]} objects in the instance maps"
           if summary["objects"][split] else "")  # fmt: skip
        for split, n in summary["images"].items()
    ]


def format_summary(summary: Mapping[str, Any]) -> str:
    """What `boltzformer convert` prints of a converter's summary: its own counts first
    (DSB2018's imaging types, the volumes and slices kept, LIDC's nodules and notes), then
    the folder written, the counts per split and the size table."""
    lines = []
    if "imaging" in summary:
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary["imaging"].items())
        lines.append(f"imaging types (source images): {kinds}")
    if "volumes" in summary:
        dropped = summary["dropped_slices"]
        lines.append(f"{summary['layout']}: {summary['volumes']} volumes, {summary['slices']} "
                     "slices kept" + (f", {dropped} without any structure left out"
                                      if dropped else "")
                     + (f", {summary['nodules']} nodules" if "nodules" in summary else ""))
    lines += [f"note: {note}" for note in summary.get("notes", ())]  # fmt: skip
    lines.append(f"wrote {summary['out_dir']}")
    lines += ["  " + line for line in summary_lines(summary)]
    lines.append(format_size_table(summary["stats"]))
    return "\n".join(lines)
