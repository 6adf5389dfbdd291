"""Sliding-window inference: window layout, weights, blending, gates, and the Predictor."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import SMALL_MODEL, answering_existence

import boltzformer
from boltzformer import Predictor
from boltzformer.inference.sliding_window import (
    WindowGrid,
    gaussian_weight,
    sliding_window_inference,
    window_origins,
)
from boltzformer.inference.windowed import (
    GATED_WINDOW_LOGIT,
    Gates,
    WindowSettings,
    blend_answers,
)
from boltzformer.modeling.existence import ABSENT_LOGIT
from boltzformer.modeling.size_floor import SizeFloor

SMALL = {k: v for k, v in SMALL_MODEL.items() if k != "preset"}
PROMPTS = ["nodule in lung CT", "liver"]


@pytest.mark.parametrize("h, w", [(151, 203), (64, 64), (65, 97), (30, 200)])
@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_origins_cover_every_pixel_and_stay_in_bounds(h, w, overlap):
    grid = WindowGrid(h, w, 64, overlap)
    ph, pw = grid.padded
    assert (ph, pw) == (max(h, 64), max(w, 64))
    covered = np.zeros((ph, pw), int)
    for t, left in grid.origins:
        assert 0 <= t <= ph - 64 and 0 <= left <= pw - 64
        covered[t : t + 64, left : left + 64] += 1
    assert covered.min() >= 1
    if overlap == 0.0 and h % 64 == 0 and w % 64 == 0:
        assert covered.max() == 1  # no overlap asked, none given where the windows tile
    if overlap == 0.5 and h > 96:  # a new window every 32 px, the last flush with the edge
        starts = sorted({t for t, _ in grid.origins})
        assert starts[:2] == [0, 32] and starts[-1] == h - 64
    if h == 65:  # one pixel past a window: a second one, flush with the edge
        assert sorted({t for t, _ in grid.origins}) == [0, 1]


def test_an_image_smaller_than_a_window_is_padded_and_cropped_back():
    assert window_origins(40, 50, 64, 0.5) == [(0, 0)]
    image = torch.arange(40 * 50, dtype=torch.float32).view(1, 40, 50)
    out = sliding_window_inference(image, lambda w: w, size=64, progress=False)
    torch.testing.assert_close(out, image)  # identity answers: the pad is cropped off


def test_gaussian_weight_peaks_at_the_centre_is_symmetric_and_positive():
    for size in (64, 63):
        g = gaussian_weight(size)
        c = (size - 1) // 2
        assert g[c, c] == g.max() == pytest.approx(1.0, abs=1e-3)
        torch.testing.assert_close(g, g.flip(0))
        torch.testing.assert_close(g, g.flip(1))
        torch.testing.assert_close(g, g.T)
        assert g[0, 0] > 0 and g[0, 0] < g[0, c] < g[c, c]


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_blending_a_function_of_position_reproduces_it(mode):
    """Each window answers the absolute x (and y) of its pixels: any misplaced window or
    unnormalised weight would show in the blend."""
    grid = WindowGrid(150, 203, 64, 0.5)
    h, w = grid.padded

    def answer(_: int, origins):
        ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
        return torch.stack([torch.stack([xs + left, ys + t]) for t, left in origins])

    out = grid.blend(answer, window_batch=3, mode=mode, progress=False)
    ys, xs = torch.meshgrid(torch.arange(150.0), torch.arange(203.0), indexing="ij")
    torch.testing.assert_close(out, torch.stack([xs, ys]), rtol=0, atol=1e-3)


def test_scale_resamples_and_the_answer_comes_back_at_the_original_size():
    image = torch.rand(3, 90, 120)
    seen = []

    def fn(windows):
        seen.append(windows.shape)
        return windows[:, :1]

    out = sliding_window_inference(image, fn, size=32, scale=0.5, model_size=64,
                                   progress=False)
    assert out.shape == (1, 90, 120)
    assert all(s[-2:] == (64, 64) for s in seen)  # each window resized to the model's size
    assert sum(s[0] for s in seen) == len(WindowGrid(90, 120, 32, 0.5, 0.5).origins)


# --- existence and gates across windows ------------------------------------------------------
def _stub(exist_logits: list[float]):
    """Every window answers logit +5 everywhere; window i's existence logit is given."""
    def answer(_: int, origins):
        logits = torch.full((len(origins), 1, 64, 64), 5.0)
        existence = torch.tensor([exist_logits[len(seen) + i] for i in range(len(origins))])
        seen.extend(origins)
        return logits, existence
    seen: list = []
    return answer


