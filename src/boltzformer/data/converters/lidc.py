"""LIDC-IDRI (TCIA layout: DICOM series with the readers' nodule XML) -> the BiomedParse layout.

    SRC/LIDC-IDRI-XXXX/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm + <n>.xml

SRC may hold many cases, or be one case or one series folder (the case: the LIDC-IDRI-XXXX
folder above the series, else its PatientID). Every folder holding a LIDC
XML (`lidc_xml.py`) and a DICOM series is one volume: its slices sorted by position
(`dicom_series.py`), shown through a CT window (lung by default), each written as
`<case>-<slice>_CT_lung.png` with one target, "lung nodule": the readers' outlines combined
at `agreement` (`lidc_xml.consensus`), each nodule its own id in the instance map. Slices
without a nodule are absent targets, thinned to every n-th (and, with `margin`, only those
within `margin` slices of a nodule). Each slice records its volume, its index and its
SOPInstanceUID; each volume its series' affine, so that `nifti.stack_slices` stacks masks
back into a NIfTI on the series' grid. The split is by case (patient).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..dicom_series import read_dicom_series, series_files
from ..errors import DataError
from ..medio import is_dicom, parse_window, read_dicom_dataset
from .dataset_writer import DatasetWriter, TargetMask
from .lidc_xml import (
    annotation_mask,
    cluster,
    consensus,
    is_lidc_xml,
    read_annotations,
    slice_of,
)
from .nifti import case_splits

LIDC_TARGET, LIDC_MODALITY, LIDC_SITE = "lung nodule", "CT", "lung"


@dataclass(frozen=True)
class LidcSeries:
    """One annotated series: its case (patient) name, its DICOM files and its XML."""

    case: str
    folder: Path
    files: list[Path]
    xml: Path


def lidc_sentences(target: str, modality: str, site: str) -> list[str]:
    """Prompts of a nodule mask, the plainest first (`site` is "lung": the prompt says chest)."""
    return [
        f"{target} in chest {modality}",
        f"{target} in {modality}",
        f"pulmonary nodule on this {site} {modality} slice",
        f"segment the {target} in the chest {modality} image",
    ]


def _case_name(folder: Path, first_file: Path) -> str:
    """The LIDC-IDRI-XXXX folder at or above `folder`, else the DICOM PatientID, else the
    series folder's name."""
    for part in (folder, *folder.resolve().parents):
        if part.name.upper().startswith("LIDC-IDRI-"):
            return part.name
    patient = str(read_dicom_dataset(first_file, header_only=True).get("PatientID", "")).strip()
    return patient or folder.name


def find_series(src: Path) -> list[LidcSeries]:
    """Every series folder at or below `src` with a LIDC XML; one-line errors otherwise."""
    if not src.is_dir():
        raise DataError(f"{src}: folder not found")
    folders = sorted({src, *(p for p in src.rglob("*") if p.is_dir())})
    found = []
    for folder in folders:
        xmls = sorted(p for p in folder.glob("*.xml") if is_lidc_xml(p))
        if not xmls:
            continue
        if len(xmls) > 1:
            raise DataError(f"{folder}: {len(xmls)} LIDC XML files; a series folder holds one")
        files = series_files(folder)
        if files is None:
            raise DataError(f"{folder}: a LIDC XML without a DICOM series beside it (at least "
                            "two DICOM slices of one series)")  # fmt: skip
        found.append(LidcSeries(_case_name(folder, files[0]), folder, files, xmls[0]))
    if found:
        return found
    if any(is_dicom(p) for p in src.rglob("*") if p.is_file() and p.suffix.lower() != ".xml"):
        raise DataError(f"{src}: DICOM files but no LIDC XML (a LidcReadMessage .xml beside the "
                        "slices); is this LIDC-IDRI in the TCIA layout?")  # fmt: skip
    raise DataError(f"{src}: no DICOM series with a LIDC XML (expected LIDC-IDRI-XXXX/<study>/"
                    "<series>/*.dcm + <n>.xml, as TCIA's download)")  # fmt: skip


@dataclass
class Nodules:
    """A series' combined nodules: per slice the (H, W) instance ids (1..n), and counts."""

    ids: dict[int, np.ndarray]
    count: int
    readers: list[int]
    points: int
    unmatched: int


def series_nodules(series: LidcSeries, datasets: Sequence[Any], shape: tuple[int, int],
                   agreement: float) -> Nodules:
    """The XML's annotations on this series' slices, clustered and combined."""
    sop_index = {str(ds.SOPInstanceUID): k for k, ds in enumerate(datasets)}
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    tolerance = 0.5 * (abs(z[-1] - z[0]) / max(len(z) - 1, 1))
    annotations = read_annotations(series.xml)
    outlined = [a for a in annotations if not a.is_point]
    masks, rois, matched = [], 0, 0
    for ann in outlined:
        slices: dict[int, list] = {}
        for roi in ann.rois:
            rois += 1
            k = slice_of(roi, sop_index, z, tolerance)
            if k is not None:
                matched += 1
                slices.setdefault(k, []).append(roi)
        masks.append(annotation_mask(ann, slices, shape))
    if rois and not matched:
        raise DataError(f"{series.xml}: none of its {rois} outlines is on a slice of "
                        f"{series.folder} (by SOPInstanceUID or z position); wrong series?")
    ids: dict[int, np.ndarray] = {}
    readers = []
    groups = [g for g in cluster(masks) if any(masks[i] for i in g)]
    for number, group in enumerate(groups, start=1):
        planes, n = consensus([masks[i] for i in group], [outlined[i].reader for i in group],
                              agreement)  # fmt: skip
        readers.append(n)
        for k, plane in planes.items():
            ids.setdefault(k, np.zeros(shape, np.int32))[plane] = number
    return Nodules(ids, len(groups), readers, len(annotations) - len(outlined), rois - matched)


