"""`boltzformer predict`: segment an image, DICOM slice, NIfTI volume or a folder of images
from text prompts."""

from __future__ import annotations

import argparse
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from boltzformer import viz
from boltzformer.commands._inference import add_input_options, add_model_options, load_predictor
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
    nifti_slices,
    parse_window,
    stack_slices,
    write_nifti_float,
    write_nifti_mask,
)
from boltzformer.modeling.text_encoder import check_prompts
from boltzformer.predictor import Prediction, Predictor
from boltzformer.train.run_dir import resolve_checkpoint

RESULTS_FILE = "predictions.json"

EPILOG = """\
examples:
  boltzformer predict --checkpoint ckpt/ --input 01_CT_lung.png \\
      --prompt "nodule in lung CT" --prompt "left lung in lung CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input slice.dcm --window lung \\
      --prompt "nodule in lung CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input ct.nii.gz --axis 2 --window abdomen \\
      --prompt "liver in abdomen CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input scans/ --batch-size 8 \\
      --prompt "nodule in lung CT" --out preds/
  boltzformer predict ... --samples 8     # mean and std over 8 sampling draws

output layout (OUT: the --out folder; NAME: the prompt in lower case, other
characters as '-', e.g. nodule-in-lung-ct):
  OUT/predictions.json         input, checkpoint, settings, and per prompt its files
  OUT/overlay.png              one panel per prompt: mask tinted green on the image
  images and DICOM, at the input's size:
    OUT/NAME_mask.png          binary mask, 0 and 255
    OUT/NAME_prob.png          probability x 255, 8-bit
    OUT/NAME_std.png           (--samples K > 1) std x 510, 8-bit (255 = 0.5, the most
                               a probability can vary)
    OUT/NAME_uncertainty.png   (--samples K > 1) prediction, mean probability, std
  NIfTI volumes, with the input's shape, affine and header:
    OUT/NAME_mask.nii.gz       uint8 mask, 0 and 1
    OUT/NAME_prob.nii.gz       float32 probability
    OUT/NAME_std.nii.gz        (--samples K > 1) float32 std
    OUT/NAME_uncertainty.png   (--samples K > 1) on the slice where the mask is largest
    overlay.png shows, per prompt, the slice where its mask is largest.
  a folder (--input DIR): its images and DICOM files (by extension, or none: DICOM),
  not its subfolders; --batch-size images are encoded together, with a progress bar:
    OUT/IMAGE/...              per image (IMAGE: its file name without the extension),
                               the files and predictions.json of that image on its own
    OUT/predictions.json       every image's prompts and files, and the files skipped
  an image's masks are the same as with --input IMAGE (same --seed), whatever the batch.
  A file that cannot be read is skipped with one line saying why; other files (NIfTI
  volumes, .json, .txt, ...) are not read and are counted in one line.

a model trained with the existence head (existence_head: true) also says, per prompt,
whether its target is in the image: below --existence-threshold (0.5) it prints "not
found", writes an empty mask, and predictions.json records "existence" and "found" (for
a volume, per slice, with "slices_found"). A model with a size floor (`boltzformer
calibrate`) answers "not found" too when the mask is smaller than a share of its
target's usual size (predictions.json: "under_size_floor"). Any model answers "not
found" with --min-score S when the mask's score, its mean probability where it paints,
is below S (predictions.json: "below_min_score").
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment an image, DICOM slice, NIfTI volume or folder from text prompts",
        description="Segment the objects named by one or more text prompts. The image is\n"
        "encoded once and all prompts are answered in one batched decoder pass; NIfTI\n"
        "volumes are segmented slice by slice and folders image by image (slices or\n"
        "images batched through the encoder, with a progress bar).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_input_options(parser, folders=True)
    parser.add_argument(
        "--prompt", action="append", required=True, metavar="TEXT",
        help="what to segment, e.g. 'nodule in lung CT'; repeat for several objects",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder (created if missing; files in it are replaced)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="P",
                        help="probability at or above which a pixel is in the mask (0.5)")
    parser.add_argument(
        "--samples", type=int, default=1, metavar="K",
        help="run K decoder passes with different sampling draws; write their mean "
        "probability and pixel-wise std (default 1)",
    )
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="NIfTI slices or a folder's images encoded together (default 8)")
    parser.set_defaults(run=run)


def _check_args(args: argparse.Namespace) -> list[str]:
    prompts = check_prompts(args.prompt, what="--prompt")
    if args.samples < 1:
        raise ValueError(f"--samples {args.samples}: give at least 1 sampling draw")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"--threshold {args.threshold}: a probability threshold is in [0, 1]")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: give at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder")
    if args.window is not None:
        parse_window(args.window)  # refused before any file is read
    return prompts


def _save_png(array: np.ndarray, path: Path) -> str:
    """Write an (H, W) uint8 array as PNG; returns its file name."""
    Image.fromarray(array).save(path)
    return path.name


def _write_volume(values: np.ndarray, volume: Volume, path: Path) -> str:
    """Probabilities or stds in voxel order, with the input's shape, affine and header; returns
    the file name."""
    write_nifti_float(values.reshape(volume.reference.shape), volume.reference, path)
    return path.name


def _write_plane(
    image: np.ndarray, pred: Prediction, names: list[str], out: Path, args: argparse.Namespace,
    where: str = "",
) -> list[dict]:
    """The files of one image's prediction in `out`; one record per prompt (`_record`)."""
    records, panels = [], []
    for i, (prompt, name) in enumerate(zip(pred.prompts, names)):
        mask = Predictor.threshold(pred.prob[i], args.threshold)
        files = {
            "mask": _save_png(mask.astype(np.uint8) * 255, out / f"{name}_mask.png"),
            "prob": _save_png(to_uint8(pred.prob[i] * 255), out / f"{name}_prob.png"),
        }
        if pred.std is not None:
            files["std"] = _save_png(to_uint8(pred.std[i] * 510), out / f"{name}_std.png")
            files["uncertainty"] = _uncertainty(
                image, pred.prob[i], pred.std[i], prompt, pred.samples, args, out / name
            )
        records.append(_record(prompt, mask, files, pred, i, where))
        panels.append(viz.GridItem(image, pred.prob[i], caption=prompt))
    viz.prediction_grid(panels, out / "overlay.png", threshold=args.threshold)
    return records


