"""Attention blocks of the BoltzFormer decoder.

`SampledCrossAttention` is the paper's Step 2: each query attends only to the image tokens in
its own sampled set. Its implementations share parameters, so one set of weights runs through
any of them and gives the same result:

- "dense": the reference. Scores against every token, unsampled ones masked to -inf, as the
  authors' release does (it saves nothing; it defines the right answer).
- "sparse": touches only the kept tokens. Each query's kept tokens are gathered (queries
  sorted by kept count, each chunk padded to its own largest count K), and the key and value
  projections are moved to the query side by linearity, so no token is projected at all:
      score_j(q, x) = (W_Q^j q) . (W_K^j k_x + b_K^j) = (W_K^jT W_Q^j q) . k_x + (W_Q^j q) . b_K^j
      H_j = sum_x a_jx (W_V^j v_x + b_V^j) = W_V^j (sum_x a_jx v_x) + b_V^j     (sum_x a_jx = 1)
  Scores and weighted sums cost 2 Q h K d multiply-adds instead of 2 n d^2 (projections) +
  2 Q n d. Keys are the memory plus a separable positional encoding (`GridPositions`), so one
  gather serves keys and values. Gathers happen in cache-sized chunks of queries and are
  recomputed in the backward pass, so memory stays O(Q h K), the size of the attention map.
  (Paper Sec. 3.2.2, Step 2: the equations for alpha and H_j.)
- "auto" (the default): "sparse" where it is predicted to be faster (`prefers_sparse`), else
  "dense"; full attention (no keep mask) is always dense.

A keep mask is (B, Q, n), one set per query shared by its heads (the paper), or (B, h, Q, n),
one set per query and head (the authors' release draws them so; `sampling_per_head`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.profiler import record_function

from boltzformer.modeling.config import CROSS_ATTENTION_IMPLS
from boltzformer.modeling.position import GridPositions

# Queries are processed in chunks whose gathered tokens take about this many bytes, so the
# gathered block is still in cache when the two matrix products read it.
CHUNK_BYTES = 4 * 2**20
# The sparse path streams gathered copies through memory and pays a fixed cost per call (index
# building, a loop over chunks); the dense one runs large matrix products at full speed. "auto"
# picks sparse when it needs at most this fraction of the dense multiply-adds and the dense
# work is at least this large (measured on CPU: docs/benchmarks.md).
SPARSE_MAX_COST_RATIO = 0.3
SPARSE_MIN_DENSE_MACS = 2**24
# Prefix of the profiler ranges that mark a model part (apps/profiling.py reads them).
PART = "part:"


def check_impl(impl: str) -> str:
    """Return `impl` if it names a cross-attention implementation, else raise."""
    if impl not in CROSS_ATTENTION_IMPLS:
        raise ValueError(
            f"unknown attention impl {impl!r}; choose one of {', '.join(CROSS_ATTENTION_IMPLS)}"
        )
    return impl


def attention_macs(batch: int, num_queries: int, num_tokens: int, dim: int, num_heads: int,
                   kept_pairs: int | None = None) -> int:
    """Multiply-adds of the key/value side of one cross-attention call.

    dense (kept_pairs None): 2 B n d^2 (key and value projections) + 2 B Q n d (scores and
    weighted sums); sparse: 2 h P d for P kept (query, token) pairs (scores and weighted sums
    at model width). The query and output projections are common to both and left out.
    """
    if kept_pairs is None:
        return 2 * batch * num_tokens * dim * (dim + num_queries)
    return 2 * num_heads * kept_pairs * dim


def prefers_sparse(batch: int, num_queries: int, num_tokens: int, dim: int, num_heads: int,
                   kept_pairs: int) -> bool:
    """The "auto" rule: is the sparse path predicted to be faster than the dense one?"""
    dense = attention_macs(batch, num_queries, num_tokens, dim, num_heads)
    sparse = attention_macs(batch, num_queries, num_tokens, dim, num_heads, kept_pairs)
    return dense >= SPARSE_MIN_DENSE_MACS and sparse <= SPARSE_MAX_COST_RATIO * dense


@dataclass(frozen=True)
class KeptTokens:
    """Each query's kept tokens, packed to the left, rows sorted by how many they keep.

    order: (R,) long, the (b * Q + q) row of each packed row, by ascending kept count;
    tokens: (R, K) long, kept token indices (0 in padding), K the largest kept count;
    valid: (R, K) bool, False in padding; counts: the kept count of each packed row.
    """

    order: Tensor
    tokens: Tensor
    valid: Tensor
    counts: list[int]


def gather_index(keep: Tensor) -> KeptTokens:
    """Pack the kept tokens of every query of `keep` (B, Q, n) bool (see `KeptTokens`)."""
    b, nq, n = keep.shape
    counts, order = keep.reshape(b * nq, n).count_nonzero(-1).sort(stable=True)
    row, token = keep.reshape(b * nq, n)[order].nonzero(as_tuple=True)  # grouped by row
    slot = torch.arange(row.numel(), device=keep.device) - (counts.cumsum(0) - counts)[row]
    capacity = int(counts[-1])
    tokens = torch.zeros(b * nq, capacity, dtype=torch.long, device=keep.device)
    valid = torch.zeros(b * nq, capacity, dtype=torch.bool, device=keep.device)
    tokens[row, slot] = token
    valid[row, slot] = True
    return KeptTokens(order, tokens, valid, counts.tolist())


Chunks = tuple[tuple[int, int, int], ...]


def plan_chunks(counts: list[int], width: int, itemsize: int) -> Chunks:
    """Split rows sorted by kept count into (lo, hi, capacity) chunks.

    A chunk's gathered block, rows x its own largest count x width, fits in `CHUNK_BYTES`
    (at least one row per chunk), so a chunk is padded only to its own largest count.
    """
    chunks = []
    lo = 0
    while lo < len(counts):
        hi = lo + 1
        while hi < len(counts) and (hi + 1 - lo) * counts[hi] * width * itemsize <= CHUNK_BYTES:
            hi += 1
        chunks.append((lo, hi, counts[hi - 1]))
        lo = hi
    return tuple(chunks)


class GatheredAttention(torch.autograd.Function):
    """Attention of every row over its own gathered rows of one shared matrix x.

    out[r] = softmax(bias[r] + q[r] @ x[rows[r]]^T) @ x[rows[r]]

    Args (to `apply`):
        q: (R, h, d) queries (already scaled); bias: (R, h, K) additive scores (-inf at
        padding); x: (N, d) the rows to gather from; rows: (R, K) long indices into x;
        chunks: from `plan_chunks`; in each, only the first `capacity` columns are used.
    Returns:
        (R, h, d). Only the attention probabilities (R, h, K) are kept for the backward pass;
        the gathered (rows, capacity, d) blocks are rebuilt there.

    `ctx` is autograd's context object, typed Any: it carries `chunks`, an attribute of ours,
    and torch types its `saved_tensors` as a 1-tuple.
    """

    @staticmethod
    def forward(ctx: Any, q: Tensor, bias: Tensor, x: Tensor, rows: Tensor,
                chunks: Chunks) -> Tensor:
        if not q.dtype == bias.dtype == x.dtype:
            raise ValueError(f"q, bias and x must share a dtype, got {q.dtype}, {bias.dtype}, "
                             f"{x.dtype}")
        out = q.new_empty(q.shape)
        probs = torch.zeros_like(bias)
        with torch.autocast(x.device.type, enabled=False):  # dtypes are fixed by the caller
            for lo, hi, cap, xs in _gathered_chunks(x, rows, chunks):
                scores = torch.baddbmm(bias[lo:hi, :, :cap], q[lo:hi], xs.transpose(1, 2))
                p = torch.softmax(scores, -1, dtype=torch.float32).to(scores.dtype)
                probs[lo:hi, :, :cap] = p
                torch.bmm(p, xs, out=out[lo:hi])
        ctx.save_for_backward(q, x, rows, probs)
        ctx.chunks = chunks
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, x, rows, probs = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            return GatheredAttention._backward(ctx, grad_out.to(q.dtype), q, x, rows, probs)

    @staticmethod
    def _backward(ctx: Any, grad_out: Tensor, q: Tensor, x: Tensor, rows: Tensor,
                  probs: Tensor) -> tuple[Tensor | None, ...]:
        need_q, need_bias, need_x = ctx.needs_input_grad[:3]
        grad_q = torch.empty_like(q) if need_q else None
        grad_bias = torch.zeros_like(probs) if need_bias else None
        grad_x = torch.zeros_like(x) if need_x else None
        for lo, hi, cap, xs in _gathered_chunks(x, rows, ctx.chunks):
            p, go = probs[lo:hi, :, :cap], grad_out[lo:hi]
            grad_p = torch.bmm(go, xs.transpose(1, 2))
            grad_s = p * (grad_p - (p * grad_p).sum(-1, keepdim=True))  # softmax backward
            if grad_bias is not None:
                grad_bias[lo:hi, :, :cap] = grad_s
            if grad_q is not None:
                torch.bmm(grad_s, xs, out=grad_q[lo:hi])
            if grad_x is not None:  # x enters as keys (grad_s^T q) and as values (p^T go)
                torch.bmm(torch.cat([grad_s, p], 1).transpose(1, 2), torch.cat([q[lo:hi], go], 1),
                          out=xs)
                grad_x.index_add_(0, rows[lo:hi, :cap].reshape(-1), xs.view(-1, x.shape[1]))
        return grad_q, grad_bias, grad_x, None, None


def _gathered_chunks(x: Tensor, rows: Tensor, chunks: Chunks
                     ) -> Iterator[tuple[int, int, int, Tensor]]:
    """Yield (lo, hi, capacity, x[rows[lo:hi, :capacity]] as (hi - lo, capacity, d)).

    The yielded block is a reused buffer: the next chunk overwrites it.
    """
    d = x.shape[1]
    buffer = x.new_empty(max((hi - lo) * cap for lo, hi, cap in chunks), d)
    for lo, hi, cap in chunks:
        block = buffer[: (hi - lo) * cap]
        torch.index_select(x, 0, rows[lo:hi, :cap].reshape(-1), out=block)
        yield lo, hi, cap, block.view(hi - lo, cap, d)


class SampledCrossAttention(nn.Module):
    """Multi-head cross-attention restricted to each query's kept tokens.

    Keys are `memory + pos`, values are `memory` (the release adds the positional encoding
    to keys only). A (B, Q, n) keep mask is shared by every head of a query (the paper); a
    (B, h, Q, n) one gives each head its own (the release).
    """

    def __init__(self, dim: int, num_heads: int, *, impl: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.impl = check_impl(impl)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self, query: Tensor, memory: Tensor, keep: Tensor | None,
        pos: GridPositions | None = None,
    ) -> Tensor:
        """Attend.

        Args:
            query: (B, Q, d) queries (positional embedding already added).
            memory: (B, n, d) image tokens: the values, and the keys once `pos` is added.
            keep: (B, Q, n) bool, True where a query may attend, or (B, h, Q, n) per head;
                None attends to every token.
            pos: the positional encoding of the n tokens, added to the keys; None adds none.
        Returns:
            (B, Q, d) the attention output (before the residual), Eq. for H_j and W^O.
        """
        b, nq, d = query.shape
        n = memory.shape[1]
        if pos is not None and (pos.num_tokens, pos.dim) != (n, d):
            raise ValueError(
                f"positional encoding is for {pos.num_tokens} tokens of width {pos.dim}, but "
                f"memory is {tuple(memory.shape)}"
            )
        if keep is None or self.impl == "dense":
            return self._dense(query, memory, keep, pos)
        if keep.shape not in ((b, nq, n), (b, self.num_heads, nq, n)):
            raise ValueError(f"keep mask is {tuple(keep.shape)}; expected (B, Q, n) = "
                             f"{(b, nq, n)} or (B, h, Q, n) = {(b, self.num_heads, nq, n)}")
        per_head = keep.ndim == 4
        # per head, each (query, head) pair costs what a query costs for all heads, / h
        pairs = int(keep.count_nonzero()) // (self.num_heads if per_head else 1)
        if self.impl == "auto" and not prefers_sparse(b, nq, n, d, self.num_heads, pairs):
            return self._dense(query, memory, keep, pos)
        return self._sparse(query, memory, keep, pos)

    def _dense(
        self, query: Tensor, memory: Tensor, keep: Tensor | None, pos: GridPositions | None
    ) -> Tensor:
        """The reference: project every token, mask the scores of unsampled ones."""
        key = memory if pos is None else memory + pos.dense()
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(memory))
        # (B, 1, Q, n): shared by all heads; (B, h, Q, n): one per head
        mask = keep if keep is None or keep.ndim == 4 else keep[:, None]
        with record_function(PART + "attention"):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, nq, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, -1))

    def _sparse(
        self, query: Tensor, memory: Tensor, keep: Tensor, pos: GridPositions | None
    ) -> Tensor:
        """Scores and weighted sums over each query's kept tokens only (see module doc)."""
        b, nq, d = query.shape
        n, h = memory.shape[1], self.num_heads
        dh = d // h
        q = self.q_proj(query).view(b * nq, h, dh) * dh**-0.5
        with record_function(PART + "folding"):
            # Keys by linearity: q . (W_K k + b_K) = (W_K^T q) . k + q . b_K, per head.
            folded = torch.einsum("rhe,hed->rhd", q, self.k_proj.weight.view(h, dh, d))
            bias = (q * self.k_proj.bias.view(h, dh)).sum(-1, keepdim=True)  # (B Q, h, 1)
        per_batch = nq
        if keep.ndim == 4:  # one row per (query, head), each with its own tokens
            keep = keep.transpose(1, 2).reshape(b, nq * h, n)
            folded, bias = folded.reshape(b * nq * h, 1, d), bias.reshape(b * nq * h, 1, 1)
            per_batch = nq * h
        with record_function(PART + "index"):
            kept = gather_index(keep)  # rows sorted by kept count
            if kept.counts[0] == 0:  # the fewest first
                raise ValueError("a query keeps no token at all; give it every token "
                                 "(sampling.ensure_nonempty)")
            folded, bias = folded[kept.order], bias[kept.order]
            if pos is not None:
                bias = bias + pos.to(folded.dtype).dot(folded, kept.tokens)
            bias = bias.masked_fill(~kept.valid[:, None, :], float("-inf"))
            rows = kept.tokens + (kept.order // per_batch * n)[:, None]  # into (B n, d)
        # One compute dtype: autocast's where it is on (as SDPA would run), else memory's.
        device = query.device.type
        dtype = (torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device)
                 else memory.dtype)
        with record_function(PART + "gathered attention"):
            flat = memory.reshape(b * n, d).contiguous().to(dtype)  # gathers read whole rows
            chunks = plan_chunks(kept.counts, d, flat.element_size())
            mixed = GatheredAttention.apply(folded.to(dtype), bias.to(dtype), flat, rows,
                                            chunks)
            mixed = mixed[kept.order.argsort()].reshape(b * nq, h, d)  # back to (b, q) order
        with record_function(PART + "folding"):
            # Values by linearity: sum a (W_V v + b_V) = W_V (sum a v) + b_V, per head.
            out = torch.einsum("rhd,hed->rhe", mixed, self.v_proj.weight.view(h, dh, d))
            out = out + self.v_proj.bias.view(h, dh)
        return self.out_proj(out.reshape(b, nq, d))