def _keep_empty(k: int, nodule_slices: list[int], empties: int, every: int,
                margin: int | None) -> bool:
    """Whether an empty slice is written: within `margin` of a nodule (if given) and every
    `every`-th of the empty slices so far (`empties` counts this one)."""
    if margin is not None and not any(abs(k - j) <= margin for j in nodule_slices):
        return False
    return (empties - 1) % every == 0


def convert_lidc(
    src: str | Path,
    out: str | Path,
    *,
    window: str | tuple[float, float] | None = "lung",
    agreement: float = 0.5,
    empty_every: int = 5,
    margin: int | None = None,
    test_fraction: float = 0.2,
    test_cases: Sequence[str] | None = None,
    seed: int = 0,
    absent: str = "empty",
    progress: bool = False,
) -> dict:
    """Convert LIDC-IDRI series with their XML; returns the summary.

    `window`: a CT preset, "W,L", a (width, level) pair or None (the series' percentiles).
    `agreement`: share of a nodule's readers who must include a voxel (0 < a <= 1).
    `empty_every`, `margin`: which slices without a nodule are kept (see `_keep_empty`).
    The split is by case: `test_cases` by name, else a seeded `test_fraction` of the cases
    (one case: all in train, said in the summary's notes).
    """
    if not 0.0 < agreement <= 1.0:
        raise ValueError(f"--agreement must be in (0, 1], got {agreement}")
    if empty_every < 1 or (margin is not None and margin < 0):
        raise ValueError("--empty-every must be 1 or more and --margin 0 or more")
    shown = None if window is None else parse_window(window)
    found = find_series(Path(src))
    cases = sorted({s.case for s in found})
    splits = case_splits(cases, test_fraction, seed, test_cases)
    notes = []
    if len(cases) == 1 and not test_cases:
        notes.append(f"one case ({cases[0]}): everything is in train; a test split needs "
                     "two cases or more (or --test-cases)")  # fmt: skip
    info = {"layout": "LIDC-IDRI", "window": shown, "agreement": agreement,
            "empty_every": empty_every, "margin": margin, "test_fraction": test_fraction,
            "test_cases": sorted(test_cases or []), "seed": seed}  # fmt: skip
    writer = DatasetWriter(Path(out), lidc_sentences, "LIDC-IDRI lung nodules (converted)",
                           absent, info)  # fmt: skip
    kept = dropped = nodules = points = unmatched = 0
    per_case = {c: sum(s.case == c for s in found) for c in cases}
    for index, series in enumerate(tqdm(found, disable=not progress, desc="series")):
        volume_name = series.case if per_case[series.case] == 1 else f"{series.case}-{index}"
        read = read_dicom_series(series.files, None if shown is None else f"{shown[0]},{shown[1]}")
        display, datasets = read.volume.display, read.datasets
        shape = (int(display.shape[0]), int(display.shape[1]))
        found_nodules = series_nodules(series, datasets, shape, agreement)
        nodules += found_nodules.count
        points += found_nodules.points
        unmatched += found_nodules.unmatched
        writer.add_volume(volume_name, {
            "source": str(series.folder.relative_to(Path(src)) if series.folder != Path(src)
                          else series.folder.name),
            "xml": series.xml.name, "shape": list(display.shape),
            "affine": np.asarray(read.volume.reference.affine).tolist(), "axis": 2,
            "plane": {"transpose": False, "flip_rows": False, "flip_cols": False},
            "orientation": "DICOM rows, columns, slices feet to head",
            "study_uid": str(datasets[0].get("StudyInstanceUID", "")),
            "series_uid": str(datasets[0].get("SeriesInstanceUID", "")),
            "sop_uids": [str(ds.SOPInstanceUID) for ds in datasets],
            "nodules": found_nodules.count, "readers_per_nodule": found_nodules.readers,
        })  # fmt: skip
        with_nodule = sorted(found_nodules.ids)
        empties = 0
        for k in range(display.shape[2]):
            ids = found_nodules.ids.get(k, np.zeros(shape, np.int32))
            if not ids.any():
                empties += 1
                if not _keep_empty(k, with_nodule, empties, empty_every, margin):
                    dropped += 1
                    continue
            kept += 1
            writer.add(splits[series.case], f"{volume_name}-{k:04d}",
                       np.ascontiguousarray(display[:, :, k]), LIDC_MODALITY, LIDC_SITE,
                       [TargetMask(LIDC_TARGET, ids > 0, ids)],
                       {"volume": volume_name, "slice": k,
                        "sop_uid": str(datasets[k].SOPInstanceUID)})  # fmt: skip
    if points:
        notes.append(f"{points} nodules < 3 mm (one centre point, no outline) left out")
    if unmatched:
        notes.append(f"{unmatched} outlines on no slice of their series left out")
    return writer.finish() | {"volumes": len(found), "slices": kept, "dropped_slices": dropped,
                              "layout": "LIDC-IDRI", "cases": len(cases), "nodules": nodules,
                              "notes": notes}  # fmt: skip
