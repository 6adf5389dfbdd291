"""Any floating dtype end to end: BoltzFormer and the U-Net after `.to(dtype)`, the sampling in
float32, `Predictor(dtype=)` and `--dtype` on the commands.

Tolerances, chosen from a measurement (the `tiny` preset at 64², random weights, three
seeds, the same seed for the draws): the mean absolute difference of the probabilities from
float32's was 4.2e-4 in bfloat16 (max 2.1e-3), 5e-5 in float16 (max 3e-4) and 3e-8 in
float64; the keep masks agreed on 99.6-100 % of their entries in bfloat16, 100 % in float16
and float64. The U-Net expert (64², three seeds): 2.8-4.2e-4 in bfloat16, 5e-5 in float16,
3e-8 in float64. The bounds below sit about 5x above what was measured.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from boltzformer import Predictor, cli
from boltzformer.baselines import UNetBaselineConfig, UNetExpert
from boltzformer.modeling.boltzformer import BoltzFormer, build_model
from boltzformer.modeling.dtypes import resolve_dtype

PROMPTS = ["nodule in lung CT", "liver in abdomen CT"]
#: dtype -> (mean abs difference of the probabilities from float32's, least share of keep-mask
#: entries equal to float32's under the same seed)
TOLERANCE = {
    torch.bfloat16: (2e-3, 0.99),
    torch.float16: (3e-4, 0.999),
    torch.float64: (1e-6, 0.999),
}


def _half_on_cpu() -> str | None:
    """Why float16 cannot run on this CPU, or None when a small matmul and conv run in it."""
    try:
        x = torch.ones(2, 3, 8, 8, dtype=torch.float16)
        torch.nn.functional.conv2d(x, torch.ones(4, 3, 3, 3, dtype=torch.float16))
        _ = x.flatten(1) @ x.flatten(1).T
    except RuntimeError as err:
        return f"this PyTorch has no CPU float16 kernels ({err})"
    return None


def _dtypes() -> list:
    why = _half_on_cpu()
    half = (torch.float16 if why is None
            else pytest.param(torch.float16, marks=pytest.mark.skip(reason=why)))
    return [torch.bfloat16, half, torch.float64]


def _model(seed: int = 0, **overrides) -> BoltzFormer:
    torch.manual_seed(seed)
    return build_model("tiny", image_size=64, **overrides).eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255


def _run(model: BoltzFormer, images: torch.Tensor, **kwargs):
    with torch.no_grad():
        return model(images, PROMPTS[: len(images)], generator=torch.Generator().manual_seed(0),
                     **kwargs)


@pytest.mark.parametrize("dtype", _dtypes())
def test_model_runs_in_any_dtype_and_agrees_with_float32(dtype):
    reference = _model()
    cast = _model().to(dtype)
    assert cast.dtype == dtype
    images = _images()  # float32 input: the model casts it
    ref, out = _run(reference, images, return_sampling=True), _run(cast, images,
                                                                   return_sampling=True)
    assert out.logits.dtype == dtype and out.logits.shape == ref.logits.shape
    p32, p = ref.logits.float().sigmoid(), out.logits.float().sigmoid()
    assert torch.isfinite(p).all()
    mad, agree = TOLERANCE[dtype]
    assert (p - p32).abs().mean() < mad
    assert out.keep_masks is not None and ref.keep_masks is not None
    same = torch.cat([(a == b).flatten() for a, b in zip(out.keep_masks, ref.keep_masks)])
    assert same.float().mean() >= agree
    assert not all(k.all() for k in ref.keep_masks)  # not vacuous: the draws drop tokens


@pytest.mark.parametrize("overrides", [
    {"attention_impl": "sparse", "sampling_per_head": True},
    {"attention": "masked", "existence_head": True, "existence_evidence": True},
    {"semantic_stride": 2, "text_encoder": "labels", "text_labels": ("liver", "nodule")},
], ids=["sparse-per-head", "masked-existence", "stride2-labels"])
def test_the_model_s_options_run_in_bfloat16_with_gradients(overrides):
    model = _model(**overrides).to(torch.bfloat16)
    out = model(_images(), PROMPTS, targets=["nodule", "liver"], return_layers=True,
                layer_pool=2, generator=torch.Generator().manual_seed(0))
    assert out.layer_logits is not None
    loss = out.logits.float().mean() + sum(t.float().mean() for t in out.layer_logits)
    if out.existence_logits is not None:
        assert out.existence_logits.dtype == torch.bfloat16
        loss = loss + out.existence_logits.float().mean()
    loss.backward()
    grads = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.bfloat16 for g in grads)


def test_sampling_draws_from_float32_whatever_the_model_dtype():
    """Same seed, same draws: the decoder samples from float32 probabilities, so logits
    given in bfloat16 draw exactly what their float32 values draw, and a bfloat16 model's
    sampling logits are float32."""
    model = _model()
    logits = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(1)) * 3
    logits = logits.to(torch.bfloat16)
    for layer in (0, 8):  # the warmest and the coldest temperature
        keep16 = model.decoder._keep(logits, layer, torch.Generator().manual_seed(5))
        keep32 = model.decoder._keep(logits.float(), layer, torch.Generator().manual_seed(5))
        assert torch.equal(keep16, keep32)
        assert not keep32.all()
    cast = _model().to(torch.bfloat16)
    feats = cast.encode_image(_images(1))
    queries = torch.randn(1, 10, 128, dtype=torch.bfloat16)
    size = tuple(feats.levels[0].shape[-2:])
    resized = cast.decoder._resized_semantic(feats.semantic, [torch.Size(size)])[0]
    level = cast.decoder.level_logits(queries, feats.semantic, resized, size)
    assert level.dtype == torch.float32


@pytest.mark.parametrize("dtype", _dtypes())
def test_unet_runs_in_any_dtype(dtype):
    torch.manual_seed(0)
    config = UNetBaselineConfig(("liver", "nodule"), image_size=64,
                                decoder_channels=(32, 16, 16, 8, 8))
    reference = UNetExpert(config).eval()
    cast = UNetExpert(config).eval()
    cast.load_state_dict(reference.state_dict())
    cast.to(dtype)
    assert cast.dtype == dtype
    with torch.no_grad():
        ref = reference(_images(), ["nodule", "liver"]).logits.float().sigmoid()
        out = cast(_images(), ["nodule", "liver"]).logits
    assert out.dtype == dtype
    assert (out.float().sigmoid() - ref).abs().mean() < TOLERANCE[dtype][0]


def test_predictor_in_bfloat16_answers_float32_arrays():
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3)).astype(np.uint8)
    answers = {}
    for dtype in (None, "bfloat16"):
        predictor = Predictor(_model(), dtype=dtype)
        predictor.set_image(image)
        answers[dtype] = predictor.predict(PROMPTS)
    assert predictor.model.dtype == torch.bfloat16
    assert Predictor(_model().to(torch.bfloat16)).model.dtype == torch.bfloat16  # kept as is
    prob = answers["bfloat16"].prob
    assert prob.dtype == np.float32 and prob.shape == (2, 50, 70)
    assert np.abs(prob - answers[None].prob).mean() < TOLERANCE[torch.bfloat16][0]
    with pytest.raises(ValueError, match="choose one of float32, bfloat16"):
        Predictor(_model(), dtype="int8")


def test_resolve_dtype_names_and_refusals():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(torch.float64) is torch.float64
    for bad in ("float8", torch.int32, "cuda"):
        with pytest.raises(ValueError, match="--dtype .* is not a floating dtype"):
            resolve_dtype(bad, "--dtype")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _model().save_pretrained(tmp_path_factory.mktemp("ckpt"))


def test_predict_cli_in_bfloat16_writes_float32_probabilities(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    volume = tmp_path / "ct.nii.gz"
    nib.Nifti1Image(rng.integers(0, 256, (40, 3, 36)).astype(np.int16), np.eye(4)).to_filename(
        volume)
    probs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(volume), "--axis",
                "1", "--prompt", "liver", "--dtype", dtype, "--out", str(out)]
        assert cli.main(argv) == 0
        image = nib.load(out / "liver_prob.nii.gz")
        assert image.get_data_dtype() == np.float32
        probs[dtype] = np.asarray(image.dataobj)
    assert np.abs(probs["bfloat16"] - probs["float32"]).mean() < TOLERANCE[torch.bfloat16][0]
    assert not np.array_equal(probs["bfloat16"], probs["float32"])  # it did run in bfloat16


def test_every_inference_verb_takes_dtype():
    parser = cli.build_parser()
    model = ["--checkpoint", "c"]
    for argv in (["predict", *model, "--input", "i", "--prompt", "p", "--out", "o"],
                 ["visualize", *model, "--input", "i", "--prompt", "p", "--out", "o.png"],
                 ["serve", *model],
                 ["evaluate", *model, "--data", "d", "--out", "o"]):
        assert parser.parse_args(argv).dtype == "float32"
        assert parser.parse_args([*argv, "--dtype", "bf16"]).dtype == "bf16"


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_bad_dtype_is_one_line(command, checkpoint, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(image)
    argv = {
        "predict": ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
                    "--prompt", "liver", "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--data", str(tmp_path),
                     "--out", str(tmp_path / "out")],
    }[command]
    assert cli.main([*argv, "--dtype", "int8"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--dtype 'int8' is not a floating dtype" in err
