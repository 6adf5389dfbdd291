"""The size floor (not in the paper; docs/fidelity.md): an answer smaller than a share of its
target's usual size is "absent", an empty mask.

A small organ that the image lacks tends to be answered with a speck (a few pixels where it
would be); a real one is rarely that small. `sizes` holds, per target name, a low percentile
of its objects' areas (share of the image) in the training split; an answer whose area (the
share of pixels above 0.5) is below `fraction` times its target's size is made empty. The
fraction is chosen on the validation split (`boltzformer calibrate`, `calibrate.py`). A
prompt meets its target's floor when it names it ("left adrenal gland" or "left adrenal
gland in abdomen CT", as the "labels" text encoder reads prompts); any other prompt has no
floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from boltzformer.modeling.config import check_size_floor
from boltzformer.modeling.existence import empty_answers
from boltzformer.modeling.text_encoder import label_of_prompt


@dataclass(frozen=True)
class SizeFloor:
    """sizes: target name -> usual smallest area (share of the image, in (0, 1]); fraction:
    the floor is `fraction * sizes[target]` (0: no floor)."""

    sizes: Mapping[str, float]
    fraction: float

    def __post_init__(self) -> None:
        check_size_floor(dict(self.sizes), self.fraction)

    def floor_of(self, prompt: str, target: str | None = None) -> float:
        """The smallest area (share of the image) an answer to `prompt` may have: by
        `target` when given, else by the target name the prompt names; 0 for none."""
        name = target if target is not None else label_of_prompt(prompt, list(self.sizes))
        return self.fraction * self.sizes.get(name, 0.0) if name is not None else 0.0

    def floors(self, prompts: Sequence[str], targets: Sequence[str] | None = None) -> Tensor:
        """(B,) floors of B prompts (and their target names, when known)."""
        names = list(targets) if targets is not None else [None] * len(prompts)
        return torch.tensor([self.floor_of(p, t) for p, t in zip(prompts, names)])


def size_floor_or_none(sizes: Mapping[str, float], fraction: float) -> SizeFloor | None:
    """A model config's size floor: None when it is off (no sizes, or a fraction of 0)."""
    return SizeFloor(sizes, fraction) if sizes and fraction > 0 else None


def below_floor(logits: Tensor, floors: Tensor) -> Tensor:
    """(B,) bool: whether each answer's area, the share of its pixels whose logit is above 0
    (probability above 0.5) in logits (B, 1, H, W), is below its floor (B,) (shares)."""
    area = (logits > 0).flatten(1).float().mean(1)
    return area < floors.to(area.device, area.dtype)


def answer_floor(logits: Tensor, floor: SizeFloor | None, prompts: Sequence[str],
                 targets: Sequence[str] | None = None) -> tuple[Tensor, Tensor | None]:
    """(logits with answers under their floor made empty, (B,) bool which were) for B
    answers to `prompts`; `logits` and None without a floor."""
    if floor is None:
        return logits, None
    small = below_floor(logits, floor.floors(prompts, targets))
    return empty_answers(logits, small), small

