"""Segment a user's files from text prompts and write the results: what `boltzformer predict`
does after parsing, callable from Python (`predict_files`).

An input is an image or DICOM slice (PNG masks and probabilities), a NIfTI volume or a DICOM
series folder (NIfTI masks with its affine, segmented slice by slice), or a folder of images
(each as it would be alone, in sub-folders). DICOM inputs also get a DICOM SEG
(`data.dicom_seg`). Every input gets `predictions.json` and an overlay figure.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from boltzformer.data.dicom_seg import write_dicom_seg
from boltzformer.data.dicom_series import DicomSeries, read_dicom_series, series_files
from boltzformer.data.errors import DataError
from boltzformer.data.inputs import (
    Volume,
    file_names,
    folder_files,
    is_volume,
    read_plane,
    read_planes,
    read_volume,
    to_uint8,
    window_for,
)
from boltzformer.data.medio import (
    IMAGE_EXTENSIONS,
    is_dicom,
    nifti_slices,
    parse_window,
    read_dicom_dataset,
    stack_slices,
    write_nifti_float,
    write_nifti_mask,
)
from boltzformer.inference import viz
from boltzformer.inference.predictor import Prediction, Predictor
from boltzformer.modeling.text_encoder import check_prompts

RESULTS_FILE = "predictions.json"
#: The DICOM SEG of a DICOM input (a slice or a series), all prompts in one object.
SEG_FILE = "segmentation.dcm"


@dataclass(frozen=True)
class PredictOptions:
    """How `predict_files` answers and what it writes (the `predict` command's options):
    the mask `threshold`, `samples` decoder draws (K > 1: mean and std), `batch_size` slices or
    images encoded together, the CT `window` (a preset or "W,L"; DICOM and NIfTI), the NIfTI
    `axis` to slice along, `dicom_seg` (a DICOM SEG for DICOM inputs), and the `checkpoint`
    recorded in predictions.json. Checked when made (one-line ValueErrors)."""

    threshold: float = 0.5
    samples: int = 1
    batch_size: int = 8
    window: str | None = None
    axis: int = 2
    dicom_seg: bool = True
    checkpoint: Path | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"--samples {self.samples}: give at least 1 sampling draw")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(
                f"--threshold {self.threshold}: a probability threshold is in [0, 1]")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: give at least 1")
        if self.window is not None:
            parse_window(self.window)  # refused before any file is read


def predict_files(
    predictor: Predictor, source: Path, prompts: list[str], out: Path,
    options: PredictOptions | None = None,
) -> dict:
    """Answer `prompts` on `source` (an image, DICOM slice, NIfTI volume, DICOM series folder
    or folder of images) with `predictor` and write the files into the folder `out` (created;
    files in it replaced); returns what it writes to `out`/predictions.json. Prints one line
    when done, and one per target not found or file skipped."""
    options = options or PredictOptions()
    prompts = check_prompts(prompts, what="--prompt")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    names = file_names(prompts)
    series: DicomSeries | None = None
    if source.is_dir():
        files = series_files(source)
        if files is None:
            return _predict_folder(predictor, source, prompts, names, out, options)
        series = read_dicom_series(files, options.window)
        volume, options = series.volume, replace(options, axis=2)  # sliced as its files are
    elif is_volume(source):
        volume = read_volume(source, options.window, options.axis)
    else:
        return _predict_plane(predictor, source, prompts, names, out, options)
    out.mkdir(parents=True, exist_ok=True)
    records, masks = _predict_volume(predictor, volume, prompts, names, out, options)
    summary = _summary(predictor, options, source, "volume" if series is None else "series",
                       options.window, axis=options.axis, shape=list(volume.reference.shape),
                       prompts=records)
    if series is not None:
        summary["slices"] = [p.name for p in series.paths]  # in the order of voxel axis 2
        if options.dicom_seg:
            summary["dicom_seg"] = _seg(series.datasets, masks, prompts, out)
    return _finish(summary, out, f"wrote {len(records)} prediction(s) for {source.name} to "
                   f"{out}/")


def _predict_plane(
    predictor: Predictor, source: Path, prompts: list[str], names: list[str], out: Path,
    options: PredictOptions,
) -> dict:
    """An image or DICOM slice: PNGs (and a DICOM SEG for DICOM) in `out`."""
    plane = read_plane(source, options.window)
    out.mkdir(parents=True, exist_ok=True)
    predictor.set_image(plane)
    pred = predictor.predict(prompts, samples=options.samples)
    masks = Predictor.threshold(pred.prob, options.threshold)  # (P, H, W)
    records = _write_plane(plane, pred, masks, names, out, options)
    summary = _summary(predictor, options, source, "image", options.window, axis=None,
                       shape=list(plane.shape[:2]), prompts=records)
    if _dicom_file(source) and options.dicom_seg:
        summary["dicom_seg"] = _seg([read_dicom_dataset(source, header_only=True)],
                                    masks[:, None], prompts, out)
    return _finish(summary, out, f"wrote {len(records)} prediction(s) for {source.name} to "
                   f"{out}/")


def _dicom_file(path: Path) -> bool:
    return not path.name.lower().endswith(IMAGE_EXTENSIONS) and is_dicom(path)


def _finish(summary: dict, out: Path, line: str) -> dict:
    (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    print(line)
    return summary


def _seg(sources: list, masks: np.ndarray, prompts: list[str], out: Path) -> str | None:
    """The DICOM SEG of `masks` (P, N, H, W) over `sources` at OUT/segmentation.dcm; its file
    name, or None (and one line saying why) when these images cannot carry one."""
    try:
        write_dicom_seg(sources, masks, prompts, out / SEG_FILE)
    except DataError as err:
        tqdm.write(f"no DICOM SEG written: {err}")
        return None
    return SEG_FILE


def _save_png(array: np.ndarray, path: Path) -> str:
    """Write an (H, W) uint8 array as PNG; returns its file name."""
    Image.fromarray(array).save(path)
    return path.name


def _write_float(values: np.ndarray, volume: Volume, path: Path) -> str:
    """Probabilities or stds in voxel order, with the input's shape, affine and header; returns
    the file name."""
    write_nifti_float(values.reshape(volume.reference.shape), volume.reference, path)
    return path.name


def _write_plane(
    image: np.ndarray, pred: Prediction, masks: np.ndarray, names: list[str], out: Path,
    options: PredictOptions, where: str = "",
) -> list[dict]:
    """The files of one image's prediction (`masks` (P, H, W) its thresholded answers) in
    `out`; one record per prompt (`_record`)."""
    records, panels = [], []
    for i, (prompt, name) in enumerate(zip(pred.prompts, names)):
        files = {
            "mask": _save_png(masks[i].astype(np.uint8) * 255, out / f"{name}_mask.png"),
            "prob": _save_png(to_uint8(pred.prob[i] * 255), out / f"{name}_prob.png"),
        }
        if pred.std is not None:
            files["std"] = _save_png(to_uint8(pred.std[i] * 510), out / f"{name}_std.png")
            files["uncertainty"] = _uncertainty(
                image, pred.prob[i], pred.std[i], prompt, pred.samples, options, out / name
            )
        records.append(_record(prompt, masks[i], files, pred, i, where))
        panels.append(viz.GridItem(image, pred.prob[i], caption=prompt))
    viz.prediction_grid(panels, out / "overlay.png", threshold=options.threshold)
    return records


def _predict_volume(
    predictor: Predictor, volume: Volume, prompts: list[str], names: list[str], out: Path,
    options: PredictOptions,
) -> tuple[list[dict], np.ndarray]:
    """A volume's prompts slice by slice along `options.axis`, written as NIfTI; the records
    and the masks (P, N, A, B), slices first."""
    axis = options.axis
    slices = nifti_slices(volume.display, axis)  # (N, A, B)
    pred = predictor.predict_slices(
        slices, prompts, batch_size=options.batch_size, samples=options.samples, progress=True
    )
    masks = Predictor.threshold(pred.prob, options.threshold)  # (P, N, A, B)
    records, panels = [], []
    for i, (prompt, name) in enumerate(zip(prompts, names)):
        mask = masks[i]
        write_nifti_mask(stack_slices(mask, axis).reshape(volume.reference.shape),
                         volume.reference, out / f"{name}_mask.nii.gz")
        files = {
            "mask": f"{name}_mask.nii.gz",
            "prob": _write_float(stack_slices(pred.prob[i], axis), volume,
                                 out / f"{name}_prob.nii.gz"),
        }
        if mask.any():
            k, why = int(mask.sum(axis=(1, 2)).argmax()), "largest mask"
        else:
            k, why = len(slices) // 2, "middle slice, mask empty"
        caption = f"{prompt}: axis {axis} slice {k} ({why})"
        if pred.std is not None:
            files["std"] = _write_float(stack_slices(pred.std[i], axis), volume,
                                        out / f"{name}_std.nii.gz")
            files["uncertainty"] = _uncertainty(
                slices[k], pred.prob[i, k], pred.std[i, k], caption, pred.samples, options,
                out / name,
            )
        records.append(_record(prompt, mask, files, pred, i) | {"shown_slice": k})
        panels.append(viz.GridItem(slices[k], pred.prob[i, k], caption=caption))
    viz.prediction_grid(panels, out / "overlay.png", threshold=options.threshold)
    return records, masks


def _uncertainty(
    image: np.ndarray, prob: np.ndarray, std: np.ndarray, caption: str, samples: int,
    options: PredictOptions, stem: Path,
) -> str:
    """The uncertainty figure of one prompt on one (H, W) plane, at STEM_uncertainty.png;
    returns its file name."""
    path = stem.parent / f"{stem.name}_uncertainty.png"
    viz.uncertainty_figure(
        image, prob, std, caption=caption, samples=samples, threshold=options.threshold,
        path=path,
    )
    return path.name


def _record(
    prompt: str, mask: np.ndarray, files: dict, pred: Prediction, i: int, where: str = ""
) -> dict:
    """One prompt's entry in predictions.json; with the existence head also its existence
    probability, with a size floor whether the answer was under it, with --min-score whether
    it scored below it, and `found` (an image),
    or all of these per slice and the slices found (a volume), and a line on the terminal
    for a target not found (its mask is written empty), after `where` (the image's name in a
    folder)."""
    record = {"prompt": prompt, "files": files, "foreground_fraction": float(mask.mean())}
    if pred.std is not None:
        record["mean_std"] = float(pred.std[i].mean())
    if pred.found is None:
        return record
    found = pred.found[i]
    if pred.exists is not None:
        record["existence"] = (float(pred.exists[i]) if found.ndim == 0
                               else [round(float(e), 4) for e in pred.exists[i]])
    if pred.floored is not None:
        record["under_size_floor"] = (bool(pred.floored[i]) if found.ndim == 0
                                      else [bool(f) for f in pred.floored[i]])
    if pred.unsure is not None:
        record["below_min_score"] = (bool(pred.unsure[i]) if found.ndim == 0
                                     else [bool(u) for u in pred.unsure[i]])
    record["found"] = bool(found.any())
    if found.ndim:  # a volume: the head, the floor and the gate decide per slice
        record["slices_found"] = int(found.sum())
    if not found.any():
        why = []
        if pred.exists is not None and (pred.exists[i] < pred.existence_threshold).any():
            why.append(f"existence {float(pred.exists[i].min()):.2f} < "
                       f"{pred.existence_threshold:g}")
        if pred.floored is not None and pred.floored[i].any():
            why.append("smaller than the target's size floor")
        if pred.unsure is not None and pred.unsure[i].any():
            why.append("mask score below --min-score")
        tqdm.write(f"{where}{prompt!r}: not found ({'; '.join(why)}); its mask is empty")
    return record


def _summary(
    predictor: Predictor, options: PredictOptions, source: Path, kind: str,
    window: str | None, **extra: object,
) -> dict:
    """An input's predictions.json: what was read, the settings, and `extra`."""
    return {"input": str(source), "kind": kind,
            "checkpoint": None if options.checkpoint is None else str(options.checkpoint),
            "window": window, "threshold": options.threshold, "samples": options.samples,
            "seed": predictor.seed, "min_score": predictor.min_score,
            "existence_threshold": predictor.existence_threshold,
            "window_size": 0 if predictor.windows is None else predictor.windows.size, **extra}


def _predict_folder(
    predictor: Predictor, source: Path, prompts: list[str], names: list[str], out: Path,
    options: PredictOptions,
) -> dict:
    """Every image of the folder `source`, `options.batch_size` at a time through the
    encoder; one sub-folder of `out` per image as `predict_files` writes for it alone, and
    the folder's predictions.json. Unreadable files are skipped with one line each."""
    files = folder_files(source)
    if files.others:
        shown = ", ".join(p.name for p in files.others[:3])
        more = ", ..." if len(files.others) > 3 else ""
        hint = ("; give a NIfTI volume as --input on its own"
                if any(is_volume(p) for p in files.others) else "")
        print(f"not read: {len(files.others)} file(s) that are not images or DICOM "
              f"({shown}{more}){hint}")
    skipped: list[dict] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"file": path.name, "reason": reason})
        tqdm.write(f"skipped {reason}")

    read: deque[tuple[Path, np.ndarray]] = deque()  # read, not yet answered

    def planes() -> Iterator[np.ndarray]:
        for path, plane in read_planes(files.planes, options.window, skip):
            read.append((path, plane))
            yield plane

    images: list[dict] = []
    used = {RESULTS_FILE}
    for pred in predictor.predict_images(
        planes(), prompts, batch_size=options.batch_size, samples=options.samples,
        progress=True, total=len(files.planes),
    ):
        path, plane = read.popleft()
        sub = _unique(path.stem, used)
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        masks = Predictor.threshold(pred.prob, options.threshold)
        records = _write_plane(plane, pred, masks, names, folder, options,
                               where=f"{path.name}: ")
        summary = _summary(predictor, options, path, "image", window_for(path, options.window),
                           axis=None, shape=list(plane.shape[:2]), prompts=records)
        if _dicom_file(path) and options.dicom_seg:
            summary["dicom_seg"] = _seg([read_dicom_dataset(path, header_only=True)],
                                        masks[:, None], prompts, folder)
        (folder / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
        images.append({"file": path.name, "folder": sub, "shape": list(plane.shape[:2]),
                       "prompts": records})
    if not images:
        raise ValueError(f"--input {source}: none of its {len(files.planes)} image file(s) "
                         "could be read")
    summary = _summary(predictor, options, source, "folder", options.window,
                       batch_size=options.batch_size, images=images, skipped=skipped,
                       not_read=[p.name for p in files.others])
    return _finish(summary, out, f"wrote predictions for {len(images)} image(s) of {source} "
                   f"to {out}/" + (f" ({len(skipped)} skipped)" if skipped else ""))


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... the first not in `used` (which it joins)."""
    unique, n = name, 2
    while unique in used:
        unique, n = f"{name}-{n}", n + 1
    used.add(unique)
    return unique