def test_existence_is_the_max_over_windows_and_gates_each_window():
    grid = WindowGrid(64, 128, 64, overlap=0.0)  # two windows side by side
    gates = Gates(existence_threshold=0.5)
    per_window = WindowSettings(64, overlap=0.0)
    out = blend_answers(grid, _stub([3.0, -3.0]), ["liver"], per_window, gates)
    assert out.exists is not None
    assert out.exists.item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    # the window that found it keeps its mask, the other answers "absent" over its region
    torch.testing.assert_close(out.logits[0, :, :64], torch.full((64, 64), 5.0))
    torch.testing.assert_close(out.logits[0, :, 64:], torch.full((64, 64), GATED_WINDOW_LOGIT))

    image_level = dataclasses.replace(per_window, per_window_gate=False)
    out = blend_answers(grid, _stub([3.0, -3.0]), ["liver"], image_level, gates)
    # only the image's max decides, and it says present
    torch.testing.assert_close(out.logits, torch.full((1, 64, 128), 5.0))

    for settings in (per_window, image_level):  # no window found it: an empty answer
        out = blend_answers(grid, _stub([-3.0, -2.0]), ["liver"], settings, gates)
        assert out.exists is not None and out.exists.item() < 0.5
        assert (out.logits == ABSENT_LOGIT).all()


def test_the_size_floor_measures_area_in_windows_at_the_resampled_scale():
    grid = WindowGrid(64, 128, 64, overlap=0.0)
    settings = WindowSettings(64, overlap=0.0)

    def answer(_: int, origins):  # a 16 x 16 square in the first window only
        logits = torch.full((len(origins), 1, 64, 64), -5.0)
        if origins[0] == (0, 0):
            logits[0, 0, :16, :16] = 5.0
        return logits, None

    # the square is 256 / 64² = 1/16 of a window (1/32 of the image): a floor of 0.05 keeps it
    kept = blend_answers(grid, answer, ["liver"], settings,
                         Gates(0.5, floor=SizeFloor({"liver": 0.05}, 1.0)))
    assert kept.floored is not None and not kept.floored.item()
    gone = blend_answers(grid, answer, ["liver"], settings,
                         Gates(0.5, floor=SizeFloor({"liver": 0.07}, 1.0)))
    assert gone.floored is not None and gone.floored.item()
    assert (gone.logits < 0).all()


# --- the Predictor -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whole() -> boltzformer.BoltzFormer:
    """Full attention (no sampling): answers do not depend on the draws."""
    torch.manual_seed(0)
    return boltzformer.build_model("tiny", **SMALL, attention="full").eval()


def _windowed(model: boltzformer.BoltzFormer, **window) -> boltzformer.BoltzFormer:
    copy = boltzformer.BoltzFormer.from_config(dataclasses.replace(model.config, **window))
    copy.load_state_dict(model.state_dict())
    return copy.eval()


