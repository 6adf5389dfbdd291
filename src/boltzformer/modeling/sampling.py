"""Boltzmann attention sampling (paper Sec. 3.2.2, Step 1 and Step 2).

Usable on its own in any transformer: give it per-query confidence logits over a token grid
and it returns which tokens each query may attend to.

    logits (B, Q, n)  --sigmoid-->  U (Eq. 1)
    p = softmax(U / tau)                          (Eq. 5, the Boltzmann distribution)
    [p = (1 - e) p + e / n                        (optional exploration floor; not the paper)]
    keep ~ Bernoulli(1 - (1 - p)^N)               (footnote 1; N = int(ratio * n) draws)

The paper draws one attention set per query. The authors' release draws one per query and
head (`heads=`): a query then attends, over its heads, to the union of their draws.

All functions run under `torch.no_grad()` semantics: nothing here carries a gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from boltzformer.modeling.config import SAMPLERS


def temperature(layer: int, tau0: float) -> float:
    """The annealing schedule tau_l = tau0 / (1 + l) for 0-based layer l (paper Sec. 3.2.2)."""
    if tau0 <= 0:
        raise ValueError(f"tau0 must be > 0, got {tau0}")
    return tau0 / (1 + layer)


def num_draws(num_tokens: int, ratio: float) -> int:
    """N, the number of independent draws: `ratio` of the tokens at that level, truncated as
    the release does (int(0.1 * 256) = 25). N = 0 keeps no token by sampling, and a query
    left with none attends to every token (`ensure_nonempty`), as in the release."""
    if not ratio > 0:
        raise ValueError(f"sampling ratio must be > 0, got {ratio}")
    return int(num_tokens * ratio)


@torch.no_grad()
def boltzmann_distribution(logits: Tensor, tau: float) -> Tensor:
    """Eq. 5: p = exp(U / tau) / sum exp(U / tau) with U = sigmoid(logits) (Eq. 1).

    Args:
        logits: (..., n) confidence logits of each query over n tokens.
        tau: temperature > 0.
    Returns:
        (..., n) probabilities summing to 1 over the last axis. Softmax subtracts the maximum,
        so it is stable for any tau > 0.
    """
    if tau <= 0:
        raise ValueError(f"temperature must be > 0, got {tau}")
    u = torch.sigmoid(logits.float())
    return torch.softmax(u / tau, dim=-1)


@torch.no_grad()
def boltzmann_distribution_over(logits: Tensor, tau: float, *, keep_threshold: float) -> Tensor:
    """Eq. 5 over the tokens that are not always kept (sigmoid(logit) >= keep_threshold),
    renormalised over them, as the release samples; 0 at the always-kept tokens. With a
    threshold above 1 it is `boltzmann_distribution`. (..., n) -> (..., n)."""
    p = boltzmann_distribution(logits, tau)
    if keep_threshold > 1.0:
        return p
    p = p.masked_fill(torch.sigmoid(logits.float()) >= keep_threshold, 0.0)
    return p / p.sum(-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)


@torch.no_grad()
def with_exploration(p: Tensor, share: float, eligible: Tensor | None = None) -> Tensor:
    """Mix a uniform share into the distribution: (1 - share) p + share u, with u uniform
    over the `eligible` tokens (bool, broadcastable to p; default all). The paper has no
    such floor (share 0 returns p): it is a switch for small targets, which the cooled
    distribution stops sampling in the last layers (docs/results/small_objects.md).
    (..., n) -> (..., n), still summing to 1."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"exploration share must be in [0, 1), got {share}")
    if share == 0.0:
        return p
    support = torch.ones_like(p) if eligible is None else eligible.to(p.dtype).expand_as(p)
    uniform = support / support.sum(-1, keepdim=True).clamp_min(1.0)
    return (1.0 - share) * p + share * uniform


