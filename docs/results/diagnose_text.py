"""Where does the `tiny` model's training time go: finding a small object, or reading the text?

One 128 x 128 image holds two small discs (0.5 % of the image each) at 2 noise sigmas of
contrast. With `--prompts 1` one disc is the target of one prompt: the model must only find
it. With `--prompts 2` both discs are targets, each of its own prompt ("nodule in lung CT",
"tumor in liver CT"), in one batch of two: the model must read the text to pick one. For each
attention mode and seed it prints the first step at which every prompt's Dice exceeds 0.9.

    python docs/results/diagnose_text.py --prompts 1
    python docs/results/diagnose_text.py --prompts 2 --steps 400

Results are in docs/results/README.md.
"""

from __future__ import annotations

import argparse
import time

import torch

from boltzformer import build_model
from boltzformer.evaluate import dice_batch
from boltzformer.loss import dice_bce_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, choices=(1, 2), default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "masked", "boltzmann"])
    args = parser.parse_args()
    torch.set_num_threads(1)

    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    discs = [(((yy - 40) ** 2 + (xx - 80) ** 2) < 25).float(),
             (((yy - 90) ** 2 + (xx - 30) ** 2) < 25).float()]
    noise = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    image = (80 + 25 * noise + 50 * (discs[0] + discs[1])).clamp(0, 255)
    prompts = ["nodule in lung CT", "tumor in liver CT"][: args.prompts]
    images = image.expand(len(prompts), -1, -1, -1)
    targets = torch.stack(discs[: len(prompts)])[:, None]

    for mode in args.modes:
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            model = build_model("tiny", image_size=128, attention=mode).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            generator = torch.Generator().manual_seed(seed)
            started, reached = time.monotonic(), None
            for step in range(1, args.steps + 1):
                out = model(images, prompts, generator=generator)
                loss = dice_bce_loss(out.logits, targets)
                opt.zero_grad()
                loss.backward()
                opt.step()
                dice = dice_batch(out.logits.detach() > 0, targets > 0.5).tolist()
                if min(dice) > 0.9:
                    reached = step
                    break
            print(f"{mode:9s} seed {seed}: every prompt's Dice > 0.9 at step {reached} "
                  f"(last Dice {', '.join(f'{d:.2f}' for d in dice)}; loss {loss.item():.3f}; "
                  f"{time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
