"""CoNSeP (Graham et al. 2019, the HoVer-Net data set) -> the BiomedParse layout.

Source layout: `Train|Test/Images/<name>.png|jpg` and `Train|Test/Labels/<name>.mat` with
`inst_map` (H, W) (0 background, 1..n the nuclei), `type_map` (H, W), `inst_type` (n, 1)
(the class of nucleus k in row k-1) and `inst_centroid` (n, 2).

CoNSeP's own seven types are 1 other, 2 inflammatory, 3 healthy epithelial, 4 dysplastic/
malignant epithelial, 5 fibroblast, 6 muscle, 7 endothelial. HoVer-Net merges them into four
(3, 4 -> epithelial; 5, 6, 7 -> spindle-shaped), as most published CoNSeP results do.
Labels that carry a type above 4 anywhere are the seven; otherwise they are already merged.

Each image (or tile of `tile` pixels) gets one mask per class, written empty when the class
has no nucleus there (an absent target), and the nuclei's instance map beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from tqdm import tqdm

from ..errors import DataError
from ..medio import IMAGE_EXTENSIONS, read_image
from .dataset_writer import DatasetWriter, TargetMask, tile_origins

#: HoVer-Net's four classes (the default), by merged type id.
CLASSES_4: dict[int, str] = {
    1: "other nuclei",
    2: "inflammatory nuclei",
    3: "epithelial nuclei",
    4: "spindle-shaped nuclei",
}
#: CoNSeP's seven classes, by type id.
CLASSES_7: dict[int, str] = {
    1: "other nuclei",
    2: "inflammatory nuclei",
    3: "healthy epithelial nuclei",
    4: "malignant epithelial nuclei",
    5: "fibroblast nuclei",
    6: "muscle nuclei",
    7: "endothelial nuclei",
}
#: The seven types -> HoVer-Net's four (index = type id; 0 is background).
MERGE_7_TO_4 = np.array([0, 1, 2, 3, 3, 4, 4, 4])
#: CoNSeP split folder -> our split.
SPLITS = {"Train": "train", "Test": "test"}
MODALITY, SITE = "pathology", "colon"


def consep_sentences(target: str, modality: str, site: str) -> list[str]:
    """Prompts of a CoNSeP class ("epithelial nuclei"), the plainest first."""
    cell = target.removesuffix(" nuclei")
    return [
        f"{target} in {site} {modality}",
        f"{target} in an H&E-stained colorectal tissue image",
        f"{cell} cell nuclei in colon histology",
        f"nuclei of {cell} cells in colorectal adenocarcinoma tissue",
    ]


@dataclass(frozen=True)
class Label:
    """One CoNSeP label file: the instance map (H, W) int and each nucleus's type (n,)."""

    inst_map: np.ndarray
    inst_type: np.ndarray


def read_label(path: Path) -> Label:
    """Read a CoNSeP .mat; `inst_type[k-1]` is the type of nucleus k of `inst_map`.

    Without `inst_type` each nucleus takes the most common `type_map` value under it.
    """
    try:
        mat = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError, NotImplementedError) as err:
        raise DataError(f"{path}: not a readable .mat file ({err})") from err
    if "inst_map" not in mat or ("inst_type" not in mat and "type_map" not in mat):
        found = ", ".join(k for k in mat if not k.startswith("_"))
        raise DataError(
            f"{path}: a CoNSeP label needs 'inst_map' and 'inst_type' or 'type_map'; "
            f"found {found}"
        )
    inst_map = np.asarray(mat["inst_map"]).astype(np.int64)
    n = int(inst_map.max())
    if "inst_type" in mat:
        inst_type = np.asarray(mat["inst_type"]).astype(np.int64).reshape(-1)
        if inst_type.size < n:
            raise DataError(f"{path}: inst_map has nucleus {n} but inst_type only "
                            f"{inst_type.size} rows")  # fmt: skip
    else:
        type_map = np.asarray(mat["type_map"]).astype(np.int64)
        inst_type = np.zeros(n, np.int64)
        for k in range(1, n + 1):
            values = type_map[inst_map == k]
            if values.size:
                inst_type[k - 1] = np.bincount(values).argmax()
    return Label(inst_map, inst_type[:n])


