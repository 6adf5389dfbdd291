"""The existence head (not in the paper; docs/fidelity.md): is the prompted target in the image?

BiomedParse v2, built on BoltzFormer, predicts an existence probability per prompt; the paper's
model answers every prompt with a mask. With `existence_head: true` the decoded queries are
pooled by attention, the pooling query made from the prompt's text tokens, and a small MLP
reads [pool, text] to one logit per prompt. Training adds BCE against "the mask has a pixel"
(`loss.existence_weight`); at inference an answer whose probability is below 0.5 is an empty
mask (`gate_logits`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from boltzformer.modeling.attention import MLP

#: logit given to every pixel of an answer judged absent: sigmoid(-1e4) is exactly 0
ABSENT_LOGIT = -1e4


class ExistenceHead(nn.Module):
    """queries (B, Q, d), text tokens (B, T, d) and padding (B, T) -> existence logits (B,)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden_dim)
        self.norm_t = nn.LayerNorm(hidden_dim)
        self.key = nn.Linear(hidden_dim, hidden_dim)
        self.query = nn.Linear(hidden_dim, hidden_dim)
        self.mlp = MLP(2 * hidden_dim, hidden_dim, 1, 2)

    def forward(self, queries: Tensor, text: Tensor, padding: Tensor) -> Tensor:
        q = self.norm_q(queries)
        keep = (~padding).unsqueeze(-1).to(text.dtype)  # (B, T, 1)
        t = self.norm_t((text * keep).sum(1) / keep.sum(1).clamp_min(1))  # (B, d) mean of tokens
        scores = torch.einsum("bqd,bd->bq", self.key(q), self.query(t)) / q.shape[-1] ** 0.5
        pooled = torch.einsum("bq,bqd->bd", scores.softmax(-1), q)  # attention pool over Q
        return self.mlp(torch.cat([pooled, t], -1)).squeeze(-1)


def gate_logits(logits: Tensor, existence_logits: Tensor | None,
                threshold: float = 0.5) -> Tensor:
    """Mask logits (B, 1, H, W) with every answer whose existence probability is below
    `threshold` made empty (`ABSENT_LOGIT`); unchanged without existence logits (B,)."""
    if existence_logits is None:
        return logits
    absent = (existence_logits.sigmoid() < threshold).view(-1, *[1] * (logits.ndim - 1))
    return logits.masked_fill(absent.to(logits.device), ABSENT_LOGIT)
