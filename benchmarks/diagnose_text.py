"""Where does the `tiny` model's training time go: finding a small object, or reading the text?

One 128 x 128 image holds two small discs (0.5 % of the image each) at 2 noise sigmas of
contrast. With `--prompts 1` one disc is the target of one prompt: the model must only find
it. With `--prompts 2` both discs are targets, each of its own prompt ("nodule in lung CT",
"tumor in liver CT"), in one batch of two: the model must read the text to pick one. For each
attention mode and seed it prints the first step at which every prompt's Dice exceeds 0.9.

    python benchmarks/diagnose_text.py --prompts 1
    python benchmarks/diagnose_text.py --prompts 2 --steps 400
    python benchmarks/diagnose_text.py --prompts 2 --steps 300 --deep-supervision query mean
    python benchmarks/diagnose_text.py --prompts 2 --steps 300 --modes boltzmann \\
        --deep-supervision query off --size 64 --radius2 10 --layers 3   # the unit test's toy
    python benchmarks/diagnose_text.py ... --set text_layers=0     # any model override

`--deep-supervision` adds Dice + BCE on every decoder layer's prediction (the training
recipe's default, `query`: each query's own mask; `mean`: the ensemble mean); `off` is the
paper's loss alone. The image is encoded once for its prompts, as in training.

Results: docs/training.md (deep supervision off/query/mean) and docs/results/previous_recipe.md
(the first study, before the training recipe).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import yaml

from boltzformer import build_model
from boltzformer.evaluation.evaluate import dice_batch
from boltzformer.modeling.loss import training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, choices=(1, 2), default=2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=["full", "masked", "boltzmann"])
    parser.add_argument("--deep-supervision", nargs="+", default=["off"],
                        choices=["off", "query", "mean"])
    parser.add_argument("--size", type=int, default=128,
                        help="image side; the disc centres scale with it")
    parser.add_argument("--radius2", type=float, default=25, help="squared disc radius")
    parser.add_argument("--layers", type=int, default=9, help="decoder layers")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model config overrides (YAML values), e.g. text_layers=0; "
                        "text_encoder=labels reads the target names nodule and tumor")
    args = parser.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if overrides.get("text_encoder") == "labels":
        overrides["text_labels"] = ["nodule", "tumor"]
    torch.set_num_threads(1)

    n, at = args.size, args.size / 128
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    discs = [(((yy - 40 * at) ** 2 + (xx - 80 * at) ** 2) < args.radius2).float(),
             (((yy - 90 * at) ** 2 + (xx - 30 * at) ** 2) < args.radius2).float()]
    noise = torch.randn(1, 3, n, n, generator=torch.Generator().manual_seed(0))
    image = (80 + 25 * noise + 50 * (discs[0] + discs[1])).clamp(0, 255)
    prompts = ["nodule in lung CT", "tumor in liver CT"][: args.prompts]
    index = torch.zeros(len(prompts), dtype=torch.long)  # one image, encoded once
    targets = torch.stack(discs[: len(prompts)])[:, None]

    for deep, mode, seed in itertools.product(args.deep_supervision, args.modes,
                                              range(args.seeds)):
            torch.manual_seed(seed)
            model = build_model("tiny", image_size=n, attention=mode, num_layers=args.layers,
                                **overrides).train()
            opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
            generator = torch.Generator().manual_seed(seed)
            started, reached = time.monotonic(), None
            for step in range(1, args.steps + 1):
                out = model(image, prompts, image_index=index, generator=generator,
                            return_layers=deep != "off")
                loss, _ = training_loss(out.logits, targets, out.layer_logits,
                                        target="query" if deep == "off" else deep)
                opt.zero_grad()
                loss.backward()
                opt.step()
                dice = dice_batch(out.logits.detach() > 0, targets > 0.5).tolist()
                if min(dice) > 0.9:
                    reached = step
                    break
            print(f"deep supervision {deep:5s} {mode:9s} seed {seed}: every prompt's Dice > 0.9 "
                  f"at step {reached} "
                  f"(last Dice {', '.join(f'{d:.2f}' for d in dice)}; loss {loss.item():.3f}; "
                  f"{time.monotonic() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
