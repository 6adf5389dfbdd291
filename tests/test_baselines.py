"""The U-Net expert baseline: channel selection, checkpoints and scoring with the common
evaluator."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from boltzformer.baselines import UNetBaselineConfig, UNetExpert
from boltzformer.data import BiomedParseDataset
from boltzformer.evaluate import CSV_COLUMNS, evaluate

SMALL = {"image_size": 64, "decoder_channels": (32, 16, 16, 8, 8)}


def _model(targets: tuple[str, ...], seed: int = 0) -> UNetExpert:
    torch.manual_seed(seed)
    return UNetExpert(UNetBaselineConfig(targets, **SMALL)).eval()


def _all_targets(root) -> tuple[str, ...]:
    return tuple(sorted({s.target for split in ("train", "test")
                         for s in BiomedParseDataset(root, split).samples}))


def test_forward_selects_each_samples_target_channel() -> None:
    model = _model(("a", "b", "c"))
    head = model.unet.segmentation_head[0]
    with torch.no_grad():  # constant channels -1, 0, 2: the output says which one was taken
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    images = torch.rand(3, 3, 64, 64) * 255
    out = model(images, ["?", "?", "?"], targets=["c", "a", "b"])
    assert out.logits.shape == (3, 1, 64, 64) and out.channel_logits.shape == (3, 3, 64, 64)
    assert out.logits[:, 0, 0, 0].tolist() == [2.0, -1.0, 0.0]
    assert torch.equal(out.logits.amin((1, 2, 3)), out.logits.amax((1, 2, 3)))
    # Without targets, canonical prompts name them; the longest fitting name wins.
    by_prompt = model(images, ["c in chest CT", "a", "b in abdomen MRI"])
    assert by_prompt.logits[:, 0, 0, 0].tolist() == [2.0, -1.0, 0.0]


def test_forward_runs_the_unet_once_per_distinct_image() -> None:
    model = _model(("a", "b", "c"))
    batch_sizes: list[int] = []
    model.unet.register_forward_hook(lambda _m, args, _out: batch_sizes.append(len(args[0])))
    one, two = torch.rand(2, 1, 3, 64, 64) * 255
    images = torch.cat([one, one, two, one])
    with torch.no_grad():
        out = model(images, ["?"] * 4, targets=["a", "c", "b", "b"])
        alone = [model(img[None], ["?"], targets=[t]).logits[0]
                 for img, t in zip(images, ["a", "c", "b", "b"], strict=True)]
    assert batch_sizes[0] == 2
    for got, expected in zip(out.logits, alone, strict=True):
        torch.testing.assert_close(got, expected)


def test_forward_takes_the_channel_of_real_weights_and_rejects_unknown_targets() -> None:
    model = _model(("left lung", "lung", "nodule"))
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(images, ["left lung in chest CT", "nodule in chest CT"])
        assert torch.equal(out.logits[0, 0], out.channel_logits[0, 0])  # not "lung"
        assert torch.equal(out.logits[1, 0], out.channel_logits[1, 2])
        with pytest.raises(ValueError, match=r"'liver'.*\['left lung', 'lung', 'nodule'\]"):
            model(images, ["x", "y"], targets=["nodule", "liver"])
        with pytest.raises(ValueError, match="pass targets="):
            model(images, ["pulmonary nodule in chest CT", "nodule in chest CT"])
    for bad in ({"targets": ()}, {"targets": ("a", "a")}, {"targets": ("a",), "image_size": 70}):
        with pytest.raises(ValueError):
            UNetBaselineConfig(**bad)


def test_save_and_load_give_identical_logits(tmp_path) -> None:
    model = _model(("liver", "nodule"), seed=3)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UNetExpert.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model(images, ["a", "b"], targets=["nodule", "liver"]).logits
        assert torch.equal(loaded(images, ["a", "b"], targets=["nodule", "liver"]).logits,
                           expected)
    with pytest.raises(FileNotFoundError, match="config.json"):
        UNetExpert.from_pretrained(tmp_path)


def test_evaluate_scores_every_test_sample_with_its_own_channel(phantoms) -> None:
    model = _model(_all_targets(phantoms))
    head = model.unet.segmentation_head[0]
    n = len(model.config.targets)
    with torch.no_grad():  # odd channels predict every pixel, even ones none
        head.weight.zero_()
        head.bias.copy_(torch.tensor([5.0 if c % 2 else -5.0 for c in range(n)]))
    test = BiomedParseDataset(phantoms, "test", image_size=64)
    result = evaluate(model, test, batch_size=5, progress=False)
    assert len(result.samples) == len(test)
    assert all(set(CSV_COLUMNS) <= set(row) for row in result.samples)
    assert {"small", "large", "all"} <= set(result.metrics["size_strata"]["weighted"])
    expected = [64 * 64 * (model.config.targets.index(s.target) % 2) for s in test.samples]
    assert [row["pred_pixels"] for row in result.samples] == expected
    assert 0 < expected.count(0) < len(expected)


def test_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)  # as if absent
    for name in [m for m in sys.modules if m.startswith("boltzformer.baselines")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"pip install 'boltzformer\[baselines\]'"):
        importlib.import_module("boltzformer.baselines")