class CrossAttentionLayer(nn.Module):
    """q <- LayerNorm(q + SampledCrossAttention(q + pos, V, keep, pos_V))  (Step 2)."""

    def __init__(self, dim: int, num_heads: int, *, impl: str = "auto", dropout: float = 0.0):
        super().__init__()
        self.attn = SampledCrossAttention(dim, num_heads, impl=impl)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, q: Tensor, q_pos: Tensor, memory: Tensor, memory_pos: GridPositions,
        keep: Tensor | None,
    ) -> Tensor:
        """q (B, Q, d); memory (B, n, d) with positions of its n tokens; keep (B, Q, n), or
        (B, h, Q, n) per head -> (B, Q, d)."""
        out = self.attn(q + q_pos, memory, keep, memory_pos)
        return self.norm(q + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    """x <- LayerNorm(x + SelfAttn(x + pos)) over the joint [queries, text tokens] sequence."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, pos: Tensor, padding: Tensor | None = None) -> Tensor:
        """x, pos (B, S, d); padding (B, S) bool, True at padded text tokens -> (B, S, d).

        On the CPU it runs in its weights' dtype even under bf16 autocast (float32 when
        training): its (S x S) products are too small for the bf16 kernels (the demo's 32
        pairs, forward + backward, one thread: 61 ms in bf16 against 37 ms in float32;
        benchmarks/precision_cost.py). A model cast to a dtype runs in that dtype."""
        with torch.autocast("cpu", enabled=False):  # a CUDA autocast applies as before
            if x.device.type == "cpu":
                dtype = self.attn.out_proj.weight.dtype
                x, pos = x.to(dtype), pos.to(dtype)
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
