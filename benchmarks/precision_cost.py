"""Seconds per training step of the demo's two models in float32, bf16 and bf16 with
channels-last convolutions, one thread, the variants interleaved round by round so that
whatever else the machine does falls on each alike.

    python benchmarks/precision_cost.py [--rounds 5]

BoltzFormer: the demo's `tiny` model at 256², 4 random images × 8 prompts, forward with the
layers' deep supervision, backward (no optimiser step). The U-Net expert: 8 random images,
all 19 channels (`multilabel_dice_bce`), forward, backward and AdamW. Self-attention: the
`nn.MultiheadAttention` the decoder's self-attention layers wrap, on the demo's 32 pairs of
101 queries + 8 text tokens (width 128, 4 heads), forward and backward (why those layers stay
float32 under CPU autocast). Medians after one warm-up round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from boltzformer.baselines import UNetBaselineConfig, UNetExpert
from boltzformer.baselines.unet_training import multilabel_dice_bce
from boltzformer.modeling.boltzformer import build_model

LABELS = tuple(f"t{i}" for i in range(19))
VARIANTS = {"float32": (False, False), "bf16": (True, False), "bf16 + channels-last": (True, True)}


def boltzformer_step(bf16: bool, channels_last: bool) -> Callable[[], None]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("tiny", image_size=256, text_encoder="labels", text_labels=LABELS)
    model.train().to(memory_format=layout)
    images = (torch.rand(4, 3, 256, 256) * 255).contiguous(memory_format=layout)
    prompts = [LABELS[i % 19] for i in range(32)]
    index = torch.arange(4).repeat_interleave(8)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(images, prompts, image_index=index, generator=generator,
                        return_layers=True, layer_pool=2)
        loss = out.logits.float().mean() + sum(t.float().mean() for t in out.layer_logits)
        loss.backward()
    return step


def unet_step(bf16: bool, channels_last: bool) -> Callable[[], None]:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = UNetExpert(UNetBaselineConfig(LABELS)).train().to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters())
    images = (torch.rand(8, 3, 256, 256) * 255).contiguous(memory_format=layout)
    masks = (torch.rand(8, 19, 256, 256) > 0.99).float()
    annotated = torch.ones(8, 19, dtype=torch.bool)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model.channel_logits(images)
        loss = multilabel_dice_bce(logits.float(), masks, annotated)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return step


def attention_step(bf16: bool, channels_last: bool) -> Callable[[], None]:
    attn = torch.nn.MultiheadAttention(128, 4, batch_first=True)
    x = torch.randn(32, 109, 128, requires_grad=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = attn(x, x, x, need_weights=False)[0]
        out.float().sum().backward()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name, build in (("BoltzFormer tiny", boltzformer_step), ("U-Net expert", unet_step),
                        ("self-attention", attention_step)):
        variants = VARIANTS if build is not attention_step else dict(list(VARIANTS.items())[:2])
        steps = {v: build(*flags) for v, flags in variants.items()}
        times: dict[str, list[float]] = {v: [] for v in steps}
        for round_ in range(args.rounds + 1):
            for variant, step in steps.items():
                start = time.perf_counter()
                step()
                if round_:  # the first round warms up
                    times[variant].append(time.perf_counter() - start)
        base = statistics.median(times["float32"])
        for variant, values in times.items():
            median = statistics.median(values)
            print(f"{name:17s} {variant:22s} {median:6.3f} s  {base / median:4.2f}x")


if __name__ == "__main__":
    main()