def _predict_volume(
    predictor: Predictor, volume: Volume, prompts: list[str], names: list[str],
    args: argparse.Namespace,
) -> list[dict]:
    slices = nifti_slices(volume.display, args.axis)  # (N, A, B)
    pred = predictor.predict_slices(
        slices, prompts, batch_size=args.batch_size, samples=args.samples, progress=True
    )
    records, panels = [], []
    for i, (prompt, name) in enumerate(zip(prompts, names)):
        mask = Predictor.threshold(pred.prob[i], args.threshold)  # (N, A, B)
        shape = volume.reference.shape
        write_nifti_mask(
            stack_slices(mask, args.axis).reshape(shape), volume.reference,
            args.out / f"{name}_mask.nii.gz",
        )
        files = {
            "mask": f"{name}_mask.nii.gz",
            "prob": _write_volume(
                stack_slices(pred.prob[i], args.axis), volume, args.out / f"{name}_prob.nii.gz"
            ),
        }
        if mask.any():
            k, why = int(mask.sum(axis=(1, 2)).argmax()), "largest mask"
        else:
            k, why = len(slices) // 2, "middle slice, mask empty"
        caption = f"{prompt}: axis {args.axis} slice {k} ({why})"
        if pred.std is not None:
            files["std"] = _write_volume(
                stack_slices(pred.std[i], args.axis), volume, args.out / f"{name}_std.nii.gz"
            )
            files["uncertainty"] = _uncertainty(
                slices[k], pred.prob[i, k], pred.std[i, k], caption, pred.samples, args,
                args.out / name,
            )
        records.append(_record(prompt, mask, files, pred, i) | {"shown_slice": k})
        panels.append(viz.GridItem(slices[k], pred.prob[i, k], caption=caption))
    viz.prediction_grid(panels, args.out / "overlay.png", threshold=args.threshold)
    return records


