"""`boltzformer visualize`: draw which image tokens a query attended to, layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.commands._inference import add_input_options, add_model_options, load_predictor
from boltzformer.data.inputs import is_volume, read_gt, read_plane, read_volume
from boltzformer.data.medio import nifti_slices
from boltzformer.inference import viz
from boltzformer.modeling.text_encoder import check_prompts
from boltzformer.train.run_dir import resolve_checkpoint

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")

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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    [prompt] = check_prompts([args.prompt], what="--prompt")
    checkpoint = resolve_checkpoint(args.checkpoint)
    if args.out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"--out {args.out}: give a figure file ending in "
                         f"{', '.join(FIGURE_SUFFIXES)}")
    if is_volume(args.input):
        slices = nifti_slices(read_volume(args.input, args.window, args.axis).display, args.axis)
        k = len(slices) // 2 if args.slice is None else args.slice
        if not 0 <= k < len(slices):
            raise ValueError(f"--slice {k} does not exist: axis {args.axis} has slices "
                             f"0..{len(slices) - 1}")
        image = slices[k]
        title = f'"{prompt}" on {args.input.name}, slice {k} along axis {args.axis}'
    else:
        if args.slice is not None:
            raise ValueError("--slice applies to NIfTI volumes only; drop it")
        image = read_plane(args.input, args.window)
        title = f'"{prompt}" on {args.input.name}'
    gt = read_gt(args.mask, image.shape[:2]) if args.mask is not None else None
    predictor = load_predictor(checkpoint, args)
    num_queries = predictor.model.config.num_queries
    if not 0 <= args.query < num_queries:
        raise ValueError(f"--query {args.query} does not exist: the model has queries "
                         f"0..{num_queries - 1}")
    predictor.set_image(image)
    trace = predictor.sampling(prompt)
    viz.sampling_figure(image, trace.keep_masks, trace.prob, gt, query=args.query, path=args.out,
                        title=title, threshold=args.threshold)
    print(f"wrote {args.out} ({len(trace.keep_masks)} decoder layers, query {args.query})")
    return 0
