"""What `boltzformer bench` measures, for one workload in one attention mode.

Two parts are measured: the decoder alone, fed random multi-scale features, semantic map and
text tokens of the shapes the pixel decoder and text encoder give it, and the whole model on a
random image. Every part runs in each mode of `MODES`, with the same weights (modes switch
settings that do not change parameters):

- forward time (inference: eval mode, no gradient) and forward+backward time (training step:
  forward, mean of the output, backward) of one step (`time_step`);
- FLOPs counted by `torch.utils.flop_counter.FlopCounterMode` (plus formulas for the CPU
  attention kernels it does not know), in total and inside the cross-attention modules;
- peak memory: on CUDA the allocator's peak; on CPU the most bytes held at once by tensors
  created during the step (a dispatch mode follows every new storage until it is freed);
- agreement of the reference and the fast Boltzmann paths drawing with the same generator.

A fixed random generator makes every mode draw the same samples in every repeat.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import (
    FlopCounterMode,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

from boltzformer.modeling.attention import SampledCrossAttention
from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.config import BoltzFormerConfig
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder

TEXT_TOKENS = 8  # prompt length fed to the decoder alone ("left adrenal gland in abdomen CT")
PROMPT = "left adrenal gland in abdomen CT"


@dataclass(frozen=True)
class Mode:
    """An attention mode: how keep masks are made, which attention kernel, which logits."""

    attention: str  # SamplingSettings.attention
    impl: str  # SampledCrossAttention implementation
    logits: str  # SamplingSettings.logits
    about: str


MODES: dict[str, Mode] = {
    "full": Mode("full", "auto", "lowres", "every query attends to every token"),
    "masked": Mode("masked", "auto", "lowres", "Mask2Former masked attention, threshold 0.5"),
    "boltzmann-reference": Mode(
        "boltzmann", "dense", "reference",
        "Boltzmann sampling computed as the authors' release computes it: full-resolution "
        "logits of every query at every layer, dense attention with a boolean mask (one draw "
        "per query; the release draws per head, sampling_per_head)",
    ),
    "boltzmann-fast": Mode(
        "boltzmann", "auto", "lowres",
        "Boltzmann sampling with low-resolution logits and sparse attention",
    ),
}
REFERENCE, FAST, FULL = "boltzmann-reference", "boltzmann-fast", "full"


@dataclass
class Workload:
    """A module to measure and how to run it: `run(generator, return_sampling)` returns the
    output tensor and, when asked, the keep masks of every decoder layer."""

    module: nn.Module
    decoder: BoltzFormerDecoder
    run: Callable[[torch.Generator, bool], tuple[Tensor, list[Tensor] | None]]
    leaves: list[Tensor] = field(default_factory=list)  # inputs that take gradients
    tokens: int = 0  # tokens of the finest decoder level


def decoder_workload(config: BoltzFormerConfig, size: int, batch: int,
                     device: torch.device, seed: int) -> Workload:
    """The decoder alone with random inputs of the shapes it gets at `size` x `size`.

    Levels (B, d, size/s, size/s) for s = 32, 16, 8; S (B, D, size/4, size/4); text (B, 8, d).
    The inputs take gradients, as they do when the whole model trains.
    """
    torch.manual_seed(seed)
    decoder = BoltzFormerDecoder.from_config(config).to(device)
    g = torch.Generator(device).manual_seed(seed)
    d = config.hidden_dim

    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, device=device).requires_grad_()

    strides = (32, 16, 8)[: config.num_levels]
    levels = [rand(batch, d, size // s, size // s) for s in strides]
    semantic = rand(batch, config.mask_dim, size // 4, size // 4)
    text = rand(batch, TEXT_TOKENS, d)
    padding = torch.zeros(batch, TEXT_TOKENS, dtype=torch.bool, device=device)

    def run(generator: torch.Generator, return_sampling: bool):
        out = decoder(levels, semantic, text, padding, generator=generator,
                      return_sampling=return_sampling)
        return out.query_logits, out.keep_masks

    return Workload(decoder, decoder, run, levels + [semantic, text],
                    (size // strides[-1]) ** 2)


def model_workload(config: BoltzFormerConfig, size: int, batch: int,
                   device: torch.device, seed: int) -> Workload:
    """The whole model (random weights) on a random `size` x `size` image and a prompt."""
    torch.manual_seed(seed)
    model = BoltzFormer.from_config(config.override(image_size=size)).to(device)
    g = torch.Generator(device).manual_seed(seed)
    images = torch.rand(batch, 3, size, size, generator=g, device=device) * 255
    prompts = [PROMPT] * batch

    def run(generator: torch.Generator, return_sampling: bool):
        out = model(images, prompts, generator=generator, return_sampling=return_sampling)
        return out.logits, out.keep_masks

    stride = (32, 16, 8)[config.num_levels - 1]
    return Workload(model, model.decoder, run, [], (size // stride) ** 2)


def set_mode(decoder: BoltzFormerDecoder, mode: Mode) -> None:
    """Switch `decoder` to `mode` in place (same weights)."""
    decoder.sampling = replace(
        decoder.sampling, attention=mode.attention, logits=mode.logits, mask_threshold=0.5
    )
    decoder.set_attention_impl(mode.impl)


# --- one step ---------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clear_grads(work: Workload) -> None:
    for t in [*work.module.parameters(), *work.leaves]:
        t.grad = None


def _step(work: Workload, backward: bool, seed: int, device: torch.device) -> None:
    """One inference forward (eval, no grad) or one training step (forward + backward)."""
    generator = torch.Generator(device).manual_seed(seed)
    if backward:
        work.module.train()
        out, _ = work.run(generator, False)
        out.float().mean().backward()
    else:
        work.module.eval()
        with torch.no_grad():
            work.run(generator, False)


def time_step(work: Workload, backward: bool, seed: int, device: torch.device) -> float:
    """Seconds of one step (`_step`), gradients cleared first."""
    _clear_grads(work)
    _synchronize(device)
    start = time.perf_counter()
    _step(work, backward, seed, device)
    _synchronize(device)
    return time.perf_counter() - start


# --- FLOPs ------------------------------------------------------------------------------------
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args,
                             out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# The counter has formulas for the CUDA attention kernels only; the CPU one does the same math
# (dense: every query against every token, whatever the mask).
_EXTRA_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        _cpu_sdpa_backward_flops,
}


def _flop_counter() -> FlopCounterMode:
    return FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)


def count_flops(work: Workload, seed: int, device: torch.device) -> dict[str, int]:
    """FLOPs of one forward and one forward+backward: in total, and inside the cross-attention.

    Modules run in training mode (no dropout in these models) and with gradients enabled, so
    that PyTorch's fused inference kernels, which the counter cannot see into, are not used
    (the forward math is the same). Cross-attention FLOPs are counted by replaying every
    cross-attention call of the step with the same inputs, keep masks included (the counter's
    per-module split is unreliable in the backward pass); the replayed backward sends
    gradients to the queries, the image tokens and the weights.
    """
    work.module.train()
    calls: list[tuple[nn.Module, tuple]] = []

    def record(module: nn.Module, args: tuple, kwargs: dict, _out: Any) -> None:
        calls.append((module, tuple(a.detach() if isinstance(a, Tensor) else a for a in args)))

    attns = [m for m in work.module.modules() if isinstance(m, SampledCrossAttention)]
    hooks = [m.register_forward_hook(record, with_kwargs=True) for m in attns]
    _clear_grads(work)
    try:
        with _flop_counter() as fwd:
            out, _ = work.run(torch.Generator(device).manual_seed(seed), False)
    finally:
        for h in hooks:
            h.remove()
    with _flop_counter() as bwd:
        out.float().mean().backward()
    _clear_grads(work)

    attn_fwd = attn_bwd = 0
    for module, (query, memory, *rest) in calls:
        query, memory = query.requires_grad_(), memory.requires_grad_()
        with _flop_counter() as counter:
            attended = module(query, memory, *rest)
        attn_fwd += counter.get_total_flops()
        with _flop_counter() as counter:
            attended.sum().backward()
        attn_bwd += counter.get_total_flops()
    _clear_grads(work)
    return {
        "total_forward": fwd.get_total_flops(),
        "total_forward_backward": fwd.get_total_flops() + bwd.get_total_flops(),
        "attention_forward": attn_fwd,
        "attention_forward_backward": attn_fwd + attn_bwd,
    }


# --- memory -----------------------------------------------------------------------------------
class _PeakTensorMemory(TorchDispatchMode):
    """Follows every storage created while active until it is freed; `peak` is the most bytes
    held at once. Storages that existed before are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _freed(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views, in-place and out= results share an input's storage: nothing new.
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor):
                continue
            storage = t.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
            if size == 0 or key in self.live or key in inputs:
                continue
            self.live[key] = size
            self.current += size
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._freed, key)
        return out


