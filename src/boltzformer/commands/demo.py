"""`boltzformer demo`: phantoms -> train tiny -> evaluate -> figures, on a CPU in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from boltzformer.apps.demo import DemoSettings

    d = DemoSettings()
    p = subparsers.add_parser(
        "demo",
        help="the main job end to end on built-in data (about 15 minutes on 2 CPU cores)",
        description="Generate the built-in small-object phantom benchmark, train the tiny "
        "BoltzFormer on it, evaluate it on the held-out test split and draw figures. "
        "Everything is written to OUT (report.md, predictions.png, sampling.png, "
        "loss_curve.png, dice_vs_size.png, metrics.json, per_sample.csv, run/, data/).",
        epilog="examples:\n  boltzformer demo\n  boltzformer demo --minutes 30 --images 3000\n"
        "  boltzformer demo --expert          # and the U-Net expert, side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("demo_output"),
                   help="output folder (default: demo_output)")
    p.add_argument("--minutes", type=float, default=d.minutes,
                   help=f"training time budget in minutes: more is more accurate (default "
                   f"{d.minutes:g})")
    p.add_argument("--images", type=int, default=d.images,
                   help=f"phantom images to generate, 20%% of them for testing (default "
                   f"{d.images})")
    p.add_argument("--image-size", type=int, default=d.image_size,
                   help=f"image side in pixels, a multiple of 32 (default {d.image_size})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"images per training step (default {d.batch_size})")
    p.add_argument("--prompts-per-image", type=int, default=d.prompts_per_image,
                   help=f"targets decoded per encoded image, K (default {d.prompts_per_image})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr:g})")
    p.add_argument("--text-encoder", choices=("labels", "builtin"), default=d.text_encoder,
                   help="labels (default): one learned token per target name, prompts are "
                   "names such as 'nodule' or 'nodule in chest CT'; builtin: read the data's "
                   "sentences with the offline text encoder (slower to learn: it hedges)")
    p.add_argument("--seed", type=int, default=0, help="seed for data, training, sampling")
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default 2)")
    p.add_argument("--expert", action="store_true",
                   help="also train the U-Net expert (one output per target; needs the "
                   "[baselines] extra) for the same minutes and compare both in report.md "
                   "(doubles the training time)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from boltzformer.apps.demo import DemoSettings, run_demo

    if args.minutes <= 0 or args.images < 10:
        raise ValueError("--minutes must be > 0 and --images at least 10")
    if args.batch_size < 1 or args.prompts_per_image < 1 or not args.lr > 0:
        raise ValueError("--batch-size and --prompts-per-image must be at least 1, --lr > 0")
    if args.image_size < 96 or args.image_size % 32:
        raise ValueError(f"--image-size must be a multiple of 32 and at least 96, got "
                         f"{args.image_size}")
    result = run_demo(DemoSettings(out_dir=args.out, minutes=args.minutes, images=args.images,
                                   image_size=args.image_size, batch_size=args.batch_size,
                                   prompts_per_image=args.prompts_per_image, lr=args.lr,
                                   seed=args.seed, workers=args.workers,
                                   text_encoder=args.text_encoder, expert=args.expert))
    strata = result["metrics"]["size_strata"]["weighted"]
    small, large = strata["small"]["dice_mean"], strata["large"]["dice_mean"]
    overall = result["metrics"]["overall"]["dice_mean"]
    print(f"\ndone in {result['minutes']:.1f} min. Test Dice: small objects {100 * small:.1f}, "
          f"large {100 * large:.1f}, all {100 * overall:.1f}")
    if result["expert"]:
        e = result["expert"]["size_strata"]["weighted"]
        print(f"U-Net expert, same minutes: small objects {100 * e['small']['dice_mean']:.1f}, "
              f"large {100 * e['large']['dice_mean']:.1f}, "
              f"all {100 * result['expert']['overall']['dice_mean']:.1f}")
    print(f"results: {args.out / 'report.md'} (figures beside it)")
    return 0
