"""The BoltzFormer transformer decoder (paper Sec. 3.2, Fig. 1 and 2).

m learnable queries, conditioned on the text (Eq. 4), pass through L layers that cycle over the
feature levels coarse to fine. Each layer:

    keep  = sampling from the previous layer's prediction   (Step 1, Eq. 5; or masked / full)
    Q     = LayerNorm(Q + CrossAttn(Q, V_level, keep))      (Step 2)
    [Q,T] = LayerNorm([Q,T] + SelfAttn[Q,T]);  Q = FFN(Q)   (Step 3, Eq. 6)

A mask head (LayerNorm -> 3-layer MLP -> dot product with S, Eq. 1/3/7) predicts before layer
0 and after every layer; prediction l-1 drives the sampling of layer l. The three attention
modes (`boltzmann`, `masked`, `full`) differ only in how `keep` is made.

With `return_layers=True` (training with deep supervision) the predictions that drive the
sampling are also returned at S's resolution *with* gradient (or on a pooled S given as
`layer_semantic`), so a loss can supervise each of them; the sampling logits are the same
prediction on the level grid, detached. Without it
(inference) they are computed without gradient on the level grids only (the low-resolution
fast path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from boltzformer.modeling.attention import (
    MLP,
    PART,
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
    check_impl,
)
from boltzformer.modeling.config import BoltzFormerConfig
from boltzformer.modeling.position import GridPositions, sine_positions
from boltzformer.modeling.sampling import (
    boltzmann_keep_mask,
    temperature,
    threshold_keep_mask,
)

# S is resized channels-last in groups of channels of about this many bytes.
RESIZE_GROUP_BYTES = 4 * 2**20


@dataclass
class DecoderOutput:
    """query_logits (B, Q, Hs, Ws) at S's resolution; keep_masks one (B, Q, h_l, w_l) bool per
    layer when asked for (sampling per head: the tokens a query attended to with any head);
    queries (B, Q, d) after the last layer; layer_logits, when asked for, the L predictions
    (B, Q, Hs, Ws) (or at `layer_semantic`'s resolution) with gradient that drove layers
    0..L-1; mask_embedding (B, Q, D), the final mu (Eq. 3) that query_logits take on S."""

    query_logits: Tensor
    queries: Tensor
    mask_embedding: Tensor
    keep_masks: list[Tensor] | None = None
    layer_logits: list[Tensor] | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """How each layer chooses the tokens a query may attend to."""

    attention: str = "boltzmann"  # "boltzmann" | "masked" | "full"
    sampler: str = "bernoulli"
    ratio: float = 0.1
    tau0: float = 1.0
    keep_threshold: float = 1.1  # always-keep threshold under Boltzmann sampling (release)
    mask_threshold: float = 0.5  # Mask2Former's threshold for "masked"
    logits: str = "lowres"  # "lowres": resize S, then dot; "reference": dot, then resize
    # Fidelity switch (docs/fidelity.md): False draws one token set per query, shared by its
    # heads (the paper); True draws one per query and head, as the authors' release does.
    per_head: bool = False
    # Not in the paper: share of each layer's draws made uniformly (an exploration floor).
    explore: float = 0.0


class MaskHead(nn.Module):
    """mu = MLP(LayerNorm(q)) (Eq. 3); logits = mu . S at every pixel (Eq. 1)."""

    def __init__(self, hidden_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.mlp = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def embed(self, queries: Tensor) -> Tensor:
        """(B, Q, d) -> mu (B, Q, mask_dim)."""
        return self.mlp(self.norm(queries))

    @staticmethod
    def logits(mu: Tensor, semantic: Tensor) -> Tensor:
        """mu (B, Q, D), S (B, D, h, w) -> (B, Q, h, w)."""
        return torch.einsum("bqd,bdhw->bqhw", mu, semantic)


class BoltzFormerDecoder(nn.Module):
    """Queries + text tokens + multi-scale features -> per-query mask logits."""

    def __init__(
        self,
        *,
        hidden_dim: int,
        mask_dim: int,
        num_queries: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        num_levels: int = 3,
        text_prior: bool = True,
        dropout: float = 0.0,
        sampling: SamplingSettings | None = None,
        attention_impl: str = "auto",
        query_init_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.sampling = sampling or SamplingSettings()
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # content
        # N(0, 1) (nn.Embedding's, as Mask2Former); smaller: the text dominates Q0 (Eq. 4)
        nn.init.normal_(self.query_feat.weight, std=query_init_std)
        self.query_pos = nn.Embedding(num_queries, hidden_dim)  # positional
        self.level_embed = nn.Embedding(num_levels, hidden_dim)
        self.prior_attn = (  # Eq. 4
            SelfAttentionLayer(hidden_dim, num_heads, dropout=dropout) if text_prior else None
        )
        self.prior_ffn = FFNLayer(hidden_dim, ffn_dim, dropout=dropout) if text_prior else None
        self.cross = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads, impl=attention_impl, dropout=dropout)
            for _ in range(num_layers)
        )
        self.self_attn = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads, dropout=dropout) for _ in range(num_layers)
        )
        self.ffn = nn.ModuleList(
            FFNLayer(hidden_dim, ffn_dim, dropout=dropout) for _ in range(num_layers)
        )
        self.mask_head = MaskHead(hidden_dim, mask_dim)

    @classmethod
    def from_config(cls, config: BoltzFormerConfig) -> BoltzFormerDecoder:
        """The decoder of `config`, freshly initialised."""
        return cls(
            hidden_dim=config.hidden_dim,
            mask_dim=config.mask_dim,
            num_queries=config.num_queries,
            num_heads=config.num_heads,
            ffn_dim=config.ffn_dim,
            num_layers=config.num_layers,
            num_levels=config.num_levels,
            text_prior=config.text_prior,
            query_init_std=config.query_init_std,
            dropout=config.dropout,
            sampling=SamplingSettings(
                attention=config.attention,
                sampler=config.sampler,
                ratio=config.sampling_ratio,
                tau0=config.tau0,
                keep_threshold=config.keep_threshold,
                mask_threshold=config.mask_threshold,
                logits=config.sampling_logits,
                per_head=config.sampling_per_head,
                explore=config.sampling_explore,
            ),
            attention_impl=config.attention_impl,
        )

    @property
    def num_layers(self) -> int:
        return len(self.cross)

    def set_attention_impl(self, impl: str) -> None:
        """Switch every cross-attention layer to another implementation (same weights)."""
        check_impl(impl)
        for layer in self.cross:  # nn.ModuleList types its items as Module
            cast(CrossAttentionLayer, layer).attn.impl = impl

    def _joint(
        self, q: Tensor, t: Tensor, q_pos: Tensor, t_pos: Tensor, t_pad: Tensor,
        attn: SelfAttentionLayer,
    ) -> tuple[Tensor, Tensor]:
        """Self-attention over [Q, T]; returns the split (Q, T)."""
        nq = q.shape[1]
        q_pad = torch.zeros(q.shape[:2], dtype=torch.bool, device=q.device)
        x = attn(torch.cat([q, t], 1), torch.cat([q_pos, t_pos], 1), torch.cat([q_pad, t_pad], 1))
        return x[:, :nq], x[:, nq:]

    @torch.no_grad()
    def level_logits(
        self, queries: Tensor, semantic: Tensor, semantic_at_level: Tensor | None,
        size: tuple[int, int], *, embedding: Tensor | None = None,
    ) -> Tensor:
        """Confidence logits (B, Q, h, w) of every query on a level's (h, w) token grid.

        They are Eq. 1 before the sigmoid, resized to the grid, and feed Eq. 5. "lowres" takes
        mu . S on S already resized to the grid (`semantic_at_level`, once per forward pass);
        "reference" takes mu . S at S's full resolution and resizes the Q maps, as the release
        does. Bilinear resizing is linear, so both give the same logits; "lowres" costs
        Q D h w multiply-adds instead of Q D Hs Ws. Detached: no gradient flows into the
        sampling (as in the release). Under deep supervision the layer's mu is already
        computed: `embedding` is then reused, not recomputed.

        The product is taken in float32 (float64 for a float64 model), outside any autocast:
        the sampling sharpens differences of sigmoid(logit) by 1/tau (up to 9x in the last
        layer), so a bfloat16 or float16 model samples from the float32 logits of its mu and
        S, not from logits rounded to 8 bits.
        """
        mu = self.mask_head.embed(queries) if embedding is None else embedding
        work = torch.promote_types(mu.dtype, torch.float32)
        with torch.autocast(mu.device.type, enabled=False):
            if self.sampling.logits == "lowres":
                if semantic_at_level is None or semantic_at_level.shape[-2:] != size:
                    raise ValueError(f"lowres logits need S resized to the level grid {size}")
                return MaskHead.logits(mu.to(work), semantic_at_level.to(work))
            return F.interpolate(MaskHead.logits(mu.to(work), semantic.to(work)), size=size,
                                 mode="bilinear", align_corners=False)

    @torch.no_grad()
    def _resized_semantic(self, semantic: Tensor, sizes: list[torch.Size]
                          ) -> Sequence[Tensor | None]:
        """S resized to every level's grid once per forward pass, where the sampling uses it
        ("lowres" logits); None elsewhere."""
        if self.sampling.attention == "full" or self.sampling.logits != "lowres":
            return [None] * len(sizes)
        # PyTorch's CPU bilinear kernel downscales channels-last input far faster (measured
        # 200 ms -> 2 ms for 512 x 256^2 -> 64^2; same values). Converting ~4 MiB groups of
        # channels at a time keeps the copy in cache and off the memory peak.
        b, channels, hs, ws = semantic.shape
        group = max(1, RESIZE_GROUP_BYTES // (b * hs * ws * semantic.element_size()))
        resized = [semantic.new_empty(b, channels, *size) for size in sizes]
        for c in range(0, channels, group):
            part = semantic[:, c : c + group].contiguous(memory_format=torch.channels_last)
            for out, size in zip(resized, sizes):
                out[:, c : c + group] = F.interpolate(
                    part, size=tuple(size), mode="bilinear", align_corners=False
                )
        return resized

    @torch.no_grad()
    def _keep(self, logits: Tensor, layer: int, generator: torch.Generator | None) -> Tensor:
        """The keep mask of `layer` from the level logits (B, Q, h, w) of the layer before:
        (B, Q, n), or (B, heads, Q, n) when sampling per head."""
        flat = logits.flatten(2).float()  # float32 probabilities and draws in any dtype
        s = self.sampling
        if s.attention == "masked":
            return threshold_keep_mask(flat, s.mask_threshold)
        cross = cast(CrossAttentionLayer, self.cross[layer])
        heads = cross.attn.num_heads if s.per_head else None
        return boltzmann_keep_mask(
            flat, tau=temperature(layer, s.tau0), ratio=s.ratio, sampler=s.sampler,
            keep_threshold=s.keep_threshold, explore=s.explore, heads=heads,
            generator=generator,
        )

    def forward(
        self,
        levels: list[Tensor],
        semantic: Tensor,
        text: Tensor,
        text_padding: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_sampling: bool = False,
        return_layers: bool = False,
        given_keep: list[Tensor] | None = None,
        layer_semantic: Tensor | None = None,
    ) -> DecoderOutput:
        """Decode.

        Args:
            levels: feature maps coarse to fine, each (B, d, h_i, w_i) (at least num_levels).
            semantic: S, (B, D, Hs, Ws).
            text: (B, T, d) text tokens; text_padding (B, T) bool.
            generator: drives the random sampling (reproducible when given).
            return_sampling: also return every layer's keep masks.
            return_layers: also return, with gradient, the prediction before each layer
                (deep supervision); the sampling then derives from those predictions.
            given_keep: one given keep mask per layer, (B, Q, h_l, w_l) or per head
                (B, heads, Q, h_l, w_l) bool, used instead of the attention mode's (e.g. to
                replay another implementation's random draws).
            layer_semantic: with return_layers, S at another resolution (B, D, h, w) that the
                returned layer predictions take (e.g. S average-pooled: a cheaper deep
                supervision); None: S itself. The sampling and the final output are unchanged.
        """
        if given_keep is not None and len(given_keep) != self.num_layers:
            raise ValueError(f"{len(given_keep)} keep masks given for {self.num_layers} layers")
        b = semantic.shape[0]
        levels = levels[: self.num_levels]
        memory: list[Tensor] = []
        memory_pos: list[GridPositions] = []
        for i, feat in enumerate(levels):
            _, d, h, w = feat.shape
            # (B, n, d) row-major: the sparse path gathers token rows
            memory.append((feat.flatten(2).transpose(1, 2) + self.level_embed.weight[i])
                          .contiguous())
            memory_pos.append(sine_positions(h, w, d, device=feat.device).to(feat.dtype))
        with record_function(PART + "resize S"):
            semantic_at = self._resized_semantic(semantic, [f.shape[-2:] for f in levels])

        q = self.query_feat.weight.expand(b, -1, -1)
        q_pos = self.query_pos.weight.expand(b, -1, -1)
        t, t_pos = text, text.detach()  # text positions: a detached copy of the initial tokens
        if self.prior_attn is not None and self.prior_ffn is not None:  # text prior, Eq. 4
            q, t = self._joint(q, t, q_pos, t_pos, text_padding, self.prior_attn)
            q = self.prior_ffn(q)

        keep_masks: list[Tensor] = []
        layer_mu: list[Tensor] = []  # deep supervision: each layer's mu, with gradient
        for layer in range(self.num_layers):
            lvl = layer % self.num_levels
            h, w = levels[lvl].shape[-2:]
            embedding = None
            if return_layers:  # deep supervision: this layer's prediction, with gradient
                layer_mu.append(self.mask_head.embed(q))
                embedding = layer_mu[-1].detach()
            if given_keep is not None:
                keep = given_keep[layer].flatten(-2)
            elif self.sampling.attention == "full":
                keep = None
            else:  # sampled from that same prediction, detached
                with record_function(PART + "sampling"):
                    logits = self.level_logits(q, semantic, semantic_at[lvl], (h, w),
                                               embedding=embedding)
                    keep = self._keep(logits, layer, generator)
            if return_sampling:  # per head: the tokens a query attended to with any head
                seen = keep.any(1) if keep is not None and keep.ndim == 4 else keep
                keep_masks.append(
                    seen.view(b, -1, h, w) if seen is not None
                    else torch.ones(b, q.shape[1], h, w, dtype=torch.bool, device=q.device)
                )
            q = self.cross[layer](q, q_pos, memory[lvl], memory_pos[lvl], keep)  # Step 2
            joint = cast(SelfAttentionLayer, self.self_attn[layer])
            q, t = self._joint(q, t, q_pos, t_pos, text_padding, joint)  # Eq. 6
            q = self.ffn[layer](q)

        mu = self.mask_head.embed(q)
        with record_function(PART + "mask logits"):
            # Eq. 1/3. Under deep supervision every layer's mu meets S in one product: its
            # backward then writes S's gradient once, not once per layer (measured 680 ->
            # 260 ms for 10 predictions of 32 pairs at 64², one thread; same values).
            if layer_semantic is None:
                logits = MaskHead.logits(torch.cat([*layer_mu, mu], 1), semantic)
                *layer_logits, query_logits = logits.split(mu.shape[1], 1)
            else:
                query_logits = MaskHead.logits(mu, semantic)
                layer_logits = (list(MaskHead.logits(torch.cat(layer_mu, 1), layer_semantic)
                                     .split(mu.shape[1], 1)) if layer_mu else [])
        return DecoderOutput(
            query_logits=query_logits, queries=q, mask_embedding=mu,
            keep_masks=keep_masks if return_sampling else None,
            layer_logits=layer_logits if return_layers else None,
        )
