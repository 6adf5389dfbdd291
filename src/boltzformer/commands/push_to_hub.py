"""`boltzformer push-to-hub`: a trained checkpoint, with its model card, to the Hugging Face
Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

from boltzformer.train.publish import push_checkpoint

EXAMPLE = """\
example:
  hf auth login                      # once: a token that may write to the repository
  boltzformer push-to-hub runs/tiny my-lab/boltzformer-lung-nodules --private \\
      --metrics reports/tiny-test
  boltzformer predict --checkpoint my-lab/boltzformer-lung-nodules --input scan.png \\
      --prompt "nodule in lung CT" --out predictions/

The repository gets config.json, model.safetensors and a model card README.md: the Hub's
metadata (library_name: boltzformer, license, tags), the model's settings and vocabulary,
its training (data, steps, checkpoint) when CHECKPOINT lies in its run folder, and the figures
of the evaluation's metrics.json when one is given or lies in the checkpoint or run folder.
The checkpoint is loaded and checked first; a broken one is refused. The token comes from
`hf auth login` or HF_TOKEN.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push-to-hub",
        help="upload a checkpoint with its model card to the Hugging Face Hub",
        description="Upload a checkpoint (BoltzFormer or the U-Net expert) to a Hugging Face "
        "Hub model repository, created if missing, with a model card written from its run "
        "folder and evaluation. Others then load it with --checkpoint ORG/NAME or "
        "Predictor.from_pretrained(\"ORG/NAME\").",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                   help="checkpoint folder (config.json + model.safetensors) or training run "
                   "folder (its best/, else last/, else its newest snapshot)")
    p.add_argument("repo_id", metavar="REPO_ID", help="the Hub repository, as org/name")
    p.add_argument("--private", action="store_true",
                   help="create the repository private (an existing one keeps its visibility)")
    p.add_argument("--revision", metavar="BRANCH",
                   help="upload to this branch, created if missing (default: main)")
    p.add_argument("--metrics", type=Path, metavar="PATH",
                   help="metrics.json of `boltzformer evaluate` (or its --out folder) whose "
                   "figures the card quotes (default: one in the checkpoint or run folder; "
                   "none: the card says the figures are unknown)")
    p.add_argument("--license", default="mit", metavar="ID",
                   help="the weights' license in the card's metadata, a Hub license id such as "
                   "mit, apache-2.0, cc-by-nc-4.0 or other (default mit, the code's)")
    p.add_argument("--token", metavar="TOKEN",
                   help="a Hub token that may write (default: HF_TOKEN or `hf auth login`'s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    url = push_checkpoint(args.checkpoint, args.repo_id, private=args.private,
                          revision=args.revision, token=args.token, metrics=args.metrics,
                          license=args.license)
    print(f"pushed {args.checkpoint} to {args.repo_id}: {url}")
    return 0
