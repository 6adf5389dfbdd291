"""`boltzformer predict`: segment an image, DICOM slice or series, NIfTI volume or a folder of
images from text prompts (the work: `boltzformer.inference.predict_files`)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from boltzformer.commands._inference import (
    add_input_options,
    add_model_options,
    add_windows,
    load_predictor,
)
from boltzformer.inference.predict_files import PredictOptions, predict_files
from boltzformer.train.run_dir import resolve_checkpoint

EPILOG = """\
examples:
  boltzformer predict --checkpoint ckpt/ --input 01_CT_lung.png \\
      --prompt "nodule in lung CT" --prompt "left lung in lung CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input slice.dcm --window lung \\
      --prompt "nodule in lung CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input series/ --window lung \\
      --prompt "nodule in lung CT" --out preds/      # a DICOM series folder: one volume
  boltzformer predict --checkpoint ckpt/ --input ct.nii.gz --axis 2 --window abdomen \\
      --prompt "liver in abdomen CT" --out preds/
  boltzformer predict --checkpoint ckpt/ --input scans/ --batch-size 8 \\
      --prompt "nodule in lung CT" --out preds/
  boltzformer predict ... --samples 8     # mean and std over 8 sampling draws
  boltzformer predict ... --window-size 256   # sliding windows of 256 px, native size

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
  DICOM (a slice, a series folder, a folder's DICOM files), unless --no-dicom-seg:
    OUT/segmentation.dcm       DICOM SEG (BINARY): one segment per prompt, labelled with
                               it (also when empty: not found), its frames referencing the
                               source slices; 3D Slicer, OHIF and PACS open it
  a DICOM series folder (--input DIR whose image files are all DICOM of one
  SeriesInstanceUID, at least 2, with ImagePositionPatient/ImageOrientationPatient;
  other files such as an XML are not read): one volume, slices sorted by position
  along the slice normal (not by file name), written as the NIfTI volumes above
  (rows, columns, slices, with the series' affine) and one multi-frame SEG.
  any other folder (--input DIR): its images and DICOM files (by extension, or none:
  DICOM), not its subfolders; --batch-size images are encoded together, with a progress bar:
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
        help="segment an image, DICOM slice or series, NIfTI volume or folder from text "
        "prompts",
        description="Segment the objects named by one or more text prompts. The image is\n"
        "encoded once and all prompts are answered in one batched decoder pass; NIfTI\n"
        "volumes and DICOM series are segmented slice by slice and folders image by image\n"
        "(slices or images batched through the encoder, with a progress bar).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_windows(parser)
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
                        help="slices of a volume or series, or a folder's images, encoded "
                        "together (default 8)")
    parser.add_argument(
        "--dicom-seg", action=argparse.BooleanOptionalAction, default=True,
        help="DICOM input (a slice, a series folder): also write the masks as one DICOM SEG, "
        "OUT/segmentation.dcm, one segment per prompt (default: on)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    options = PredictOptions(
        threshold=args.threshold, samples=args.samples, batch_size=args.batch_size,
        window=args.window, axis=args.axis, dicom_seg=args.dicom_seg,
    )
    checkpoint = resolve_checkpoint(args.checkpoint)
    options = replace(options, checkpoint=checkpoint)  # (options refused before the lookup)
    predictor = load_predictor(checkpoint, args)
    predict_files(predictor, args.input, args.prompt, args.out, options)
    return 0
