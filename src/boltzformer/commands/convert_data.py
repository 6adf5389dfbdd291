"""`boltzformer convert consep|dsb2018|nifti SRC OUT`: public data sets -> the BiomedParse layout.

(`convert-release` is another verb: it converts model weights, not data.)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from boltzformer.data.converters import convert_consep, convert_dsb2018, summary_lines
from boltzformer.data.size_stats import format_size_table

_EPILOG = """\
Each layout writes OUT/<split>/ images, OUT/<split>_mask/<image stem>_<target>.png masks
(0/255), OUT/<split>_instances/ (16-bit instance ids, same file names), OUT/<split>.json
(prompts per mask; empty masks flagged "absent") and OUT/size_stats.md/.csv.

examples:
  boltzformer convert consep CoNSeP data/consep --tile 256
  boltzformer convert dsb2018 stage1_train data/dsb2018 --test-fraction 0.2 --seed 0
  boltzformer convert nifti Task03_Liver data/liver --window abdomen
"""

_ABSENT_HELP = ("a target missing from an image: 'empty' writes an empty mask (an absent "
                "target, flagged in the JSON; teaches the model to answer nothing), 'skip' "
                "writes no mask (default empty)")  # fmt: skip


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `convert` verb and its layouts."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a public data set (CoNSeP, DSB2018, NIfTI volumes) to the BiomedParse "
        "layout",
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
    return parser


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", type=Path, help="the data set in its own layout")
    parser.add_argument("out", metavar="OUT", type=Path, help="new (or empty) output folder")
    parser.add_argument("--absent", choices=("empty", "skip"), default="empty", help=_ABSENT_HELP)


def _tile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tile", type=int, default=None, metavar="PIXELS",
                        help="cut larger images into tiles of this side (the last tile of a row "
                        "or column overlaps its neighbour); default: keep images whole")


def _report(summary: dict[str, Any]) -> int:
    print(f"wrote {summary['out_dir']}")
    for line in summary_lines(summary):
        print("  " + line)
    print(format_size_table(summary["stats"]))
    return 0


def run_consep(args: argparse.Namespace) -> int:
    """Convert CoNSeP with a progress bar and print the counts and the size table."""
    return _report(convert_consep(args.src, args.out, classes=args.classes, tile=args.tile,
                                  absent=args.absent, progress=True))  # fmt: skip


def run_dsb2018(args: argparse.Namespace) -> int:
    """Convert DSB2018 with a progress bar; print the counts, imaging types and sizes."""
    summary = convert_dsb2018(args.src, args.out, test_fraction=args.test_fraction,
                              seed=args.seed, tile=args.tile, progress=True)
    kinds = ", ".join(f"{n} {kind}" for kind, n in summary["imaging"].items())
    print(f"imaging types (source images): {kinds}")
    return _report(summary)
