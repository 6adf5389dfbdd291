"""Golden parity with the authors' release (microsoft/BoltzFormer), to float precision.

tests/fixtures/release_parity.safetensors holds the release's random weights (its names),
fixed inputs and its outputs, written by `python scripts/release_fixture.py RELEASE_DIR`
from the release's own code; nothing here runs the release. Its weights go through
`boltzformer.modeling.release_weights` into this package's pixel decoder, decoder and PiGMA with our
defaults, except where a mode says otherwise, and every output must agree.
"""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from boltzformer.modeling.config import BoltzFormerConfig
from boltzformer.modeling.loss import dice_bce_loss
from boltzformer.modeling.mask_decoder import BoltzFormerDecoder
from boltzformer.modeling.pigma import PiGMA
from boltzformer.modeling.pixel_decoder import PixelDecoder
from boltzformer.modeling.release_weights import convert_release_state_dict, load_release_head
from boltzformer.modeling.sampling import boltzmann_distribution_over, temperature

FIXTURE = Path(__file__).parent / "fixtures" / "release_parity.safetensors"
ATOL = 1e-4  # outputs; the loss to 1e-5
MODES = {  # fixture mode -> our settings
    "full": dict(attention="full"),
    "masked": dict(attention="masked"),
    "boltzmann": dict(attention="boltzmann", sampling_per_head=True),
    "threshold_boltzmann": dict(attention="boltzmann", sampling_per_head=True,
                                keep_threshold=0.5),
}


def _load() -> tuple[dict[str, torch.Tensor], dict]:
    """The fixture's tensors and the size of its model (its metadata)."""
    with safe_open(str(FIXTURE), framework="pt") as f:
        size = json.loads(f.metadata()["size"])
    return load_file(str(FIXTURE)), size


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, torch.Tensor], dict]:
    return _load()


def _release(tensors: dict) -> dict:
    return {k.removeprefix("release."): v for k, v in tensors.items() if k.startswith("release.")}


def _ours(golden, **settings) -> nn.ModuleDict:
    """Our pixel decoder, decoder and PiGMA at the fixture's size, with the release's weights."""
    tensors, s = golden
    config = BoltzFormerConfig(
        hidden_dim=s["hidden"], mask_dim=s["hidden"], num_queries=s["queries"],
        num_heads=s["heads"], ffn_dim=s["ffn"], num_layers=s["layers"],
        pixel_decoder_layers=s["encoder_layers"], pigma_channels=s["pigma_channels"], **settings,
    )
    parts = nn.ModuleDict({
        "pixel_decoder": PixelDecoder(s["channels"], hidden_dim=s["hidden"], mask_dim=s["hidden"],
                                      encoder_layers=s["encoder_layers"], num_heads=s["heads"],
                                      ffn_dim=s["ffn"]),
        "decoder": BoltzFormerDecoder.from_config(config),
        "pigma": PiGMA(s["queries"], channels=s["pigma_channels"]),
    }).eval()
    skipped = load_release_head(parts, _release(tensors))
    assert skipped == []  # the fixture holds exactly these parts (+ the dropped class_embed)
    return parts


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_every_release_tensor_maps_and_cross_attention_is_split(golden):
    release = _release(golden[0])
    ours, skipped = convert_release_state_dict(release)
    assert skipped == []
    layers = golden[1]["layers"]
    # class_embed dropped; 2 x (in_proj weight, bias) per cross-attention layer become 6
    assert len(ours) == len(release) - 1 + 4 * layers
    w = release["sem_seg_head.predictor.transformer_cross_attention_layers.0.multihead_attn."
                "in_proj_weight"]
    d = w.shape[1]
    assert torch.equal(ours["decoder.cross.0.attn.k_proj.weight"], w[d : 2 * d])


@torch.no_grad()
def test_pixel_decoder_matches_the_release(golden):
    tensors, _ = golden
    parts = _ours(golden)
    feats = [tensors[f"input.res{i}"] for i in (2, 3, 4, 5)]
    levels, semantic = parts["pixel_decoder"](feats)
    for i, level in enumerate(levels):
        assert _max_diff(level, tensors[f"pixel.level{i}"]) <= ATOL, i
    assert _max_diff(semantic[:1, :4], tensors["pixel.mask_features0_4"]) <= ATOL


@torch.no_grad()
def _decode(golden, mode: str):
    """Our per-layer predictions and final query logits in a fixture mode; sampling modes are
    given the release's keep masks (the random draws cannot be shared)."""
    tensors, s = golden
    parts = _ours(golden, **MODES[mode])
    levels, semantic = parts["pixel_decoder"]([tensors[f"input.res{i}"] for i in (2, 3, 4, 5)])
    text = tensors["input.text"]
    given = ([tensors[f"{mode}.keep.{i}"] for i in range(s["layers"])]
             if mode.endswith("boltzmann") else None)
    out = parts["decoder"](levels, semantic, text, torch.zeros(text.shape[:2], dtype=torch.bool),
                           return_layers=True, return_sampling=True, given_keep=given)
    return out, levels


