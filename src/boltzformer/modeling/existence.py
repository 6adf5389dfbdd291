"""The existence head (not in the paper; docs/fidelity.md): is the prompted target in the image?

BiomedParse v2, built on BoltzFormer, predicts an existence probability per prompt; the paper's
model answers every prompt with a mask. With `existence_head: true` the decoded queries are
pooled by attention, the pooling query made from the prompt's text tokens, and a small MLP
reads [pool, text] to one logit per prompt. With `evidence_dim` (`existence_evidence: true`)
it also reads the image's evidence where the model looks: S pooled under the prompt's predicted
mask (the queries' mean probability, detached) and that mask's peak probability. Training adds
BCE against "the mask has a pixel"
(`loss.existence_weight`); at inference an answer whose probability is below 0.5 is an empty
mask (`gate_logits`). That threshold is an operating point too: where the head has only
learnt a target's base rate (nodules, about 0.4 on every chest slice), a lower one lets the
mask decide (docs/results/absent_targets.md, "operating points").

Apart from the head, any model's answer has its own confidence, `mask_score` (Mask2Former's:
the mean probability where the mask paints). `score_gate` makes an answer whose score is
below a chosen `min_score` empty: an operating point between false positives on absent
targets and Dice on present ones (docs/results/absent_targets.md), off (0) by default.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from boltzformer.modeling.attention import MLP

#: logit given to every pixel of an answer judged absent: sigmoid(-1e4) is exactly 0
ABSENT_LOGIT = -1e4
#: existence probability below which an answer is "absent" (an empty mask)
EXISTENCE_THRESHOLD = 0.5


class ExistenceHead(nn.Module):
    """queries (B, Q, d), text tokens (B, T, d) and padding (B, T) [, evidence (B, D + 1)]
    -> existence logits (B,)."""

    def __init__(self, hidden_dim: int, evidence_dim: int | None = None) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden_dim)
        self.norm_t = nn.LayerNorm(hidden_dim)
        self.key = nn.Linear(hidden_dim, hidden_dim)
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.norm_e = nn.LayerNorm(evidence_dim + 1) if evidence_dim else None
        self.mlp = MLP(2 * hidden_dim + (evidence_dim + 1 if evidence_dim else 0), hidden_dim,
                       1, 2)

    def forward(self, queries: Tensor, text: Tensor, padding: Tensor,
                evidence: Tensor | None = None) -> Tensor:
        q = self.norm_q(queries)
        keep = (~padding).unsqueeze(-1).to(text.dtype)  # (B, T, 1)
        t = self.norm_t((text * keep).sum(1) / keep.sum(1).clamp_min(1))  # (B, d) mean of tokens
        scores = torch.einsum("bqd,bd->bq", self.key(q), self.query(t)) / q.shape[-1] ** 0.5
        pooled = torch.einsum("bq,bqd->bd", scores.softmax(-1), q)  # attention pool over Q
        parts = [pooled, t]
        if self.norm_e is not None:
            if evidence is None:
                raise ValueError("this existence head reads the mask's evidence: pass it")
            parts.append(self.norm_e(evidence))
        return self.mlp(torch.cat(parts, -1)).squeeze(-1)


def mask_evidence(query_logits: Tensor, semantic: Tensor) -> Tensor:
    """The image's evidence for a prompt where its mask lies: S (B, D, h, w) averaged under
    the queries' mean probability (B, Q, h', w', resized to S's grid), and that probability's
    peak -> (B, D + 1). The probability is detached: the head does not move the masks."""
    weight = query_logits.detach().float().sigmoid().mean(1, keepdim=True)
    if weight.shape[-2:] != semantic.shape[-2:]:
        h, w = semantic.shape[-2:]
        weight = torch.nn.functional.adaptive_avg_pool2d(weight, (h, w))
    weight = weight.to(semantic.dtype)
    pooled = (weight * semantic).sum((2, 3)) / weight.sum((2, 3)).clamp_min(1e-6)
    return torch.cat([pooled, weight.flatten(1).amax(1, keepdim=True)], 1)


def mask_score(logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Each answer's own confidence (Mask2Former's mask score): the mean probability over the
    pixels its mask paints (probability above `threshold`) -> (B,); 0 where it paints none.
    logits (B, 1, H, W), read before any gate or floor."""
    prob = logits.float().sigmoid().flatten(1)
    painted = prob > threshold
    return (prob * painted).sum(1) / painted.sum(1).clamp_min(1)


def gate_logits(logits: Tensor, existence_logits: Tensor | None,
                threshold: float = EXISTENCE_THRESHOLD) -> Tensor:
    """Mask logits (B, 1, H, W) with every answer whose existence probability is below
    `threshold` made empty (`ABSENT_LOGIT`); unchanged without existence logits (B,)."""
    if existence_logits is None:
        return logits
    return empty_answers(logits, existence_logits.sigmoid() < threshold)


def empty_answers(logits: Tensor, which: Tensor) -> Tensor:
    """Mask logits (B, 1, H, W) with the answers where `which` (B,) bool is True made empty
    (`ABSENT_LOGIT` everywhere): what the existence gate, the size floor and the score gate
    each do to the answers they reject."""
    view = which.to(logits.device).view(-1, *[1] * (logits.ndim - 1))
    return logits.masked_fill(view, ABSENT_LOGIT)


def check_min_score(min_score: float, name: str = "min_score") -> float:
    """`min_score` if it lies in [0, 1], else a ValueError naming it `name` (an option's
    flag, for a command)."""
    return _in_unit_range(min_score, name)


def model_existence_threshold(model: object, threshold: float | None = None) -> float:
    """`threshold`, or when None the one `model`'s config holds (`boltzformer calibrate`
    chooses it; EXISTENCE_THRESHOLD for a model without one), checked to lie in [0, 1]
    (`check_existence_threshold`)."""
    if threshold is None:
        threshold = float(getattr(getattr(model, "config", None), "existence_threshold",
                                  EXISTENCE_THRESHOLD))
    return check_existence_threshold(threshold)


def check_existence_threshold(threshold: float, name: str = "existence_threshold") -> float:
    """`threshold` if it lies in [0, 1], else a ValueError naming it `name`."""
    return _in_unit_range(threshold, name)


def _in_unit_range(value: float, name: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def score_gate(logits: Tensor, scores: Tensor, min_score: float) -> tuple[Tensor, Tensor]:
    """Mask logits (B, 1, H, W) with every answer whose mask score (B,) (`mask_score` of its
    logits before any gate; 0 for one that paints nothing) is below `min_score` made empty
    (`ABSENT_LOGIT`), and (B,) bool which were: "unsure" (0: none)."""
    unsure = scores < check_min_score(min_score)
    return empty_answers(logits, unsure), unsure
