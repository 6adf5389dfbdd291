"""NIfTI volumes with structure masks -> 2D slices in the BiomedParse layout, and back.

Two source layouts:
- per-structure mask files (TotalSegmentator): `<case>/ct.nii.gz` + `<case>/segmentations/
  <structure>.nii.gz` per case, or one image `X.nii.gz` beside one folder of
  `<structure>.nii.gz` (as TotalSegmentator's own example);
- one label volume per image and the names in `dataset.json` (Medical Segmentation
  Decathlon): `imagesTr/<case>.nii.gz` (or `<case>_0000.nii.gz`), `labelsTr/<case>.nii.gz`,
  "labels": {"0": "background", "1": "liver", ...} (or {"liver": 1, ...}).

Slices are cut along one voxel axis of the source (default: the one nearest the patient's
superior-inferior axis, i.e. axial) and shown in one orientation whatever the file's voxel
order: rows run anterior -> posterior (axial) or superior -> inferior (coronal, sagittal),
columns run patient right -> left (axial, coronal; radiological) or anterior -> posterior
(sagittal). That is a transpose and flips of the plane, recorded per volume ("plane") so that
`stack_slices` puts masks back on the source's own voxel grid, exactly. Each slice records
its volume and its index along `axis` in the source file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from tqdm import tqdm

from ..errors import DataError
from ..medio import apply_window, parse_window, read_mask, read_nifti
from .dataset_writer import DatasetWriter, TargetMask, split_by_name
from .ms_lesions import (
    MS_SITE,
    MS_TARGET,
    brain_display,
    find_ms_cases,
    is_ms_layout,
    lesion_instances,
    ms_modality,
    parse_sequences,
)

NIFTI_ENDINGS = (".nii.gz", ".nii")
#: The plane axis by name -> the world axis (RAS: 0 x, 1 y, 2 z) it is perpendicular to.
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
#: World axes of (rows, columns) of a plane, by the world axis of the slicing direction.
_PLANE_WORLD = {2: (1, 0), 1: (2, 0), 0: (2, 1)}
#: Decathlon tasks (by a word in the data set's name) -> site in the image names.
_MSD_SITES = {"brain": "brain", "hippocampus": "brain", "heart": "heart", "lung": "chest",
              "prostate": "prostate"}  # fmt: skip


def nifti_stem(path: Path) -> str:
    """File name without .nii / .nii.gz."""
    name = path.name
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return path.stem


def _niftis(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.name.endswith(NIFTI_ENDINGS) and not p.name.startswith("."))  # fmt: skip


def structure_name(file_stem: str) -> str:
    """A TotalSegmentator file stem as a target: `adrenal_gland_left` -> `left adrenal gland`,
    `rib_left_1` -> `left rib 1` (the side moves to the front)."""
    words = file_stem.replace("-", " ").replace("_", " ").split()
    sides = [w for w in words if w in ("left", "right")]
    return " ".join(sides[:1] + [w for w in words if w not in sides[:1]])


@dataclass(frozen=True)
class Case:
    """One source volume: its image, its structures (target -> mask file, or label value
    in `label_file`), and where the names came from."""

    name: str
    image: Path
    structures: dict[str, Path | int]
    label_file: Path | None = None
    #: several sequences (the MS layout): the channels of an RGB image, `image` the first
    sequences: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Plane:
    """How a source slice becomes the written image: transpose, then flip rows / columns."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool

    def show(self, plane: np.ndarray) -> np.ndarray:
        """Source slice (A, B) or (A, B, C) -> written image orientation."""
        out = np.swapaxes(plane, 0, 1) if self.transpose else plane
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out)

    def back(self, image: np.ndarray) -> np.ndarray:
        """Written image -> source slice (the inverse of `show`)."""
        out = image[::-1] if self.flip_rows else image
        if self.flip_cols:
            out = out[:, ::-1]
        return np.ascontiguousarray(out.T if self.transpose else out)


