"""Weights in the authors' release format (microsoft/BoltzFormer) -> this package's names.

The release's pixel decoder, BoltzFormer decoder and PiGMA compute the same functions as
`PixelDecoder`, `BoltzFormerDecoder` and `PiGMA` (tests/test_release_parity.py shows it to
float precision), so their tensors map one to one, except that the release's decoder
cross-attention keeps its query, key and value projections in one `in_proj` matrix, split
here. The release's unused `class_embed` is dropped. Its backbone (SAM2's or SEEM's code) and
UniCL language encoder have other architectures here (timm backbones, `TextEncoder`): they
are not converted (docs/fidelity.md).

    boltzformer convert-release CKPT OUT --preset paper-hiera-s
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from boltzformer.modeling.boltzformer import build_model
from boltzformer.modeling.checkpoint import CheckpointError, describe_differences

# The parts converted, by prefix: release -> ours.
PARTS: dict[str, str] = {
    "sem_seg_head.pixel_decoder.": "pixel_decoder.",
    "sem_seg_head.predictor.": "decoder.",
    "output_deconv.": "pigma.up.",
    "output_conv.": "pigma.out.",
}
# The release's FPN convolutions (detectron2's Conv2d holds its GroupNorm as `.norm`):
# adapter_/layer_ 1, 2, 3 are strides 4, 8, 16, layer_4 the stride-32 output convolution.
FPN: dict[str, str] = {
    "adapter_1": "lateral.2", "adapter_2": "lateral.1", "adapter_3": "lateral.0",
    "layer_1": "output.2.0", "layer_2": "output.1.0", "layer_3": "output.0.0", "layer_4": "top.0",
}
# Within a part: (pattern, replacement with \1 back-references), the first match wins.
RULES: list[tuple[str, str]] = [
    *[(rf"pixel_decoder\.{old}\.weight", f"pixel_decoder.{new}.0.weight")
      for old, new in FPN.items()],
    *[(rf"pixel_decoder\.{old}\.norm\.", f"pixel_decoder.{new}.1.") for old, new in FPN.items()],
    (r"pixel_decoder\.mask_features\.", "pixel_decoder.mask_proj."),
    (r"pixel_decoder\.transformer\.encoder\.layers\.", "pixel_decoder.encoder."),
    (r"pixel_decoder\.input_proj\.", "pixel_decoder.input_proj."),
    (r"decoder\.query_embed\.", "decoder.query_pos."),
    (r"decoder\.(query_feat|level_embed)\.", r"decoder.\1."),
    (r"decoder\.initial_self_attention_layer\.self_attn\.", "decoder.prior_attn.attn."),
    (r"decoder\.initial_self_attention_layer\.norm\.", "decoder.prior_attn.norm."),
    (r"decoder\.initial_ffn_layer\.linear1\.", "decoder.prior_ffn.net.0."),
    (r"decoder\.initial_ffn_layer\.linear2\.", "decoder.prior_ffn.net.3."),
    (r"decoder\.initial_ffn_layer\.norm\.", "decoder.prior_ffn.norm."),
    (r"decoder\.transformer_self_attention_layers\.(\d+)\.self_attn\.",
     r"decoder.self_attn.\1.attn."),
    (r"decoder\.transformer_self_attention_layers\.(\d+)\.norm\.", r"decoder.self_attn.\1.norm."),
    (r"decoder\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.",
     r"decoder.cross.\1.attn."),  # in_proj_weight/bias are split into q, k, v below
    (r"decoder\.transformer_cross_attention_layers\.(\d+)\.norm\.", r"decoder.cross.\1.norm."),
    (r"decoder\.transformer_ffn_layers\.(\d+)\.linear1\.", r"decoder.ffn.\1.net.0."),
    (r"decoder\.transformer_ffn_layers\.(\d+)\.linear2\.", r"decoder.ffn.\1.net.3."),
    (r"decoder\.transformer_ffn_layers\.(\d+)\.norm\.", r"decoder.ffn.\1.norm."),
    (r"decoder\.decoder_norm\.", "decoder.mask_head.norm."),
    (r"decoder\.mask_embed\.layers\.", "decoder.mask_head.mlp.layers."),
    (r"pigma\.(up|out)\.", r"pigma.\1."),
]
DROPPED = ("sem_seg_head.predictor.class_embed",)  # defined, never used by the release


class ReleaseFormatError(ValueError):
    """A state_dict that is not in the release's format, or does not fit the model."""


def _rename(name: str) -> str | None:
    """Our name for a release tensor name, or None if it is not in a converted part."""
    if name.startswith("sem_seg_head.predictor.language_encoder."):
        return None
    for prefix, ours in PARTS.items():
        if name.startswith(prefix):
            short = ours + name[len(prefix):]
            break
    else:
        return None
    for pattern, repl in RULES:
        m = re.match(pattern, short)
        if m:
            return m.expand(repl) + short[m.end():]
    raise ReleaseFormatError(f"release tensor {name} has no counterpart in this package")


def convert_release_state_dict(release: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Release state_dict -> (our tensors for pixel_decoder., decoder., pigma.; the release
    names not converted: backbone, language encoder, anything else). A "model." prefix (the
    release's training checkpoints) is removed first."""
    ours: dict[str, Tensor] = {}
    skipped: list[str] = []
    for name, tensor in release.items():
        name = name.removeprefix("model.")
        if name in DROPPED:
            continue
        new = _rename(name)
        if new is None:
            skipped.append(name)
        elif new.startswith("decoder.cross.") and ".in_proj_" in new:
            base, kind = new.rsplit(".in_proj_", 1)
            for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
                ours[f"{base}.{part}_proj.{kind}"] = chunk.contiguous()
        else:
            ours[new] = tensor
    if not ours:
        raise ReleaseFormatError(
            "no tensor of the release's pixel decoder, decoder or PiGMA found (expected names "
            "such as sem_seg_head.predictor.query_feat.weight)"
        )
    return ours, skipped


def load_release_head(model: nn.Module, release: dict[str, Tensor]) -> list[str]:
    """Load the release's pixel decoder, decoder and PiGMA into `model` (a BoltzFormer, or
    any module with `pixel_decoder`, `decoder` and `pigma`); returns the release names not
    converted. Every tensor of those parts must be present with its shape, else a
    one-line ReleaseFormatError."""
    ours, skipped = convert_release_state_dict(release)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if k.startswith(tuple(PARTS.values()))}
    differences = describe_differences({k: tuple(v.shape) for k, v in ours.items()}, expected)
    if differences:
        raise ReleaseFormatError(
            f"the release's weights do not fit this model configuration: {differences}")
    model.load_state_dict(ours, strict=False)
    return skipped


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A release checkpoint: a .safetensors file, or a PyTorch file holding a state_dict
    (or {"state_dict": ...}), loaded without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        first = (str(err).strip().splitlines() or ["unreadable"])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ReleaseFormatError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return state


def convert_release_checkpoint(checkpoint: str | Path, out: str | Path, *, preset: str,
                               **overrides: object) -> tuple[Path, list[str]]:
    """A release checkpoint -> a checkpoint folder of `preset` (with `overrides`) holding the
    release's pixel decoder, decoder and PiGMA; the rest keeps the preset's initial weights.
    Returns the folder and the release names not converted."""
    model = build_model(preset, **overrides)
    skipped = load_release_head(model, read_state_dict(checkpoint))
    return model.save_pretrained(out), skipped
