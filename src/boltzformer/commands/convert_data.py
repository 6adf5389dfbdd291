"""`boltzformer convert consep|dsb2018|nifti|lidc SRC OUT`: public data sets -> BiomedParse.

(`convert-release` is another verb: it converts model weights, not data.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.data.converters import (
    convert_consep,
    convert_dsb2018,
    convert_lidc,
    convert_nifti,
    format_summary,
)
from boltzformer.data.medio import WINDOWS

_EPILOG = """\
Each layout writes OUT/<split>/ images, OUT/<split>_mask/<image stem>_<target>.png masks
(0/255), OUT/<split>_instances/ (16-bit instance ids, same file names), OUT/<split>.json
(prompts per mask; empty masks flagged "absent") and OUT/size_stats.md/.csv.

examples:
  boltzformer convert consep CoNSeP data/consep --tile 256
  boltzformer convert dsb2018 stage1_train data/dsb2018 --test-fraction 0.2 --seed 0
  boltzformer convert nifti Task03_Liver data/liver --window abdomen
  boltzformer convert lidc LIDC-IDRI data/lidc --empty-every 5
"""

_ABSENT_HELP = ("a target missing from an image: 'empty' writes an empty mask (an absent "
                "target, flagged in the JSON; teaches the model to answer nothing), 'skip' "
                "writes no mask (default empty)")  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `convert` verb and its layouts."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a public data set (CoNSeP, DSB2018, NIfTI volumes, LIDC-IDRI) to the "
        "BiomedParse layout",
        description="Convert a public data set from its own layout into the BiomedParse layout "
        "that `boltzformer train` and `evaluate` read. OUT must be new or empty.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    layouts = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)

    consep = layouts.add_parser(
        "consep",
        help="CoNSeP H&E nuclei (Train|Test/Images + Labels/*.mat)",
        description="CoNSeP (HoVer-Net's colorectal nuclei): one mask per nucleus class per "
        "image, the nuclei's instance map beside it; Train -> train, Test -> test.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="classes (--classes 4, HoVer-Net's merge of CoNSeP's 7 types):\n"
        "  other, inflammatory, epithelial (healthy + malignant), spindle-shaped\n"
        "  (fibroblast + muscle + endothelial) nuclei\n"
        "--classes 7: other, inflammatory, healthy epithelial, malignant epithelial,\n"
        "  fibroblast, muscle, endothelial nuclei (the labels must carry the 7 types)\n\n"
        "example:\n  boltzformer convert consep CoNSeP data/consep --tile 256",
    )
    _common(consep)
    consep.add_argument("--classes", type=int, choices=(4, 7), default=4,
                        help="4: HoVer-Net's merged classes (default); 7: CoNSeP's own")
    _tile(consep)
    consep.set_defaults(run=run_consep)

    dsb = layouts.add_parser(
        "dsb2018",
        help="Kaggle DSB 2018 nuclei (stage1_train/<id>/images + masks)",
        description="DSB2018 stage 1 train: one 'nuclei' mask per image (the union of its "
        "mask files) with the instance map beside it, the imaging type (fluorescence, "
        "brightfield, H&E) told from the image's colours as the modality, and a seeded "
        "split by image.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="imaging type: median gray level < 100 (dark background) -> fluorescence;\n"
        "  else mean spread of R, G, B >= 2 gray levels -> H&E (stained); else brightfield\n\n"
        "example:\n  boltzformer convert dsb2018 stage1_train data/dsb2018 --seed 0",
    )
    dsb.add_argument("src", metavar="SRC", type=Path,
                     help="stage1_train/ (or the folder holding it)")
    dsb.add_argument("out", metavar="OUT", type=Path, help="new (or empty) output folder")
    dsb.add_argument("--test-fraction", type=float, default=0.2,
                     help="share of images in the test split (default 0.2)")
    dsb.add_argument("--seed", type=int, default=0,
                     help="split seed; the split depends only on it and the ids (default 0)")
    _tile(dsb)
    dsb.set_defaults(run=run_dsb2018)

    nifti = layouts.add_parser(
        "nifti",
        help="NIfTI volumes: per-structure mask files (TotalSegmentator) or a label volume "
        "with dataset.json (Medical Segmentation Decathlon)",
        description="Cut NIfTI volumes into 2D slices with one mask per structure per slice. "
        "Slices keep the volume's in-plane grid and are shown in one orientation whatever the "
        "file's voxel order (axial: anterior up, patient's right on the image left); each "
        "slice records its volume and index, and stack_slices() puts masks back on the "
        "source grid with the source affine. Cases are split into train/test by name.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="layouts:\n"
        "  SRC/dataset.json, SRC/imagesTr/<case>.nii.gz, SRC/labelsTr/<case>.nii.gz (Decathlon)\n"
        "  SRC/<case>/ct.nii.gz, SRC/<case>/segmentations/<structure>.nii.gz (TotalSegmentator)\n"
        "  SRC/<image>.nii.gz and one folder SRC/<masks>/<structure>.nii.gz\n"
        "  SRC/<patient>/{FLAIR,T1,T2}_*.nii.gz + GOLD_STANDARD_*.nii.gz (MS lesions, "
        "Ljubljana):\n    target 'multiple sclerosis lesion', site brain, modality MRI-<sequences>"
        "\n\n"
        f"window presets (width, level in HU): "
        f"{', '.join(f'{k} {w:g},{c:g}' for k, (w, c) in WINDOWS.items())}\n\n"
        "examples:\n"
        "  boltzformer convert nifti Task03_Liver data/liver --window abdomen\n"
        "  boltzformer convert nifti totalseg_example data/totalseg --only-present\n"
        "  boltzformer convert nifti MNI data/ms --sequence FLAIR,T1,T2 --test-cases patient07",
    )
    _common(nifti)
    nifti.add_argument("--axis", default="axial",
                       help="slice direction: axial (default), coronal, sagittal, or a voxel "
                       "axis 0, 1, 2 of the files")  # fmt: skip
    nifti.add_argument("--window", nargs="+", default=["auto"], metavar="W",
                       help="CT display window: a preset name, W L (two numbers), or 'none' "
                       "(each volume's 0.5-99.5 percentiles); default auto: abdomen for CT, "
                       "percentiles for MRI")  # fmt: skip
    nifti.add_argument("--modality", default=None,
                       help="modality in the image names (default CT; Decathlon: from its "
                       "dataset.json, CT or MRI)")  # fmt: skip
    nifti.add_argument("--site", default=None,
                       help="site in the image names (default abdomen; Decathlon: from its "
                       "name where known)")  # fmt: skip
    nifti.add_argument("--only-present", action="store_true",
                       help="keep only slices where some structure is present (default: "
                       "keep every slice)")  # fmt: skip
    nifti.add_argument("--drop-missing", action="store_true",
                       help="leave out structures with no voxel in a volume (outside its field "
                       "of view); default: write them as absent on every slice")  # fmt: skip
    nifti.add_argument("--test-fraction", type=float, default=0.2,
                       help="share of volumes in the test split (default 0.2; one volume: "
                       "train only)")  # fmt: skip
    nifti.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    nifti.add_argument("--channel", type=int, default=0,
                       help="channel of 4D (multi-sequence) images (default 0)")
    nifti.add_argument("--test-cases", nargs="+", default=None, metavar="CASE",
                       help="these cases (volume or patient folder names) are the test split, "
                       "the rest train (instead of --test-fraction): leave-one-out loops")
    nifti.add_argument("--empty-every", type=int, default=1, metavar="N",
                       help="keep every N-th slice where no structure is present (default 1: "
                       "all); blank slices are always left out")  # fmt: skip
    nifti.add_argument("--sequence", default="FLAIR",
                       help="MS-lesion layout: the sequence shown, FLAIR (default), T1, T2, "
                       "T1POST, or three of them as RGB channels, e.g. FLAIR,T1,T2")
    nifti.set_defaults(run=run_nifti)

    lidc = layouts.add_parser(
        "lidc",
        help="LIDC-IDRI lung CT with the readers' nodule outlines (TCIA layout, DICOM + XML)",
        description="LIDC-IDRI: every series folder with a LIDC XML becomes slices with one "
        "target, 'lung nodule': each reader's outlines filled (holes cut), the readers' "
        "annotations grouped into nodules by overlap in 3D and combined at --agreement; each "
        "nodule has its own id in the instance map. Nodules < 3 mm (a single point) are left "
        "out. Slices without a nodule are absent targets, thinned by --empty-every and "
        "--margin. Each slice records its series, index and SOPInstanceUID, each series its "
        "affine (stack_slices() gives a NIfTI on the series' grid). Split by case (patient); "
        "one case: all in train.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="layout: SRC/LIDC-IDRI-XXXX/<study UID>/<series UID>/*.dcm + <n>.xml (TCIA);\n"
        "  SRC may also be one case folder or one series folder\n\n"
        "examples:\n"
        "  boltzformer convert lidc LIDC-IDRI data/lidc\n"
        "  boltzformer convert lidc LIDC-IDRI data/lidc --agreement 0.25 --margin 10",
    )
    _common(lidc)
    lidc.add_argument("--window", nargs="+", default=["lung"], metavar="W",
                      help="CT display window: a preset name, W L (two numbers), or 'none' "
                      "(the series' 0.5-99.5 percentiles); default lung (1500, -600)")
    lidc.add_argument("--agreement", type=float, default=0.5,
                      help="a voxel is nodule when at least this share of the readers who "
                      "marked the nodule include it (default 0.5, as pylidc)")  # fmt: skip
    lidc.add_argument("--empty-every", type=int, default=5, metavar="N",
                      help="keep every N-th slice without a nodule (default 5; 1: all)")
    lidc.add_argument("--margin", type=int, default=None, metavar="SLICES",
                      help="keep slices without a nodule only within this many slices of one "
                      "(default: anywhere)")  # fmt: skip
    lidc.add_argument("--test-fraction", type=float, default=0.2,
                      help="share of cases (patients) in the test split (default 0.2)")
    lidc.add_argument("--test-cases", nargs="+", default=None, metavar="CASE",
                      help="these cases (e.g. LIDC-IDRI-0003) are the test split instead")
    lidc.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    lidc.set_defaults(run=run_lidc)
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", type=Path, help="the data set in its own layout")
    parser.add_argument("out", metavar="OUT", type=Path, help="new (or empty) output folder")
    parser.add_argument("--absent", choices=("empty", "skip"), default="empty", help=_ABSENT_HELP)


def _tile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                        help="cut larger images into tiles of this side (the last tile of a row "
                        "or column overlaps its neighbour); default: keep images whole")


def run_consep(args: argparse.Namespace) -> int:
    """Convert CoNSeP with a progress bar and print the counts and the size table."""
    print(format_summary(convert_consep(args.src, args.out, classes=args.classes,
                                        tile=args.tile, absent=args.absent, progress=True)))
    return 0


def run_dsb2018(args: argparse.Namespace) -> int:
    """Convert DSB2018 with a progress bar; print the imaging types, counts and sizes."""
    print(format_summary(convert_dsb2018(args.src, args.out, test_fraction=args.test_fraction,
                                         seed=args.seed, tile=args.tile, progress=True)))
    return 0


def _window(words: list[str]) -> str | tuple[float, float] | None:
    """--window's words: ["auto"], ["none"], [preset], ["W,L"] or [W, L]."""
    if len(words) == 2:
        try:
            return float(words[0]), float(words[1])
        except ValueError:
            raise ValueError(f"--window {' '.join(words)}: expected two numbers W L") from None
    if len(words) != 1:
        raise ValueError("--window takes a preset name, 'none', 'auto' or two numbers W L")
    word = words[0].lower()
    return None if word == "none" else word


def run_nifti(args: argparse.Namespace) -> int:
    """Convert NIfTI volumes with a progress bar; print counts and the size table."""
    print(format_summary(convert_nifti(
        args.src, args.out, axis=args.axis, window=_window(args.window),
        modality=args.modality, site=args.site, only_present=args.only_present,
        drop_missing=args.drop_missing, test_fraction=args.test_fraction, seed=args.seed,
        channel=args.channel, absent=args.absent, sequence=args.sequence,
        test_cases=args.test_cases, empty_every=args.empty_every, progress=True,
    )))  # fmt: skip
    return 0


def run_lidc(args: argparse.Namespace) -> int:
    """Convert LIDC-IDRI with a progress bar; print counts, notes and the size table."""
    window = _window(args.window)
    print(format_summary(convert_lidc(
        args.src, args.out, window=None if window == "auto" else window,
        agreement=args.agreement, empty_every=args.empty_every, margin=args.margin,
        test_fraction=args.test_fraction, test_cases=args.test_cases, seed=args.seed,
        absent=args.absent, progress=True,
    )))  # fmt: skip
    return 0
