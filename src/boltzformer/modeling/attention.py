"""Attention blocks of the BoltzFormer decoder.

`SampledCrossAttention` is the paper's Step 2: each query attends only to the image tokens in
its own sampled set. Its implementations share parameters, so one set of weights runs through
any of them:

- "dense": the reference. Scores against every token, unsampled ones masked to -inf, as the
  authors' release does (it saves nothing; it defines the right answer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CROSS_ATTENTION_IMPLS: tuple[str, ...] = ("dense",)


class SampledCrossAttention(nn.Module):
    """Multi-head cross-attention restricted to each query's kept tokens.

    Every head of a query shares that query's keep mask (as in the paper and release).
    """

    def __init__(self, dim: int, num_heads: int, *, impl: str = "dense") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        if impl not in CROSS_ATTENTION_IMPLS:
            raise ValueError(
                f"unknown attention impl {impl!r}; choose one of {', '.join(CROSS_ATTENTION_IMPLS)}"
            )
        self.num_heads = num_heads
        self.impl = impl
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, keep: Tensor | None) -> Tensor:
        """Attend.

        Args:
            query: (B, Q, d) queries (positional embedding already added).
            key: (B, n, d) image tokens with positional encoding added.
            value: (B, n, d) image tokens.
            keep: (B, Q, n) bool, True where a query may attend; None attends to every token.
        Returns:
            (B, Q, d) the attention output (before the residual), Eq. for H_j and W^O.
        """
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        mask = None if keep is None else keep[:, None]  # shared by all heads: (B, 1, Q, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, nq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))


class CrossAttentionLayer(nn.Module):
    """q <- LayerNorm(q + SampledCrossAttention(q + pos, V + pos_V, V, keep))  (Step 2)."""

    def __init__(self, dim: int, num_heads: int, *, impl: str = "dense", dropout: float = 0.0):
        super().__init__()
        self.attn = SampledCrossAttention(dim, num_heads, impl=impl)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, q: Tensor, q_pos: Tensor, memory: Tensor, memory_pos: Tensor, keep: Tensor | None
    ) -> Tensor:
        """q (B, Q, d); memory, memory_pos (B, n, d); keep (B, Q, n) -> (B, Q, d)."""
        out = self.attn(q + q_pos, memory + memory_pos, memory, keep)
        return self.norm(q + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    """x <- LayerNorm(x + SelfAttn(x + pos)) over the joint [queries, text tokens] sequence."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, padding: Tensor | None = None) -> Tensor:
        """x, pos (B, S, d); padding (B, S) bool, True at padded text tokens -> (B, S, d)."""
        qk = x + pos
        out = self.attn(qk, qk, x, key_padding_mask=padding, need_weights=False)[0]
        return self.norm(x + self.dropout(out))


class FFNLayer(nn.Module):
    """x <- LayerNorm(x + Linear(ReLU(Linear(x))))."""

    def __init__(self, dim: int, hidden: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.dropout(self.net(x)))


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between layers."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x
