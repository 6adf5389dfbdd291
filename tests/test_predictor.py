"""Predictor: encode once, batched prompts, original size, seeding, sampling draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import boltzformer
from boltzformer import Predictor
from boltzformer.inference.pixels import to_255

PROMPTS = ["nodule in lung CT", "left kidney in abdomen CT", "liver"]


@pytest.fixture(scope="module")
def model() -> boltzformer.BoltzFormer:
    torch.manual_seed(0)
    return boltzformer.build_model("tiny", image_size=128)


@pytest.fixture(scope="module")
def full_model() -> boltzformer.BoltzFormer:
    """Full attention: no sampling, so every pass gives the same answer."""
    torch.manual_seed(0)
    return boltzformer.build_model("tiny", image_size=128, attention="full")


def _image(h: int = 70, w: int = 45, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_image_is_encoded_once_for_many_prompts(model):
    calls = {"backbone": 0, "decoder": []}
    hooks = [
        model.backbone.register_forward_hook(
            lambda *_: calls.__setitem__("backbone", calls["backbone"] + 1)
        ),
        model.decoder.register_forward_hook(
            lambda _m, args, _out: calls["decoder"].append(args[0][0].shape[0])
        ),
    ]
    try:
        predictor = Predictor(model)
        predictor.set_image(_image())
        predictor.predict(PROMPTS)
        predictor.predict(PROMPTS[:2], samples=2)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls["backbone"] == 1
    # one batched decoder pass per call (and per sample), holding every prompt
    assert calls["decoder"] == [3, 2, 2]


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(1).integers(0, 256, (70, 45), dtype=np.uint8),
        np.random.default_rng(2).random((33, 100, 3)),
        np.random.default_rng(3).integers(0, 65536, (64, 80), dtype=np.uint16),
        Image.fromarray(_image(50, 61)).convert("RGBA"),
        torch.rand(3, 50, 60) * 255,
        torch.rand(1, 300, 20),
    ],
    ids=["gray-uint8", "rgb-float01", "uint16", "pil-rgba", "tensor-chw", "tensor-1hw"],
)
def test_outputs_are_probabilities_at_the_original_size(model, image):
    predictor = Predictor(model)
    predictor.set_image(image)
    if isinstance(image, Image.Image):
        size = (image.height, image.width)
    elif isinstance(image, torch.Tensor):
        size = tuple(image.shape[-2:])
    else:
        size = image.shape[:2]
    pred = predictor.predict(PROMPTS[:2])
    assert pred.prob.shape == (2, *size)
    assert pred.prob.dtype == np.float32
    assert pred.prob.min() >= 0 and pred.prob.max() <= 1
    assert pred.std is None and pred.prompts == tuple(PROMPTS[:2])
    assert predictor.image.shape == (*size, 3) and predictor.image.dtype == np.uint8


def test_same_seed_same_masks(model):
    image = _image()
    first = Predictor(model, seed=7)
    first.set_image(image)
    a = first.predict(PROMPTS, samples=2)
    b = first.predict(PROMPTS, samples=2)
    second = Predictor(model, seed=7)
    second.set_image(image)
    c = second.predict(PROMPTS, samples=2)
    np.testing.assert_array_equal(a.prob, b.prob)
    np.testing.assert_array_equal(a.prob, c.prob)
    np.testing.assert_array_equal(a.std, c.std)
    # another seed draws other tokens, hence other masks
    d = first.predict(PROMPTS, samples=2, seed=8)
    assert not np.array_equal(a.prob, d.prob)


def test_samples_give_a_std_that_reflects_the_sampling(model, full_model):
    image = _image()
    sampled = Predictor(model)
    sampled.set_image(image)
    pred = sampled.predict(PROMPTS[:2], samples=4)
    assert pred.std.shape == pred.prob.shape == (2, 70, 45)
    assert pred.samples == 4 and pred.std.max() > 0
    # the mean of 4 draws is not any single draw
    assert not np.allclose(pred.prob, sampled.predict(PROMPTS[:2]).prob)
    # with full attention nothing is sampled: every pass agrees, the std is zero
    full = Predictor(full_model)
    full.set_image(image)
    pred = full.predict(PROMPTS[:2], samples=3)
    np.testing.assert_allclose(pred.std, 0, atol=1e-6)
    np.testing.assert_allclose(pred.prob, full.predict(PROMPTS[:2]).prob, atol=1e-6)


def test_sampling_trace_matches_the_model_and_predict(model):
    predictor = Predictor(model)
    predictor.set_image(_image(90, 64))
    trace = predictor.sampling("nodule in lung CT", seed=3)
    cfg = model.config
    assert len(trace.keep_masks) == cfg.num_layers
    sides = [cfg.image_size // s for s in (32, 16, 8)]
    for layer, keep in enumerate(trace.keep_masks):
        side = sides[layer % 3]
        assert keep.shape == (cfg.num_queries, side, side) and keep.dtype == bool
        assert keep.any(axis=(1, 2)).all()
    # a sample, not everything: Boltzmann sampling keeps far fewer than all tokens
    assert np.mean([k.mean() for k in trace.keep_masks]) < 0.5
    # the trace's prediction is the one predict() gives with the same seed
    np.testing.assert_allclose(
        trace.prob, predictor.predict(["nodule in lung CT"], seed=3).prob[0], atol=1e-6
    )


def test_predict_slices_answers_each_slice_as_predict_does(full_model):
    rng = np.random.default_rng(5)
    slices = rng.integers(0, 256, (5, 40, 52), dtype=np.uint8)
    predictor = Predictor(full_model)
    pred = predictor.predict_slices(slices, PROMPTS[:2], batch_size=2)
    assert pred.prob.shape == (2, 5, 40, 52)
    for k in (0, 3, 4):  # first batch, second batch, the last (short) batch
        predictor.set_image(slices[k])
        np.testing.assert_allclose(
            pred.prob[:, k], predictor.predict(PROMPTS[:2]).prob, atol=1e-5
        )


def test_threshold():
    prob = np.array([[0.2, 0.5], [0.51, 0.9]])
    np.testing.assert_array_equal(Predictor.threshold(prob), [[False, True], [True, True]])
    np.testing.assert_array_equal(Predictor.threshold(prob, 0.8), [[False, False], [False, True]])
    with pytest.raises(ValueError, match="threshold"):
        Predictor.threshold(prob, 1.5)


def test_intensity_rule():
    u8 = np.array([[0, 17, 255]], np.uint8)
    np.testing.assert_array_equal(to_255(u8), u8)
    np.testing.assert_allclose(to_255(np.array([0.0, 0.5, 1.0])), [0, 127.5, 255])
    np.testing.assert_allclose(to_255(np.array([3.0, 200.0])), [3, 200])  # already 0-255
    np.testing.assert_allclose(to_255(np.array([1000, 3000], np.uint16)), [0, 255])
    np.testing.assert_allclose(to_255(np.array([-1000.0, 0.0, 1000.0])), [0, 127.5, 255])
    np.testing.assert_array_equal(to_255(np.array([True, False])), [255, 0])
    with pytest.raises(ValueError, match="NaN"):
        to_255(np.array([np.nan, 1.0]))


def test_bad_use_gives_clear_errors(model):
    predictor = Predictor(model)
    with pytest.raises(RuntimeError, match="set_image"):
        predictor.predict(PROMPTS)
    with pytest.raises(ValueError, match="not an image"):
        predictor.set_image(np.zeros((4, 5, 6, 7)))
    predictor.set_image(_image())
    with pytest.raises(ValueError, match="empty"):
        predictor.predict(["liver", "  "])
    with pytest.raises(ValueError, match="no prompt"):
        predictor.predict([])
    with pytest.raises(TypeError, match="list of strings"):
        predictor.predict("liver")
    with pytest.raises(ValueError, match="samples"):
        predictor.predict(["liver"], samples=0)