def _uncertainty(
    image: np.ndarray, prob: np.ndarray, std: np.ndarray, caption: str, samples: int,
    args: argparse.Namespace, stem: Path,
) -> str:
    """The uncertainty figure of one prompt on one (H, W) plane, at STEM_uncertainty.png;
    returns its file name."""
    path = stem.parent / f"{stem.name}_uncertainty.png"
    viz.uncertainty_figure(
        image, prob, std, caption=caption, samples=samples, threshold=args.threshold, path=path
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
    args: argparse.Namespace, checkpoint: Path, source: Path, kind: str, window: str | None,
    **fields: object,
) -> dict:
    """An input's predictions.json: what was read, the settings, and `fields`."""
    return {"input": str(source), "kind": kind, "checkpoint": str(checkpoint),
            "window": window, "threshold": args.threshold, "samples": args.samples,
            "seed": args.seed, "min_score": args.min_score,
            "existence_threshold": args.existence_threshold, **fields}


def run(args: argparse.Namespace) -> int:
    prompts = _check_args(args)
    checkpoint = resolve_checkpoint(args.checkpoint)
    names = file_names(prompts)
    if args.input.is_dir():
        return _run_folder(args, prompts, names, checkpoint)
    source = (read_volume(args.input, args.window, args.axis) if is_volume(args.input)
              else read_plane(args.input, args.window))
    predictor = load_predictor(checkpoint, args)
    args.out.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Volume):
        records = _predict_volume(predictor, source, prompts, names, args)
        summary = _summary(args, checkpoint, args.input, "volume", args.window, axis=args.axis,
                           shape=list(source.reference.shape), prompts=records)
    else:
        predictor.set_image(source)
        pred = predictor.predict(prompts, samples=args.samples)
        records = _write_plane(source, pred, names, args.out, args)
        summary = _summary(args, checkpoint, args.input, "image", args.window, axis=None,
                           shape=list(source.shape[:2]), prompts=records)
    (args.out / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(records)} prediction(s) for {args.input.name} to {args.out}/")
    return 0


def _run_folder(
    args: argparse.Namespace, prompts: list[str], names: list[str], checkpoint: Path
) -> int:
    """Every image of the folder --input, --batch-size at a time through the encoder; one
    sub-folder of --out per image as `run` writes for it alone, and the folder's
    predictions.json. Unreadable files are skipped with one line each."""
    files = folder_files(args.input)
    if files.others:
        shown = ", ".join(p.name for p in files.others[:3])
        more = ", ..." if len(files.others) > 3 else ""
        hint = ("; give a NIfTI volume as --input on its own"
                if any(is_volume(p) for p in files.others) else "")
        print(f"not read: {len(files.others)} file(s) that are not images or DICOM "
              f"({shown}{more}){hint}")
    predictor = load_predictor(checkpoint, args)
    skipped: list[dict] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"file": path.name, "reason": reason})
        tqdm.write(f"skipped {reason}")

    read: deque[tuple[Path, np.ndarray]] = deque()  # read, not yet answered

    def planes() -> Iterator[np.ndarray]:
        for path, plane in read_planes(files.planes, args.window, skip):
            read.append((path, plane))
            yield plane

    images: list[dict] = []
    used = {RESULTS_FILE}
    for pred in predictor.predict_images(
        planes(), prompts, batch_size=args.batch_size, samples=args.samples, progress=True,
        total=len(files.planes),
    ):
        path, plane = read.popleft()
        sub = _unique(path.stem, used)
        out = args.out / sub
        out.mkdir(parents=True, exist_ok=True)
        records = _write_plane(plane, pred, names, out, args, where=f"{path.name}: ")
        summary = _summary(args, checkpoint, path, "image", window_for(path, args.window),
                           axis=None, shape=list(plane.shape[:2]), prompts=records)
        (out / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
        images.append({"file": path.name, "folder": sub, "shape": list(plane.shape[:2]),
                       "prompts": records})
    if not images:
        raise ValueError(f"--input {args.input}: none of its {len(files.planes)} image file(s) "
                         "could be read")
    summary = _summary(args, checkpoint, args.input, "folder", args.window,
                       batch_size=args.batch_size, images=images, skipped=skipped,
                       not_read=[p.name for p in files.others])
    (args.out / RESULTS_FILE).write_text(json.dumps(summary, indent=2))
    print(f"wrote predictions for {len(images)} image(s) of {args.input} to {args.out}/"
          + (f" ({len(skipped)} skipped)" if skipped else ""))
    return 0


def _unique(name: str, used: set[str]) -> str:
    """`name`, or `name-2`, `name-3`, ... the first not in `used` (which it joins)."""
    unique, n = name, 2
    while unique in used:
        unique, n = f"{name}-{n}", n + 1
    used.add(unique)
    return unique