@torch.no_grad()
def inclusion_probability(p: Tensor, draws: int) -> Tensor:
    """Probability that a token is drawn at least once in `draws` draws: 1 - (1 - p)^N.

    Computed as -expm1(N * log1p(-p)), accurate for tiny p and exact at p = 0 or 1.
    """
    return -torch.expm1(draws * torch.log1p(-p.clamp(0.0, 1.0)))


@torch.no_grad()
def sample_keep_mask(
    p: Tensor,
    draws: int,
    *,
    sampler: str = "bernoulli",  # one of SAMPLERS
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw the attention set A of each query (paper Step 2).

    Args:
        p: (..., n) Boltzmann probabilities over n tokens.
        draws: N, the number of draws.
        sampler: "bernoulli" keeps each token independently with probability 1-(1-p)^N (the
            paper's footnote 1, the default); "multinomial" makes N draws with replacement
            and keeps their union.
        generator: makes the draw reproducible.
    Returns:
        (..., n) bool keep mask.
    """
    if sampler == "bernoulli":
        keep_prob = inclusion_probability(p, draws)
        noise = torch.rand(p.shape, generator=generator, device=p.device, dtype=keep_prob.dtype)
        return noise < keep_prob
    if sampler == "multinomial":
        if draws == 0:
            return torch.zeros(p.shape, dtype=torch.bool, device=p.device)
        flat = p.reshape(-1, p.shape[-1])
        idx = torch.multinomial(flat, draws, replacement=True, generator=generator)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep.scatter_(1, idx, True)
        return keep.reshape(p.shape)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


@torch.no_grad()
def boltzmann_keep_mask(
    logits: Tensor,
    *,
    tau: float,
    ratio: float,
    sampler: str = "bernoulli",  # one of SAMPLERS
    keep_threshold: float = 1.1,
    explore: float = 0.0,
    heads: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Which tokens each query attends to under Boltzmann sampling.

    Args:
        logits: (B, Q, n) confidence logits of each query over the n tokens of one level.
        tau: this layer's temperature.
        ratio: N / n.
        keep_threshold: tokens with sigmoid(logit) >= threshold are always kept and the
            Boltzmann distribution covers the others only (renormalised over them), as in the
            authors' release; its BoltzFormer configs use 1.1, i.e. pure sampling.
        explore: share of the draws made uniformly (`with_exploration`); 0 is the paper.
        heads: None draws one set per query (the paper); h draws one per query and head,
            independently, as the release does.
    Returns:
        (B, Q, n) bool, or (B, h, Q, n) with `heads`; a query (or query and head) left with
        no token is given every token (as the release does).
    """
    # always kept; a sigmoid never exceeds 1, so above 1 none is (and no pass is spent on it)
    kept = torch.sigmoid(logits.float()) >= keep_threshold if keep_threshold <= 1.0 else None
    p = boltzmann_distribution_over(logits, tau, keep_threshold=keep_threshold)
    p = with_exploration(p, explore, eligible=None if kept is None else ~kept)
    if heads is not None:
        p = p[:, None].expand(-1, heads, -1, -1)
        kept = None if kept is None else kept[:, None]
    keep = sample_keep_mask(p, num_draws(logits.shape[-1], ratio), sampler=sampler,
                            generator=generator)
    return ensure_nonempty(keep if kept is None else keep | kept)


@torch.no_grad()
def threshold_keep_mask(logits: Tensor, threshold: float = 0.5) -> Tensor:
    """Mask2Former's masked attention: keep tokens with sigmoid(logit) >= threshold.

    Returns (B, Q, n) bool; a query left with no token is given every token.
    """
    return ensure_nonempty(torch.sigmoid(logits) >= threshold)


def ensure_nonempty(keep: Tensor) -> Tensor:
    """Give every token to rows of `keep` (..., n) that kept none."""
    empty = ~keep.any(dim=-1, keepdim=True)
    return keep | empty


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) over the last axis of a probability tensor."""
    return -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum(-1)

