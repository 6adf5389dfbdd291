"""What `predict`, `visualize` and `serve` share: the model and input options, and the
Predictor they name. The inputs are read by `boltzformer.data.inputs`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from boltzformer.data.medio import WINDOWS
from boltzformer.inference.predictor import Predictor
from boltzformer.inference.windowed import check_window_overrides
from boltzformer.modeling.dtypes import DTYPES, resolve_dtype
from boltzformer.modeling.existence import (
    EXISTENCE_THRESHOLD,
    check_existence_threshold,
    check_min_score,
)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, type=Path, metavar="DIR",
        help="checkpoint folder (config.json + model.safetensors), training run folder "
        "(its best/, else last/, else its newest snapshot) or Hugging Face Hub id "
        "(org/name or org/name@revision; cached, HF_HUB_OFFLINE=1 loads from the cache)",
    )
    parser.add_argument(
        "--device", default="cpu",
        help="where to run: cpu (default), cuda or cuda:N",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S",
        help="seed of the Boltzmann sampling draws; same seed, same masks (default 0)",
    )
    parser.add_argument(
        "--min-score", type=float, default=0.0, metavar="S",
        help="answer 'not found' (an empty mask) when the mask's score, its mean "
        "probability where it paints, is below S: fewer masks for targets that are not "
        "there, some real ones lost (default 0: off)",
    )
    add_existence_threshold(parser)
    add_dtype(parser)


def add_dtype(parser: argparse.ArgumentParser) -> None:
    """--dtype: the floating dtype the model runs in."""
    parser.add_argument(
        "--dtype", default="float32", metavar="T",
        help=f"run the model in {', '.join(DTYPES)} (default float32). bfloat16 and float16 "
        "halve its memory and are faster on a GPU; float16 on the CPU is slow. The "
        "attention sampling and the probabilities written stay float32",
    )


def add_existence_threshold(parser: argparse.ArgumentParser) -> None:
    """--existence-threshold: the existence head's operating point."""
    parser.add_argument(
        "--existence-threshold", type=float, metavar="T",
        help="a model with the existence head answers 'not found' when its probability that "
        "the target is in the image is below T (0: never). Default: the checkpoint's, "
        f"{EXISTENCE_THRESHOLD} unless `boltzformer calibrate` chose another on the run's "
        "validation images. Lower it for a target the head cannot judge: the mask then "
        "decides",
    )


def add_windows(parser: argparse.ArgumentParser) -> None:
    """--window-size and --window-overlap: sliding windows, overriding the checkpoint's."""
    parser.add_argument(
        "--window-size", type=int, metavar="N",
        help="answer by sliding windows of N pixels on the image at its own size, blended "
        "with Gaussian weights (N >= 32; 0: the whole image resized to the model's input). "
        "Default: the checkpoint's window_size (0 unless trained on crops)",
    )
    parser.add_argument(
        "--window-overlap", type=float, metavar="F",
        help="share of a window that overlaps the next, in [0, 1) (default: the "
        "checkpoint's window_overlap, 0.5 unless set)",
    )


def add_input_options(parser: argparse.ArgumentParser, *, folders: bool = False) -> None:
    """--input (a file, or with `folders` also a folder of images), --window and --axis."""
    what = "PNG/JPG/TIFF/BMP image, DICOM slice (.dcm) or NIfTI volume (.nii, .nii.gz)"
    parser.add_argument(
        "--input", required=True, type=Path, metavar="PATH" if folders else "FILE",
        help=what + (", or a folder: one DICOM series (a volume) or images and DICOM slices"
                     if folders else ""),
    )
    parser.add_argument(
        "--window", metavar="NAME|W,L",
        help=f"CT display window for DICOM and NIfTI, in HU after rescale: "
        f"{', '.join(WINDOWS)} or WIDTH,LEVEL (e.g. 1500,-600). Default: DICOM is scaled by "
        "its min and max, NIfTI by its 0.5-99.5 percentiles",
    )
    parser.add_argument(
        "--axis", type=int, default=2, metavar="A",
        help="NIfTI only: the voxel axis (0, 1 or 2) to slice along (default 2)",
    )


def load_predictor(checkpoint: Path, args: argparse.Namespace) -> Predictor:
    """The Predictor of the checkpoint folder `checkpoint` (see
    `train.run_dir.resolve_checkpoint`) on --device in --dtype, seeded with --seed, gated at
    --min-score and --existence-threshold, windowed as --window-size and --window-overlap
    say (None: the checkpoint's)."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device}: CUDA is not available here; use --device cpu")
    check_min_score(args.min_score, "--min-score")
    if args.existence_threshold is not None:
        check_existence_threshold(args.existence_threshold, "--existence-threshold")
    check_window_overrides(args.window_size, args.window_overlap,
                           ("--window-size", "--window-overlap"))
    return Predictor.from_pretrained(checkpoint, device=args.device, seed=args.seed,
                                     min_score=args.min_score,
                                     existence_threshold=args.existence_threshold,
                                     dtype=resolve_dtype(args.dtype, "--dtype"),
                                     window_size=args.window_size,
                                     window_overlap=args.window_overlap)
