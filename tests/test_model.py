"""The assembled model: shapes, prompts, gradients, checkpoints, presets, learning."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

import boltzformer.modeling.mask_decoder as mask_decoder
from boltzformer import BoltzFormer, BoltzFormerConfig, build_model, dice_bce_loss, get_preset
from boltzformer.evaluation.evaluate import dice_batch
from boltzformer.modeling.config import PRESETS
from boltzformer.modeling.pigma import PiGMA

PROMPTS = ["nodule in lung CT", "left kidney in abdomen MRI"]


def _tiny(**kw):
    torch.manual_seed(0)
    return build_model("tiny", image_size=64, **kw)


def test_output_shapes_and_sampling_per_layer():
    model = _tiny().eval()
    x = torch.rand(2, 3, 64, 64) * 255
    out = model(x, PROMPTS, return_sampling=True)
    assert out.logits.shape == (2, 1, 64, 64)
    assert out.query_logits.shape == (2, 10, 16, 16)
    # 9 layers cycling over the 3 levels coarse to fine (strides 32, 16, 8)
    assert [k.shape[-1] for k in out.keep_masks] == [2, 4, 8] * 3
    assert all(k.shape[:2] == (2, 10) and k.dtype == torch.bool for k in out.keep_masks)
    assert model(x, PROMPTS).keep_masks is None


def test_different_prompts_give_different_predictions():
    model = _tiny().eval()
    x = (torch.rand(1, 3, 64, 64) * 255).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = model(x, PROMPTS, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out.logits[0], out.logits[1], atol=1e-4)


def test_text_prior_switch_removes_the_prior_block():
    with_prior = _tiny()
    without = _tiny(text_prior=False)
    assert with_prior.decoder.prior_attn is not None
    assert without.decoder.prior_attn is None and without.decoder.prior_ffn is None
    names = {n for n, _ in without.named_parameters()}
    assert not any(".prior_" in n for n in names)
    assert any(".prior_" in n for n, _ in with_prior.named_parameters())


def test_gradients_reach_every_component_but_not_through_the_sampler(monkeypatch):
    seen = []
    real = mask_decoder.boltzmann_keep_mask

    def spy(logits, **kw):
        seen.append(logits.requires_grad)
        return real(logits, **kw)

    monkeypatch.setattr(mask_decoder, "boltzmann_keep_mask", spy)
    model = _tiny().train()
    x = torch.rand(2, 3, 64, 64) * 255
    target = (torch.rand(2, 1, 64, 64) > 0.9).float()
    dice_bce_loss(model(x, PROMPTS).logits, target).backward()
    for part in ("backbone", "pixel_decoder", "decoder", "text_encoder.proj", "pigma"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(part)]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), part
    assert seen and not any(seen)  # the sampler only ever saw detached logits


def test_pigma_output_convolution_is_the_1x1_convolution():
    """PiGMA computes its 1x1 output convolution as matrix products per input part: the
    function of the Conv2d it holds (the release's weights) on the concatenated channels."""
    torch.manual_seed(0)
    pigma = PiGMA(10)
    query_logits = torch.randn(3, 10, 8, 8)
    image = torch.randn(3, 3, 32, 32)
    resize = partial(F.interpolate, mode="bilinear", align_corners=False)
    up = pigma.up(torch.cat([resize(image, size=(8, 8)), query_logits], 1))
    correction = pigma.out(torch.cat([resize(image, size=(16, 16)), up], 1))
    ensemble = resize(query_logits.mean(1, keepdim=True), size=(16, 16))
    torch.testing.assert_close(pigma(query_logits, image), (ensemble + correction) / 2)


def test_pigma_switch_gives_ensemble_only():
    model = _tiny(pigma=False).eval()
    assert not any(n.startswith("pigma.") for n, _ in model.named_parameters())
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(x, PROMPTS[:1], generator=torch.Generator().manual_seed(0))
    ensemble = out.query_logits.mean(1, keepdim=True)
    ensemble = torch.nn.functional.interpolate(ensemble, size=(32, 32), mode="bilinear")
    ensemble = torch.nn.functional.interpolate(ensemble, size=(64, 64), mode="bilinear")
    assert torch.allclose(out.logits, ensemble, atol=1e-5)


def test_save_and_load_round_trip_to_identical_outputs(tmp_path):
    model = _tiny(attention="boltzmann").eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "README.md", "config.json", "model.safetensors"]
    restored = BoltzFormer.from_pretrained(tmp_path / "ckpt").eval()
    assert restored.config == model.config
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        a = model(x, PROMPTS, generator=torch.Generator().manual_seed(5)).logits
        b = restored(x, PROMPTS, generator=torch.Generator().manual_seed(5)).logits
    assert torch.equal(a, b)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        BoltzFormer.from_pretrained(tmp_path)


def test_config_round_trips_through_yaml_and_rejects_unknown_keys(tmp_path):
    cfg = get_preset("paper-hiera-s", tau0=0.5)
    cfg.to_yaml(tmp_path / "c.yaml")
    assert BoltzFormerConfig.from_yaml(tmp_path / "c.yaml") == cfg
    with pytest.raises(ValueError, match="valid keys are: .*tau0"):
        build_model("tiny", temperature=2.0)
    with pytest.raises(ValueError, match="tiny, paper-hiera-s"):
        build_model("huge")
    with pytest.raises(ValueError, match="boltzmann, masked, full"):
        build_model("tiny", attention="sparse")


def _dice(logits, target):
    return float(dice_batch(logits > 0, target > 0.5)[0])


def test_tiny_model_overfits_one_small_object_and_prompt():
    torch.manual_seed(0)
    model = build_model("tiny", image_size=128).train()
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    target = (((yy - 40) ** 2 + (xx - 80) ** 2) < 5**2).float()[None, None]  # 0.4% of area
    noise = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    image = (80 + 25 * noise + 50 * target).clamp(0, 255)  # low contrast: 2 noise sigmas
    prompt = ["round lesion in liver CT"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    hits = 0  # consecutive steps above 0.95: a few lucky steps can be undone by updates
    for _ in range(200):
        out = model(image, prompt, generator=g)
        loss = dice_bce_loss(out.logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        hits = hits + 1 if _dice(out.logits.detach(), target) > 0.95 else 0
        if hits == 10:
            break
    with torch.no_grad():  # a fresh sampling draw finds it too (batch-norm statistics of
        # this one image are kept: train mode)
        out = model(image, prompt, generator=torch.Generator().manual_seed(123))
    assert _dice(out.logits, target) > 0.9


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_instantiates_and_runs_offline(preset):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    size = model.config.image_size
    with torch.no_grad():
        out = model(torch.rand(1, 3, size, size) * 255, ["tumor in pancreas CT"])
    assert out.logits.shape == (1, 1, size, size)
    assert out.query_logits.shape[1] == model.config.num_queries
    assert torch.isfinite(out.logits).all()