def slice_axis(affine: np.ndarray, axis: str | int) -> int:
    """The voxel axis to slice along: 0-2 as given, or the one nearest a named direction."""
    if isinstance(axis, int) or str(axis).isdigit():
        value = int(axis)
        if value not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (or {', '.join(AXES)}), got {value}")
        return value
    if axis not in AXES:
        raise ValueError(f"unknown axis {axis!r}: use {', '.join(AXES)} or 0, 1, 2")
    ornt = nib.orientations.io_orientation(affine)
    return int(np.flatnonzero(ornt[:, 0] == AXES[axis])[0])


def plane_for(affine: np.ndarray, axis: int) -> Plane:
    """The transpose and flips that show slices along voxel `axis` in the module's
    orientation (rows to posterior or inferior, columns to the patient's left or posterior)."""
    ornt = nib.orientations.io_orientation(affine)  # per voxel axis: (world axis, +1 or -1)
    first, second = (i for i in range(3) if i != axis)
    rows_world, _ = _PLANE_WORLD[int(ornt[axis, 0])]
    transpose = int(ornt[first, 0]) != rows_world
    row_axis, col_axis = (second, first) if transpose else (first, second)
    # +1 points to R, A or S; every wanted direction (L, P, I) is -1
    return Plane(transpose, bool(ornt[row_axis, 1] > 0), bool(ornt[col_axis, 1] > 0))


def find_cases(
    src: Path, sequences: tuple[str, ...] = ("FLAIR",)
) -> tuple[str, list[Case], dict[str, Any]]:
    """(layout, cases, dataset.json or {}); a one-line error when `src` is no layout known.
    `sequences`: the MS layout's sequences to read (one: grey; three: RGB)."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    if (src / "dataset.json").is_file() and (src / "labelsTr").is_dir():
        return ("decathlon", *_decathlon_cases(src))
    if is_ms_layout(src):
        return "ms lesions", [Case(c.name, c.sequences[0], {MS_TARGET: c.mask}, None,
                                   c.sequences) for c in find_ms_cases(src, sequences)], {}
    cases = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        image = folder / "ct.nii.gz"
        if image.is_file() and (folder / "segmentations").is_dir():
            masks = _niftis(folder / "segmentations")
            cases.append(Case(folder.name, image, {structure_name(nifti_stem(m)): m
                                                   for m in masks}))  # fmt: skip
    if cases:
        return "structure files", cases, {}
    images = _niftis(src)
    folders = [p for p in sorted(src.iterdir()) if p.is_dir() and _niftis(p)]
    if len(images) == 1 and len(folders) == 1:
        masks = _niftis(folders[0])
        structures: dict[str, Path | int] = {structure_name(nifti_stem(m)): m for m in masks}
        return "structure files", [Case(nifti_stem(images[0]), images[0], structures)], {}
    raise DataError(
        f"{src}: not a NIfTI layout this converter knows (expected dataset.json with imagesTr/ "
        "and labelsTr/, <case>/ct.nii.gz with <case>/segmentations/*.nii.gz, one image "
        ".nii.gz beside one folder of per-structure .nii.gz masks, or patient folders with "
        "FLAIR_*.nii.gz and a GOLD_STANDARD_*.nii.gz lesion mask)"
    )


def _decathlon_cases(src: Path) -> tuple[list[Case], dict[str, Any]]:
    try:
        meta = json.loads((src / "dataset.json").read_text(encoding="utf-8"))
        labels = meta["labels"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{src / 'dataset.json'}: needs a readable 'labels' map ({err})") from err
    pairs = [(str(k), v) for k, v in labels.items()]
    # MSD: {"0": "background", "1": "liver"}; nnU-Net v2: {"background": 0, "liver": 1}
    by_value = {int(k): str(v) for k, v in pairs} if all(k.isdigit() for k, _ in pairs) else {
        int(v): k for k, v in pairs if isinstance(v, int)}  # fmt: skip
    names = {v: " ".join(n.lower().replace("_", " ").split())
             for v, n in by_value.items() if v != 0}  # fmt: skip
    if not names:
        raise DataError(f"{src / 'dataset.json'}: 'labels' names no structure besides 0")
    cases = []
    for label in _niftis(src / "labelsTr"):
        stem = nifti_stem(label)
        candidates = [src / "imagesTr" / f"{stem}{tail}{ending}" for tail in ("", "_0000")
                      for ending in NIFTI_ENDINGS]  # fmt: skip
        image = next((p for p in candidates if p.is_file()), None)
        if image is None:
            raise DataError(f"{label}: no image imagesTr/{stem}.nii.gz for this label volume")
        cases.append(Case(stem, image, {n: v for v, n in sorted(names.items())}, label))
    if not cases:
        raise DataError(f"{src / 'labelsTr'}: no label volumes (*.nii.gz)")
    return cases, meta


def _read_volume(path: Path, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(3D float32 volume, its 4x4 affine); `channel` of a 4D image."""
    volume, image = read_nifti(path)
    if volume.ndim == 4:
        if not 0 <= channel < volume.shape[3]:
            raise DataError(f"{path}: has {volume.shape[3]} channels; --channel {channel}")
        volume = volume[..., channel]
    if volume.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {volume.shape}")
    return volume, np.asarray(image.affine, float)


