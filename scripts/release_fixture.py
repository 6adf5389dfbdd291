"""Write the golden parity fixture from the authors' release (github.com/microsoft/BoltzFormer).

    python scripts/release_fixture.py RELEASE_DIR [--out tests/fixtures/release_parity.safetensors]

RELEASE_DIR is a checkout of the release. Its code is imported from there, never copied; its
detectron2 and fvcore imports get small in-memory stand-ins (a Conv2d with optional norm and
activation, GroupNorm by name, Caffe2's Xavier fill), so neither needs installing. The script
builds the release's pixel decoder, BoltzFormer decoder and PiGMA (`BoltzFormerModel` with a
backbone stand-in that only reports its feature shapes) at a small size, gives every
parameter random values, runs fixed random inputs through it in four attention modes and its
loss on fixed predictions, and saves, as numbers only:

    release.<key>          every weight, under the release's state_dict names
    input.res2..res5       backbone features (B, C, H/s, W/s); input.text (B, T, d)
    pixel.level0..2        the pixel decoder's levels; pixel.mask_features0_4, channels 0-3
                           of S for the first image
    <mode>.pred.<i>        the prediction before decoder layer i and, i = L, the final one
                           (threshold_boltzmann: the final one only)
    <mode>.keep.<i>        the keep mask layer i attended with, (B, heads, Q, h, w) bool
    <mode>.prob.<i>        (sampling modes) the Boltzmann distribution of layer i, (B, Q, n)
    pigma.*, loss.*        PiGMA and the loss on their own inputs

Modes: full (nothing masked), masked (Mask2Former's 0.5 threshold), boltzmann (the release's
configs: threshold 1.1, ratio 0.1, tau0 1), threshold_boltzmann (threshold 0.5 + sampling).
tests/test_release_parity.py compares this package against it.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

# The fixture's model: small, with every structural feature of the release's config.
SIZE = dict(
    batch=2, image=128, channels=[16, 24, 32, 48], hidden=32, heads=4, ffn=64, queries=3,
    layers=9, encoder_layers=2, text_tokens=4, pigma_channels=10,
)
MODES = {
    "full": dict(mask_threshold=1.1, do_boltzmann=False),
    "masked": dict(mask_threshold=0.5, do_boltzmann=False),
    "boltzmann": dict(mask_threshold=1.1, do_boltzmann=True),
    "threshold_boltzmann": dict(mask_threshold=0.5, do_boltzmann=True),
}


def install_stand_ins() -> None:
    """fvcore.nn.weight_init and detectron2.layers, as far as the release's head uses them."""

    def c2_xavier_fill(module: nn.Module) -> None:
        nn.init.kaiming_uniform_(module.weight, a=1)
        if module.bias is not None:
            nn.init.constant_(module.bias, 0)

    class Conv2d(nn.Conv2d):
        """nn.Conv2d followed by an optional norm and activation (detectron2's wrapper)."""

        def __init__(self, *args, norm: nn.Module | None = None, activation=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm = norm
            self.activation = activation

        def forward(self, x: Tensor) -> Tensor:
            x = super().forward(x)
            if self.norm is not None:
                x = self.norm(x)
            return self.activation(x) if self.activation is not None else x

    def get_norm(norm: str, channels: int) -> nn.Module | None:
        if not norm:
            return None
        if norm != "GN":
            raise ValueError(f"stand-in get_norm knows only GN, got {norm!r}")
        return nn.GroupNorm(32, channels)

    modules = {
        "fvcore": types.ModuleType("fvcore"),
        "fvcore.nn": types.ModuleType("fvcore.nn"),
        "fvcore.nn.weight_init": types.ModuleType("fvcore.nn.weight_init"),
        "detectron2": types.ModuleType("detectron2"),
        "detectron2.layers": types.ModuleType("detectron2.layers"),
    }
    modules["fvcore.nn.weight_init"].c2_xavier_fill = c2_xavier_fill
    modules["fvcore.nn"].weight_init = modules["fvcore.nn.weight_init"]
    layers = modules["detectron2.layers"]
    layers.Conv2d, layers.get_norm = Conv2d, get_norm
    layers.ShapeSpec = layers.DeformConv = None  # imported, not used by this pixel decoder
    sys.modules.update(modules)


class Recorder:
    """Records the decoder's prediction heads, the masks its cross-attention layers receive
    and the Boltzmann distributions it draws from (the argument of torch.rand_like)."""

    def __init__(self, predictor: nn.Module) -> None:
        self.preds: list[Tensor] = []
        self.masks: list[Tensor] = []
        self.probs: list[Tensor] = []
        heads = predictor.forward_prediction_heads

        def record_heads(*args, **kwargs):
            out = heads(*args, **kwargs)
            self.preds.append(out[0].detach().clone())
            return out

        predictor.forward_prediction_heads = record_heads
        for layer in predictor.transformer_cross_attention_layers:
            layer.register_forward_pre_hook(self._record_mask, with_kwargs=True)

    def _record_mask(self, module, args, kwargs):
        self.masks.append(kwargs["memory_mask"].clone())

    def run(self, fn):
        self.preds, self.masks, self.probs = [], [], []
        rand_like = torch.rand_like

        def recording_rand_like(t: Tensor, *args, **kwargs) -> Tensor:
            self.probs.append(t.detach().clone())
            return rand_like(t, *args, **kwargs)

        torch.rand_like = recording_rand_like
        try:
            return fn()
        finally:
            torch.rand_like = rand_like


def build(release_dir: Path) -> nn.Module:
    """The release's BoltzFormerModel (pixel decoder, decoder, PiGMA) at SIZE. The release is
    importable only once its path is known, hence the imports here."""
    install_stand_ins()
    sys.path.insert(0, str(release_dir))
    from modeling.boltzformer import BoltzFormerModel, MaskFormerHead
    from modeling.pixel_decoder.transformer_encoder_fpn import TransformerEncoderPixelDecoder
    from modeling.transformer_decoder.boltzformer_decoder import BoltzFormerDecoder

    s = SIZE
    shapes = {f"res{i + 2}": {"channel": c, "stride": 4 * 2**i}
              for i, c in enumerate(s["channels"])}

    class BackboneShapes(nn.Module):
        def output_shape(self) -> dict:
            return shapes

    pixel_decoder = TransformerEncoderPixelDecoder(
        transformer_dropout=0.0, transformer_nheads=s["heads"],
        transformer_dim_feedforward=s["ffn"], transformer_enc_layers=s["encoder_layers"],
        conv_dim=s["hidden"], mask_dim=s["hidden"], norm="GN", transformer_pre_norm=False,
        mask_on=True,
    )
    predictor = BoltzFormerDecoder(
        language_encoder=None, in_channels=s["hidden"], hidden_dim=s["hidden"],
        dim_proj=s["hidden"], num_queries=s["queries"], nheads=s["heads"],
        dim_feedforward=s["ffn"], dec_layers=s["layers"], pre_norm=False,
        mask_dim=s["hidden"], enforce_input_project=False,
        boltzmann_sampling=dict(MODES["boltzmann"], sample_ratio=0.1, base_temp=1),
        pre_self_attention=True,
    )
    return BoltzFormerModel(BackboneShapes(), MaskFormerHead(pixel_decoder, predictor),
                            convolute_outputs=True, out_channels_1=s["pigma_channels"]).eval()


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Every parameter random: weights around their initial scale, biases and norms too."""
    with torch.no_grad():
        for p in model.parameters():
            scale = p.std() if p.numel() > 1 and p.std() > 0 else torch.tensor(0.1)
            p.copy_(p + torch.randn(p.shape, generator=generator) * scale * 0.5
                    + torch.randn(p.shape, generator=generator) * 0.05)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release_dir", type=Path, help="a checkout of microsoft/BoltzFormer")
    parser.add_argument("--out", type=Path,
                        default=Path("tests/fixtures/release_parity.safetensors"))
    parser.add_argument("--commit", default="", help="the release commit, recorded in the file")
    args = parser.parse_args(argv)
    if not (args.release_dir / "modeling" / "transformer_decoder").is_dir():
        parser.error(f"{args.release_dir} is not a checkout of microsoft/BoltzFormer")

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build(args.release_dir)
    randomise(model, g)
    s = SIZE
    head, predictor = model.sem_seg_head, model.sem_seg_head.predictor
    out: dict[str, Tensor] = {f"release.{k}": v.contiguous() for k, v in model.state_dict().items()}

    feats = {f"res{i + 2}": torch.randn(s["batch"], c, s["image"] // (4 * 2**i),
                                        s["image"] // (4 * 2**i), generator=g)
             for i, c in enumerate(s["channels"])}
    text = torch.randn(s["batch"], s["text_tokens"], s["hidden"], generator=g)
    out.update({f"input.{k}": v for k, v in feats.items()})
    out["input.text"] = text

    mask_features, _, levels = head.pixel_decoder.forward_features(feats)
    out.update({f"pixel.level{i}": t for i, t in enumerate(levels)})
    out["pixel.mask_features0_4"] = mask_features[:1, :4].contiguous()

    recorder = Recorder(predictor)
    b, h, q = s["batch"], s["heads"], s["queries"]
    for mode, setting in MODES.items():
        predictor.boltzmann_sampling.update(setting)
        torch.manual_seed(1)
        result = recorder.run(lambda: predictor(
            x=levels, mask_features=mask_features,
            extra={"grounding_tokens": text.transpose(0, 1)}))
        assert torch.equal(result["pred_gmasks"], recorder.preds[-1])
        for i, pred in enumerate(recorder.preds):
            if mode != "threshold_boltzmann" or i == s["layers"]:
                out[f"{mode}.pred.{i}"] = pred
        for i, mask in enumerate(recorder.masks):
            grid = levels[i % 3].shape[-2:]
            out[f"{mode}.keep.{i}"] = (~mask).view(b, h, q, *grid).contiguous()
        for i, prob in enumerate(recorder.probs[: s["layers"]]):
            out[f"{mode}.prob.{i}"] = prob.view(b, h, q, -1)[:, 0].contiguous()

    # PiGMA: the release resizes the image to a fixed 256² and 512², so S is 256² here. Its
    # inputs are float16 values (exact in float32) to keep the file small.
    pigma_logits = (torch.randn(1, q, 256, 256, generator=g) * 4).half().float()
    image = torch.randn(1, 3, 64, 64, generator=g).half().float()
    pigma = model.convolution_procedure(image, pigma_logits)
    out["pigma.query_logits"], out["pigma.image"] = pigma_logits.half(), image.half()
    out["pigma.output_every_4th"] = pigma[..., ::4, ::4].contiguous()
    out["pigma.output_corner"] = pigma[..., :64, :64].contiguous()

    # The loss: a 13-pixel object and an empty mask at 64², confident predictions (+6 on the
    # object, -6 elsewhere, with noise) at 32² (resized to the mask bicubically by the
    # release) and at 64².
    from utils.loss import BoltzFormerLoss

    mask = torch.zeros(2, 1, 64, 64)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    mask[0, 0] = (((yy - 20) ** 2 + (xx - 35) ** 2) <= 4).float()
    for name, res in (("resized", 32), ("same", 64)):
        target = F.adaptive_max_pool2d(mask, res)
        pred = 12 * target - 6 + torch.randn(2, 1, res, res, generator=g) * 0.5
        out[f"loss.{name}.pred"] = pred
        out[f"loss.{name}.value"] = BoltzFormerLoss()(pred, mask).reshape(1)
    out["loss.mask"] = mask.bool()

    meta = {"size": json.dumps(SIZE), "modes": json.dumps(MODES), "commit": args.commit,
            "made_by": "scripts/release_fixture.py"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, str(args.out), metadata=meta)
    print(f"{args.out}: {len(out)} tensors, {args.out.stat().st_size / 2**20:.2f} MiB")


if __name__ == "__main__":
    main()
