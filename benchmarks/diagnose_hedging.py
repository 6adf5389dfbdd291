"""Why do some study runs score Dice 0? Look at the logits of every trained run.

For each run in STUDY_DIR/runs/*/last, on 64 test samples spread over the split: the largest
output logit over all pixels, the mean logit on target pixels, and the share of samples
whose predicted mask is empty (no pixel above probability 0.5). A run that cannot yet tell
the targets apart by their prompt "hedges": it spreads probability below 0.5 over every
plausible organ, which a soft Dice + BCE loss rewards and a 0.5 threshold turns into an
empty mask.

    python benchmarks/diagnose_hedging.py STUDY_DIR   # `boltzformer study STUDY_DIR`'s output

It needs the runs' checkpoints, which are not committed (benchmarks/runs/ holds the study's
results without them). Results are in docs/results/hedging.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from boltzformer.apps.study import CONSTANT_PROMPT
from boltzformer.data import BiomedParseDataset
from boltzformer.modeling.boltzformer import BoltzFormer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = sorted(p.parent for p in (args.study_dir / "runs").glob("*/last"))
    if not runs:
        raise SystemExit(f"no runs with checkpoints under {args.study_dir / 'runs'}")
    print("| run | max logit | mean logit on target | empty masks | Dice (all, study) |")
    print("|---|---:|---:|---:|---:|")
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        model = BoltzFormer.from_pretrained(run / "last").eval()
        size = model.config.image_size
        prompt = CONSTANT_PROMPT if "constant-prompt" in run.name else None
        test = BiomedParseDataset(args.study_dir / "data", "test", image_size=size, train=False,
                                  prompt=prompt)
        step = max(1, len(test) // args.samples)
        items = [test[i] for i in range(0, len(test), step)][: args.samples]
        images = torch.stack([s["image"] for s in items]).float()
        masks = torch.stack([s["mask"] for s in items]) > 0.5
        with torch.no_grad():
            logits = model(images, [s["prompt"] for s in items],
                           generator=torch.Generator().manual_seed(0)).logits
        empty = (logits.flatten(1).amax(1) <= 0).float().mean()
        print(f"| {run.name} | {logits.max():.1f} | {logits[masks].mean():.1f} | "
              f"{100 * empty:.0f} % | {100 * result['all']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