@dataclass(frozen=True)
class Structure:
    """One structure of a volume kept as its bounding box: `start` (3,) and a bool `crop`
    (memory: the box, not the volume, so a case with 100+ structures fits)."""

    target: str
    shape: tuple[int, ...]
    start: tuple[int, ...]
    crop: np.ndarray

    @classmethod
    def of(cls, target: str, mask: np.ndarray) -> Structure:
        where = np.argwhere(mask)
        if not where.size:
            return cls(target, mask.shape, (0, 0, 0), np.zeros((0, 0, 0), bool))
        low, high = where.min(axis=0), where.max(axis=0) + 1
        box = tuple(slice(a, b) for a, b in zip(low, high))
        return cls(target, mask.shape, tuple(int(v) for v in low), mask[box].copy())

    def plane(self, k: int, axis: int) -> np.ndarray:
        """Slice k along `axis` as a full (A, B) bool plane."""
        size = [n for i, n in enumerate(self.shape) if i != axis]
        out = np.zeros(size, bool)
        local = k - self.start[axis]
        if 0 <= local < self.crop.shape[axis]:
            a, b = (self.start[i] for i in range(3) if i != axis)
            part = np.take(self.crop, local, axis=axis)
            out[a : a + part.shape[0], b : b + part.shape[1]] = part
        return out


def _structures(case: Case, shape: tuple[int, ...]) -> Iterator[Structure]:
    """Each structure of a case, checked against the image's shape."""
    labels = None
    if case.label_file is not None:
        labels = np.rint(_read_volume(case.label_file, 0)[0]).astype(np.int64)
        if labels.shape != shape:
            raise DataError(f"{case.label_file}: shape {labels.shape} differs from its image "
                            f"{case.image.name} {shape}")  # fmt: skip
    for target, where in case.structures.items():
        if isinstance(where, int):
            assert labels is not None
            yield Structure.of(target, labels == where)
            continue
        mask = _read_volume(where, 0)[0] > 0
        if mask.shape != shape:
            raise DataError(f"{where}: shape {mask.shape} differs from its image "
                            f"{case.image.name} {shape}")  # fmt: skip
        yield Structure.of(target, mask)