@pytest.mark.parametrize("mode", ["full", "masked", "boltzmann", "threshold_boltzmann"])
def test_decoder_matches_the_release_per_layer_and_final(golden, mode):
    tensors, s = golden
    out, _ = _decode(golden, mode)
    predictions = [*out.layer_logits, out.query_logits]
    for i, pred in enumerate(predictions):
        key = f"{mode}.pred.{i}"
        if key in tensors:  # threshold_boltzmann: the final prediction only
            assert _max_diff(pred, tensors[key]) <= ATOL, f"{mode} layer {i}"
    if mode == "masked":  # no keep-mask flips: the same tokens, layer by layer
        for i, keep in enumerate(out.keep_masks):
            assert torch.equal(keep, tensors[f"masked.keep.{i}"][:, 0]), f"layer {i}"


@pytest.mark.parametrize("mode", ["boltzmann", "threshold_boltzmann"])
def test_boltzmann_distribution_matches_the_release(golden, mode):
    """Eq. 5 with tau0 / (1 + l), and with a threshold <= 1 the always-kept tokens removed
    from the distribution and the rest renormalised, as the release samples."""
    tensors, s = golden
    out, levels = _decode(golden, mode)
    threshold = MODES[mode].get("keep_threshold", 1.1)
    for i, pred in enumerate(out.layer_logits):
        grid = levels[i % 3].shape[-2:]
        logits = F.interpolate(pred, size=grid, mode="bilinear", align_corners=False).flatten(2)
        p = boltzmann_distribution_over(logits, temperature(i, 1.0), keep_threshold=threshold)
        assert _max_diff(p, tensors[f"{mode}.prob.{i}"]) <= 1e-6, f"layer {i}"


@torch.no_grad()
def test_pigma_matches_the_release(golden):
    tensors, _ = golden
    parts = _ours(golden)
    out = parts["pigma"](tensors["pigma.query_logits"].float(), tensors["pigma.image"].float())
    assert _max_diff(out[..., ::4, ::4], tensors["pigma.output_every_4th"]) <= ATOL
    assert _max_diff(out[..., :64, :64], tensors["pigma.output_corner"]) <= ATOL


@pytest.mark.parametrize("case", ["resized", "same"])
def test_vnet_dice_loss_is_the_release_loss(golden, case):
    tensors, _ = golden
    mask = tensors["loss.mask"].float()
    ours = dice_bce_loss(tensors[f"loss.{case}.pred"], mask, dice="vnet")
    assert abs(float(ours) - float(tensors[f"loss.{case}.value"])) <= 1e-5
    other = dice_bce_loss(tensors[f"loss.{case}.pred"], mask, dice="mask2former")
    assert abs(float(other) - float(tensors[f"loss.{case}.value"])) > 1e-2  # a different loss


@torch.no_grad()
def main() -> None:
    """Print the parity figures: `python tests/test_release_parity.py` (docs/fidelity.md)."""
    golden = _load()
    tensors, s = golden
    print("| mode | " + " | ".join(f"layer {i}" for i in range(s["layers"])) + " | final |")
    print("|---" * (s["layers"] + 2) + "|")
    for mode in MODES:
        out, _ = _decode(golden, mode)
        cells = [f"{_max_diff(p, tensors[f'{mode}.pred.{i}']):.1e}"
                 if f"{mode}.pred.{i}" in tensors else "–"
                 for i, p in enumerate([*out.layer_logits, out.query_logits])]
        print(f"| {mode} | " + " | ".join(cells) + " |")
    probs = 0.0
    for mode in ("boltzmann", "threshold_boltzmann"):
        out, levels = _decode(golden, mode)
        threshold = MODES[mode].get("keep_threshold", 1.1)
        for i, pred in enumerate(out.layer_logits):
            logits = F.interpolate(pred, size=levels[i % 3].shape[-2:], mode="bilinear",
                                   align_corners=False).flatten(2)
            p = boltzmann_distribution_over(logits, temperature(i, 1.0), keep_threshold=threshold)
            probs = max(probs, _max_diff(p, tensors[f"{mode}.prob.{i}"]))
    parts = _ours(golden)
    levels, semantic = parts["pixel_decoder"]([tensors[f"input.res{i}"] for i in (2, 3, 4, 5)])
    pixel = max(_max_diff(lv, tensors[f"pixel.level{i}"]) for i, lv in enumerate(levels))
    pixel_s = _max_diff(semantic[:1, :4], tensors["pixel.mask_features0_4"])
    pig = parts["pigma"](tensors["pigma.query_logits"].float(), tensors["pigma.image"].float())
    pig_diff = _max_diff(pig[..., ::4, ::4], tensors["pigma.output_every_4th"])
    mask = tensors["loss.mask"].float()
    loss = max(abs(float(dice_bce_loss(tensors[f"loss.{c}.pred"], mask, dice="vnet"))
                   - float(tensors[f"loss.{c}.value"])) for c in ("resized", "same"))
    print(f"\nBoltzmann distributions (both sampling modes, all layers) {probs:.1e}; pixel "
          f"decoder levels {pixel:.1e}, S {pixel_s:.1e}; PiGMA {pig_diff:.1e}; V-Net Dice + BCE "
          f"loss {loss:.1e}")

if __name__ == "__main__":
    main()
