"""`boltzformer visualize`: draw which image tokens a query attended to, layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.commands._inference import add_input_options, add_model_options, load_predictor
from boltzformer.inference.visualize import FIGURE_SUFFIXES, visualize_file
from boltzformer.train.run_dir import resolve_checkpoint

EPILOG = """\
examples:
  boltzformer visualize --checkpoint ckpt/ --input 01_CT_lung.png \\
      --prompt "nodule in lung CT" --mask 01_CT_lung_nodule.png --out sampling.png
  boltzformer visualize --checkpoint ckpt/ --input slice.dcm --window lung \\
      --prompt "nodule in lung CT" --query 3 --out sampling.png
  boltzformer visualize --checkpoint ckpt/ --input ct.nii.gz --axis 2 --slice 40 \\
      --prompt "liver in abdomen CT" --out sampling.png

The figure (the paper's Fig. 4): one panel per decoder layer showing the input with the
tokens the query did not attend to dimmed (bright = sampled), the ground truth outlined in
red when --mask is given, and the final prediction in green. Same --seed, same draws.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "visualize",
        help="draw the Boltzmann attention sampling of each decoder layer",
        description="Draw, per decoder layer, which image tokens a query attended to\n"
        "(bright = sampled, the rest dimmed), and the final prediction.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_input_options(parser)
    parser.add_argument("--prompt", required=True, metavar="TEXT",
                        help="what to segment, e.g. 'nodule in lung CT'")
    parser.add_argument("--mask", type=Path, metavar="GT.png",
                        help="ground-truth mask (0/255 PNG at the input's size), outlined red")
    parser.add_argument("--out", required=True, type=Path, metavar="FIG.png",
                        help=f"figure to write ({', '.join(FIGURE_SUFFIXES)})")
    parser.add_argument("--query", type=int, default=0,
                        help="which decoder query to show (default 0, as in the paper)")
    parser.add_argument("--slice", type=int, metavar="K",
                        help="NIfTI only: slice index along --axis (default: the middle one)")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="P",
                        help="probability at or above which a pixel is predicted (0.5)")
    # the sampling is drawn on the whole image (resized), windowed model or not
    parser.set_defaults(run=run, window_size=0, window_overlap=None)


def run(args: argparse.Namespace) -> int:
    predictor = load_predictor(resolve_checkpoint(args.checkpoint), args)
    print(visualize_file(predictor, args.input, args.prompt, args.out, window=args.window,
                         axis=args.axis, slice_index=args.slice, mask=args.mask,
                         query=args.query, threshold=args.threshold))
    return 0