def peak_memory(work: Workload, backward: bool, seed: int, device: torch.device) -> int:
    """Peak bytes allocated by one step beyond what was allocated before it."""
    _clear_grads(work)
    if device.type == "cuda":
        _synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _step(work, backward, seed, device)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        with _PeakTensorMemory() as tracker:
            _step(work, backward, seed, device)
        peak = tracker.peak
    _clear_grads(work)
    return peak


# --- agreement --------------------------------------------------------------------------------
def agreement(work: Workload, seed: int, device: torch.device) -> dict[str, float]:
    """Run the reference and the fast Boltzmann paths with the same generator and compare
    the keep masks they draw and their outputs."""
    work.module.eval()
    results = []
    for name in (REFERENCE, FAST):
        set_mode(work.decoder, MODES[name])
        with torch.no_grad():
            results.append(work.run(torch.Generator(device).manual_seed(seed), True))
    (ref_out, ref_keep), (fast_out, fast_keep) = results
    assert ref_keep is not None and fast_keep is not None  # asked for (return_sampling)
    mismatches = sum(int((a != b).sum()) for a, b in zip(ref_keep, fast_keep))
    pairs = sum(k.numel() for k in ref_keep)
    kept = sum(int(k.sum()) for k in ref_keep)
    return {
        "keep_mask_mismatches": mismatches,
        "query_token_pairs": pairs,
        "kept_fraction": kept / pairs,
        "output_max_abs_diff": float((ref_out - fast_out).abs().max()),
        "output_max_abs": float(ref_out.abs().max()),
    }