def find_pairs(src: Path) -> dict[str, list[tuple[Path, Path]]]:
    """(image, label) pairs per our split; a one-line error when `src` is not CoNSeP."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for folder, split in SPLITS.items():
        images_dir, labels_dir = src / folder / "Images", src / folder / "Labels"
        if not (images_dir.is_dir() and labels_dir.is_dir()):
            continue
        images = {p.stem: p for p in sorted(images_dir.iterdir())
                  if p.suffix.lower() in IMAGE_EXTENSIONS}  # fmt: skip
        labels = {p.stem: p for p in sorted(labels_dir.glob("*.mat"))}
        missing = sorted(set(images) - set(labels))
        if missing:
            raise DataError(
                f"{images[missing[0]]}: no label {labels_dir / (missing[0] + '.mat')} "
                f"({len(missing)} images lack one)"
            )
        if images:
            pairs[split] = [(images[s], labels[s]) for s in sorted(images)]
    if not pairs:
        raise DataError(
            f"{src}: not a CoNSeP folder (expected Train/ or Test/ with Images/*.png|jpg and "
            "Labels/*.mat)"
        )
    return pairs


def detect_types(labels: list[Path]) -> int:
    """7 if any label file has a type above 4 (CoNSeP's own types), else 4 (merged)."""
    for path in labels:
        if read_label(path).inst_type.max(initial=0) > 4:
            return 7
    return 4


def class_masks(
    label: Label, classes: dict[int, str], merge: bool
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(target, mask (H, W) bool, instance ids (H, W)) of each class, in class order."""
    types = MERGE_7_TO_4[label.inst_type] if merge else label.inst_type
    if types.max(initial=0) > max(classes):
        raise DataError(f"nucleus type {types.max()} is not one of {sorted(classes)}")
    lookup = np.concatenate([[0], types])  # type of each instance id; 0 -> background
    pixel_type = lookup[label.inst_map]
    for type_id, target in classes.items():
        mask = pixel_type == type_id
        yield target, mask, np.where(mask, label.inst_map, 0)


def convert_consep(
    src: str | Path,
    out: str | Path,
    *,
    classes: int = 4,
    tile: int | None = None,
    absent: str = "empty",
    progress: bool = False,
) -> dict:
    """Convert a CoNSeP folder into `out` (BiomedParse layout); returns the writer's summary.

    `classes`: 4 (HoVer-Net's merge) or 7 (CoNSeP's own; the labels must carry them).
    `tile`: cut images larger than `tile` into `tile`-sized tiles (`tile_origins`); None
    keeps them whole. `absent`: "empty" writes a class missing from an image as an empty mask,
    "skip" leaves it out.
    """
    if classes not in (4, 7):
        raise ValueError(f"classes must be 4 or 7, got {classes}")
    if tile is not None and tile < 32:
        raise ValueError(f"tile must be at least 32 pixels, got {tile}")
    src = Path(src)
    pairs = find_pairs(src)
    label_types = detect_types([lab for items in pairs.values() for _, lab in items])
    if classes == 7 and label_types == 4:
        raise DataError(f"{src}: the labels carry HoVer-Net's 4 merged types, not CoNSeP's 7; "
                        "use --classes 4")  # fmt: skip
    names = CLASSES_7 if classes == 7 else CLASSES_4
    info = {"classes": classes, "label_types": label_types, "tile": tile}
    writer = DatasetWriter(Path(out), consep_sentences, "CoNSeP nuclei (converted)", absent, info)
    total = sum(len(v) for v in pairs.values())
    with tqdm(total=total, disable=not progress, desc="consep", unit="img") as bar:
        for split, items in pairs.items():
            for image_path, label_path in items:
                image = read_image(image_path)
                label = read_label(label_path)
                if label.inst_map.shape != image.shape[:2]:
                    raise DataError(f"{label_path}: inst_map {label.inst_map.shape} differs "
                                    f"from its image {image.shape[:2]}")  # fmt: skip
                merged = list(class_masks(label, names, merge=label_types == 7 and classes == 4))
                height, width = image.shape[:2]
                for y in tile_origins(height, tile):
                    for x in tile_origins(width, tile):
                        window = np.s_[y : y + (tile or height), x : x + (tile or width)]
                        tiled = tile is not None and (height > tile or width > tile)
                        image_id = f"{image_path.stem}-y{y}x{x}" if tiled else image_path.stem
                        targets = [TargetMask(t, m[window], i[window]) for t, m, i in merged]
                        writer.add(split, image_id, np.ascontiguousarray(image[window]),
                                   MODALITY, SITE, targets,
                                   {"source": f"{image_path.parent.parent.name}/{image_path.name}",
                                    "origin": [y, x]})  # fmt: skip
                bar.update()
    return writer.finish()

