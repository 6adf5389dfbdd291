"""`boltzformer demo`: phantoms -> train tiny -> evaluate -> figures, on a CPU in minutes."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.apps.demo import TRAINING, WITHOUT_EXISTENCE, DemoSettings, run_demo


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    d, loop, model = DemoSettings(), TRAINING.train, TRAINING.model.resolve()
    p = subparsers.add_parser(
        "demo",
        help="the main job end to end on built-in data (700 steps, about 12 minutes on 2 "
        "CPU cores), "
        "or a benchmark on your own data (--data)",
        description="Generate the built-in small-object phantom benchmark (or take a "
        "BiomedParse-layout folder with --data), train the tiny BoltzFormer on it, evaluate "
        "it on the held-out test split and draw figures. Everything is written to OUT "
        "(report.md, predictions.png, sampling.png, loss_curve.png, dice_vs_size.png, "
        "metrics.json, per_sample.csv, run/, data/ with the phantoms).",
        epilog="examples:\n  boltzformer demo\n  boltzformer demo --steps 2000 --images 3000\n"
        "  boltzformer demo --expert          # and the U-Net expert, side by side\n"
        "  boltzformer convert consep CoNSeP consep_data\n"
        "  boltzformer demo --data consep_data --minutes 15 --expert --out consep_bench\n"
        "  boltzformer demo --seed 1          # another seed: the spread of the figures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=d.out_dir,
                   help=f"output folder (default: {d.out_dir})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimiser steps to train: more is more accurate, and the same "
                   f"steps and seed give the same model on any machine (default "
                   f"{loop.max_steps}, about 10 minutes on 2 CPU cores)")
    p.add_argument("--minutes", type=float, default=None,
                   help="a time budget in minutes instead (the steps it buys depend on the "
                   "machine and its load); with --steps too, whichever ends first")
    p.add_argument("--images", type=int, default=d.images,
                   help=f"phantom images to generate, 20%% of them for testing (default "
                   f"{d.images})")
    p.add_argument("--data", type=Path, default=None,
                   help="a BiomedParse-layout folder with train and test splits (for example "
                   "the output of `boltzformer convert`) to train and test on instead of the "
                   "phantoms; --images is then ignored")
    p.add_argument("--image-size", type=int, default=model.image_size,
                   help=f"image side in pixels, a multiple of 32, at least 96 (default "
                   f"{model.image_size})")
    p.add_argument("--crop-size", type=int, default=None,
                   help="train on CROP_SIZE x CROP_SIZE crops of the images (resized to "
                   "--image-size if it differs), 0 for whole images resized; default: planned "
                   "from the data (whole images up to 1.25 x --image-size, else crops of "
                   "--image-size; docs/training.md)")
    p.add_argument("--scale", type=float, default=None,
                   help="resample the images by SCALE before cropping (1: native "
                   "resolution; default: planned from the data's object sizes)")
    p.add_argument("--batch-size", type=int, default=loop.batch_size,
                   help=f"images per training step (default {loop.batch_size})")
    p.add_argument("--prompts-per-image", type=int, default=loop.prompts_per_image,
                   help=f"targets decoded per encoded image, K (default "
                   f"{loop.prompts_per_image})")
    p.add_argument("--lr", type=float, default=TRAINING.optim.lr,
                   help=f"peak learning rate (default {TRAINING.optim.lr:g})")
    p.add_argument("--text-encoder", choices=("labels", "builtin"), default=model.text_encoder,
                   help="labels (default): one learned token per target name, prompts are "
                   "names such as 'nodule' or 'nodule in chest CT'; builtin: read the data's "
                   "sentences with the offline text encoder (slower to learn: it hedges)")
    p.add_argument("--seed", type=int, default=loop.seed,
                   help="seed for data, training, sampling")
    p.add_argument("--workers", type=int, default=TRAINING.data.workers,
                   help=f"data loader processes (default {TRAINING.data.workers})")
    p.add_argument("--absent-share", type=float, default=d.absent_share,
                   help="share of phantom images with one target left out, and share that "
                   "also gets a target of the other site (a lung on an abdomen slice): "
                   "prompts whose target is absent, written as empty masks (default "
                   f"{d.absent_share:g})")
    p.add_argument("--negatives", type=int, default=None,
                   help="absent targets added to each training image: other target names "
                   "with empty masks, so the model learns to answer 'not there' (the "
                   "phantoms annotate every target they hold; default "
                   f"{TRAINING.data.negatives} with the existence head, 0 without: without "
                   "it they teach the masks to answer small targets with nothing)")
    p.add_argument("--existence-head", action=argparse.BooleanOptionalAction,
                   default=bool(model.existence_head),
                   help="the existence head (not the paper's): a per-prompt probability "
                   "that the target is in the image, below 0.5 an empty mask; trained with the "
                   "decoder, and absent prompts train only it (with --negatives 2: small and "
                   "tiny Dice up, docs/results/absent_targets.md). --no-existence-head: the "
                   "paper's model, every prompt answered with a mask, absent prompts teaching "
                   "the masks (default: on)")
    p.add_argument("--size-floor", action=argparse.BooleanOptionalAction,
                   default=d.size_floor,
                   help="after training, choose the size floor on the validation split "
                   "(`boltzformer calibrate`; not the paper's): an answer smaller than a "
                   "fraction of its target's usual smallest size is an empty mask, for "
                   "BoltzFormer and the expert alike (default: on)")
    p.add_argument("--expert", action="store_true",
                   help="also train the U-Net expert (one output per target; needs the "
                   "[baselines] extra) for the same steps (or minutes) and compare both in "
                   "report.md (doubles the training time)")
    p.set_defaults(run=run)


def budget(steps: int | None, minutes: float | None) -> dict[str, object]:
    """The training budget the flags ask for: the demo's steps unless --minutes is given."""
    if minutes is None:
        return {"train.max_steps": TRAINING.train.max_steps if steps is None else steps}
    return {"train.max_minutes": minutes, "train.max_steps": steps}


def settings(args: argparse.Namespace) -> DemoSettings:
    """The demo the flags ask for: its own settings, and the training flags as overrides of
    its TrainConfig (which checks them)."""
    training = TRAINING.with_overrides({
        **budget(args.steps, args.minutes), "model.image_size": args.image_size,
        "train.batch_size": args.batch_size, "train.prompts_per_image": args.prompts_per_image,
        "optim.lr": args.lr, "model.text_encoder": args.text_encoder, "train.seed": args.seed,
        "data.workers": args.workers,
        # without the head: the paper's model, absent pairs training the masks, no negatives
        **({} if args.existence_head else WITHOUT_EXISTENCE),
        **({} if args.negatives is None else {"data.negatives": args.negatives}),
        **({} if args.crop_size is None else {"data.crop_size": args.crop_size}),
        **({} if args.scale is None else {"data.scale": args.scale}),
    })
    return DemoSettings(out_dir=args.out, images=args.images, data=args.data,
                        training=training, expert=args.expert, absent_share=args.absent_share,
                        size_floor=args.size_floor)


def run(args: argparse.Namespace) -> int:
    result = run_demo(settings(args))
    print(f"\ndone in {result['minutes']:.1f} min. Test Dice: {result['headline']}")
    if result["expert"]:
        print(f"U-Net expert, same budget: {result['expert_headline']}")
    print(f"results: {args.out / 'report.md'} (figures beside it)")
    return 0