def _display(volume: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Volume -> uint8 gray: through the window, or the volume's 0.5-99.5 percentiles."""
    if window is None:
        low, high = np.percentile(volume, [0.5, 99.5])
        width = max(float(high - low), 1e-6)
        window = (width, float(low) + width / 2)
    return np.rint(apply_window(volume, window)).astype(np.uint8)


def nifti_sentences(target: str, modality: str, site: str) -> list[str]:
    """Prompts of a structure on a slice, the plainest first."""
    return [
        f"{target} in {site} {modality}",
        f"{target} in {modality}",
        f"the {target} on this {modality} slice",
        f"segment the {target} in the {site} {modality} image",
    ]


def convert_nifti(
    src: str | Path,
    out: str | Path,
    *,
    axis: str | int = "axial",
    window: str | tuple[float, float] | None = "auto",
    modality: str | None = None,
    site: str | None = None,
    only_present: bool = False,
    drop_missing: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    channel: int = 0,
    absent: str = "empty",
    sequence: str | Sequence[str] = "FLAIR",
    test_cases: Sequence[str] | None = None,
    empty_every: int = 1,
    progress: bool = False,
) -> dict:
    """Cut NIfTI volumes into slices with one mask per structure; returns the summary.

    `window`: a CT preset of `medio.WINDOWS`, "W,L", a (width, level) pair, None (each
    volume's 0.5-99.5 percentiles) or "auto" ("abdomen" for CT, percentiles otherwise).
    `modality`: default CT for mask-file layouts, from dataset.json ("CT", else "MRI") for the
    Decathlon. `site`: default "abdomen" (Decathlon: from its name where known).
    `only_present`: keep only slices where some structure is present (default: every slice;
    structures absent from a slice are empty masks flagged absent, unless `absent="skip"`).
    `drop_missing`: leave out structures with no voxel in the whole volume (outside the
    field of view) instead of writing them as absent on every slice.
    Cases are split by `split_by_name`, or `test_cases` (names) are the test split;
    `channel` picks the channel of 4D images. `empty_every`: keep every n-th slice where
    no structure is present (1: all). Slices with no structure and a blank image (one value)
    are left out. MS layout: `sequence` "FLAIR" (grey) or three names "FLAIR,T1,T2" (RGB);
    modality `MRI-<sequences>`, site brain, one target with its lesions' instance maps.
    """
    src = Path(src)
    if empty_every < 1:
        raise ValueError(f"--empty-every must be 1 or more, got {empty_every}")
    layout, cases, meta = find_cases(src, parse_sequences(sequence))
    multi = layout == "ms lesions"
    if modality is None and multi:
        modality = ms_modality(parse_sequences(sequence))
    elif modality is None:
        given = str((meta.get("modality") or {}).get(str(channel), "CT")) if meta else "CT"
        modality = "CT" if given.upper() == "CT" else "MRI"
    if site is None:
        words = str(meta.get("name", "")).lower().replace("_", " ").split() if meta else []
        site = MS_SITE if multi else next((_MSD_SITES[w] for w in words if w in _MSD_SITES),
                                          "abdomen")  # fmt: skip
    if window == "auto":
        window = "abdomen" if modality == "CT" else None
    shown_window = None if window is None else parse_window(window)
    splits = case_splits([c.name for c in cases], test_fraction, seed, test_cases)
    info = {"layout": layout, "axis": str(axis), "window": shown_window,
            "only_present": only_present, "drop_missing": drop_missing,
            "test_fraction": test_fraction, "seed": seed, "empty_every": empty_every,
            "test_cases": sorted(test_cases or [])}  # fmt: skip
    if multi:
        info["sequences"] = list(parse_sequences(sequence))
    writer = DatasetWriter(Path(out), nifti_sentences, "NIfTI slices (converted)", absent, info)
    kept = dropped = 0
    for case in tqdm(cases, disable=not progress, desc="volumes", unit="vol"):
        shown, affine, shape = _case_image(case, channel, shown_window)
        k_axis = slice_axis(affine, axis)
        plane = plane_for(affine, k_axis)
        structures = [st for st in _structures(case, shape)
                      if st.crop.size or not drop_missing]  # fmt: skip
        writer.add_volume(case.name, {
            "source": case.image.name, "shape": list(shape),
            "affine": affine.tolist(), "axis": k_axis,
            "plane": {"transpose": plane.transpose, "flip_rows": plane.flip_rows,
                      "flip_cols": plane.flip_cols},
            "orientation": "".join(nib.aff2axcodes(affine)),
            "labels": case.label_file.name if case.label_file else None,
        } | ({"sequences": [p.name for p in case.sequences]} if case.sequences else {}))
        empties = 0
        for k in range(shape[k_axis]):
            image = plane.show(np.take(shown, k, axis=k_axis))
            masks = []
            for st in structures:
                mask = plane.show(st.plane(k, k_axis))
                ids = lesion_instances(mask) if multi else None
                masks.append(TargetMask(st.target, mask, ids))
            if not any(m.mask.any() for m in masks):
                # not wanted, nothing to see (a blank slice), or thinned out
                wanted = not only_present and image.min() != image.max()
                empties += wanted
                if not wanted or (empties - 1) % empty_every:
                    dropped += 1
                    continue
            kept += 1
            writer.add(splits[case.name], f"{case.name}-{k:04d}", image, modality, site, masks,
                       {"volume": case.name, "slice": k})  # fmt: skip
    return writer.finish() | {"volumes": len(cases), "slices": kept, "dropped_slices": dropped,
                              "layout": layout}  # fmt: skip


def case_splits(names: list[str], test_fraction: float, seed: int,
                test_cases: Sequence[str] | None) -> dict[str, str]:
    """name -> "train" | "test": the names in `test_cases` are test (a one-line error for a
    name that is not a case), else `split_by_name`'s seeded share."""
    if not test_cases:
        return split_by_name(names, test_fraction, seed)
    unknown = sorted(set(test_cases) - set(names))
    if unknown:
        raise DataError(f"--test-cases {unknown[0]}: no such case (cases: {', '.join(names)})")
    return {n: "test" if n in test_cases else "train" for n in names}


def _case_image(
    case: Case, channel: int, window: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(uint8 volume (X, Y, Z) or, for several sequences, (X, Y, Z, 3), its affine, its
    3D shape): each sequence through `window`, or its percentiles over the brain."""
    if not case.sequences:
        volume, affine = _read_volume(case.image, channel)
        return _display(volume, window), affine, volume.shape
    shown: list[np.ndarray] = []
    affines = []
    for path in case.sequences:
        volume, affine = _read_volume(path, 0)
        affines.append(affine)
        if shown and volume.shape != shown[0].shape:
            raise DataError(f"{path}: shape {volume.shape} differs from {case.image.name} "
                            f"{shown[0].shape}")  # fmt: skip
        if not np.allclose(affine, affines[0], atol=1e-3):
            raise DataError(f"{path}: its affine differs from {case.image.name}'s; the "
                            "sequences must share one voxel grid")  # fmt: skip
        shown.append(brain_display(volume) if window is None else _display(volume, window))
    stacked = shown[0] if len(shown) == 1 else np.stack(shown, axis=-1)
    return stacked, affines[0], shown[0].shape


def stack_slices(
    root: str | Path,
    split: str,
    case: str,
    target: str,
    *,
    mask_dir: str | Path | None = None,
    out_path: str | Path | None = None,
) -> Any:
    """Per-slice masks of one (case, target) stacked back into a NIfTI on the source grid.

    Reads `<root>/<split>.json` ("volumes" and the slices' "volume"/"slice"); the masks are
    the written ground truth, or files of the same names in `mask_dir` (e.g. predictions).
    Slices without a mask file stay 0. Returns a nibabel Nifti1Image (uint8 0/1) with the
    source's shape and affine; saved to `out_path` when given.
    """
    root = Path(root)
    json_path = root / f"{split}.json"
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        meta = data["volumes"][case]
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{json_path}: not a readable JSON file ({err})") from err
    except KeyError:
        raise DataError(f"{json_path}: no volume {case!r} (a split of NIfTI slices lists its "
                        "volumes under 'volumes')") from None  # fmt: skip
    plane = Plane(**meta["plane"])
    axis = int(meta["axis"])
    volume = np.zeros(meta["shape"], np.uint8)
    folder = Path(mask_dir) if mask_dir is not None else root / f"{split}_mask"
    slices = {img["id"]: int(img["slice"]) for img in data["images"]
              if img.get("volume") == case}  # fmt: skip
    for ann in data["annotations"]:
        if ann["image_id"] in slices and ann["target"] == target:
            path = folder / ann["mask_file"]
            if not path.is_file():
                continue
            planes = np.moveaxis(volume, axis, 0)  # a view: writing it fills `volume`
            planes[slices[ann["image_id"]]] = plane.back(read_mask(path))
    image = nib.Nifti1Image(volume, np.asarray(meta["affine"], float))
    if out_path is not None:
        nib.save(image, str(out_path))
    return image