def _image(h=150, w=200, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_window_size_zero_is_the_whole_image_resized_as_before(whole):
    image = _image()
    plain = Predictor(whole)
    plain.set_image(image)
    got = plain.predict(PROMPTS).prob
    with torch.no_grad():  # the path Predictor always took: resize, forward, resize back
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
        x = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear",
                                            antialias=True, align_corners=False)
        logits = whole(x, PROMPTS, image_index=torch.zeros(2, dtype=torch.long)).logits
        want = torch.nn.functional.interpolate(logits.sigmoid().transpose(0, 1), (150, 200),
                                               mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    overridden = Predictor(_windowed(whole, window_size=64), window_size=0)
    overridden.set_image(image)
    np.testing.assert_array_equal(overridden.predict(PROMPTS).prob, got)


def test_a_windowed_model_answers_at_native_size_as_a_hand_made_blend(whole):
    image = _image()
    predictor = Predictor(_windowed(whole, window_size=64), progress=False)
    predictor.set_image(image)
    got = predictor.predict(PROMPTS).prob
    assert got.shape == (2, 150, 200)

    total, weights = np.zeros((2, 150, 200)), np.zeros((150, 200))
    c, sigma = 31.5, 8.0
    ax = np.exp(-0.5 * ((np.arange(64) - c) / sigma) ** 2)
    g = np.maximum(np.outer(ax, ax), 1e-6)
    pixels = torch.from_numpy(image).permute(2, 0, 1).float()
    for t in (0, 32, 64, 86):  # every 32 px, the last flush with the bottom
        for left in (0, 32, 64, 96, 128, 136):
            crop = pixels[None, :, t : t + 64, left : left + 64]
            with torch.no_grad():
                logits = whole(crop, PROMPTS, image_index=torch.zeros(2, dtype=torch.long))
            total[:, t : t + 64, left : left + 64] += logits.logits[:, 0].numpy() * g
            weights[t : t + 64, left : left + 64] += g
    want = 1 / (1 + np.exp(-total / weights))
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_windows_kept_or_encoded_again_give_the_same_answer(whole):
    model = _windowed(whole, window_size=64, window_overlap=0.25)
    kept = Predictor(model, progress=False)
    kept.set_image(_image(100, 130))
    again = Predictor(model, progress=False)
    again.windows = dataclasses.replace(again.windows, cache_bytes=0)
    again.set_image(_image(100, 130))
    assert kept._features.cached and not again._features.cached
    assert kept.encoded_bytes > again.encoded_bytes
    np.testing.assert_allclose(kept.predict(PROMPTS).prob, again.predict(PROMPTS).prob,
                               atol=1e-6)


def test_windowed_predictor_volumes_folders_samples_and_dtype():
    torch.manual_seed(0)
    model = boltzformer.build_model("tiny", **SMALL, window_size=64, existence_head=True)
    answering_existence(model, 4.0)
    predictor = Predictor(model, progress=False)
    images = [_image(90, 120, 1), _image(70, 70, 2)]
    one = list(predictor.predict_images(images, PROMPTS, batch_size=2))
    predictor.set_image(images[1])
    np.testing.assert_allclose(one[1].prob, predictor.predict(PROMPTS).prob, atol=1e-6)
    assert [p.prob.shape for p in one] == [(2, 90, 120), (2, 70, 70)]
    assert one[0].exists is not None and one[0].exists.shape == (2,)

    stack = np.stack([_image(80, 100, s)[..., 0] for s in range(3)])
    vol = predictor.predict_slices(stack, PROMPTS, samples=2)
    assert vol.prob.shape == (2, 3, 80, 100) and vol.std is not None
    assert vol.exists is not None and vol.exists.shape == (2, 3)

    half = Predictor(model, dtype="bfloat16", progress=False)
    half.set_image(images[0])
    pred = half.predict(PROMPTS)
    assert pred.prob.dtype == np.float32 and pred.prob.shape == (2, 90, 120)
    trace = half.sampling(PROMPTS[0])  # drawn on the whole image
    assert trace.prob.shape == (90, 120)


def test_window_options_are_checked():
    model = boltzformer.build_model("tiny", **SMALL)
    with pytest.raises(ValueError, match="window_size"):
        Predictor(model, window_size=8)
    with pytest.raises(ValueError, match="window_overlap"):
        Predictor(model, window_size=64, window_overlap=1.0)
    with pytest.raises(ValueError, match="weighting"):
        Predictor(model, window_size=64, window_mode="triangle")
