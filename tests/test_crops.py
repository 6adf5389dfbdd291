"""Crops at native resolution: the crop functions, the training groups cut from them, the data
plan, and short runs of BoltzFormer and the U-Net expert on crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from boltzformer.data import BiomedParseDataset, generate_phantoms
from boltzformer.data.crops import Crops, crop_origin, rescale, take_crop
from boltzformer.modeling.loss import has_target
from boltzformer.train import TrainConfig, train
from boltzformer.train.config import DataConfig
from boltzformer.train.data import CropItems, EpochView, crops_of
from boltzformer.train.plan import Fingerprint, plan_data, resolve_plan


def _coordinates(height: int, width: int) -> torch.Tensor:
    """An image (3, H, W) whose channels 0 and 1 are each pixel's row and column."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([rows, cols, torch.zeros_like(rows)]).float()


# --- the crop functions -----------------------------------------------------------------------
def test_a_crop_is_the_window_of_pixels_and_pads_past_the_image() -> None:
    image = _coordinates(10, 12)
    masks = torch.zeros(2, 1, 10, 12)
    masks[1, 0, 4, 7] = 1
    out, cut = take_crop(image, masks, 3, 5, 4)
    assert out.shape == (3, 4, 4) and cut.shape == (2, 1, 4, 4)
    assert out[0, :, 0].tolist() == [3, 4, 5, 6] and out[1, 0].tolist() == [5, 6, 7, 8]
    assert cut[1, 0, 1, 2] == 1 and cut.sum() == 1  # (4, 7) is row 1, column 2 of the crop
    # an image smaller than the crop: the crop holds all of it, zero around
    padded, pmasks = take_crop(image, masks[:, 0], -2, -3, 16)
    assert padded.shape == (3, 16, 16) and pmasks.shape == (2, 16, 16)
    assert torch.equal(padded[:, 2:12, 3:15], image)
    assert padded[:, :2].abs().sum() == 0 and padded[:, 12:].abs().sum() == 0
    assert pmasks[1, 6, 10] == 1


def test_rescaling_keeps_a_tiny_object_and_the_shapes() -> None:
    image = torch.rand(3, 64, 48) * 255
    masks = torch.zeros(3, 64, 48)
    masks[0, 10, 10] = 1  # one pixel: would vanish at a quarter of the size
    masks[1, 20:40, 10:30] = 1
    small_image, small = rescale(image, masks, 0.25)
    assert small_image.shape == (3, 16, 12) and small.shape == (3, 16, 12)
    assert small[0].sum() == 1 and small[2].sum() == 0 and 20 <= small[1].sum() <= 30
    assert set(small.unique().tolist()) <= {0.0, 1.0}
    same_image, same = rescale(image, masks, 1.0)
    assert same_image is image and same is masks


def test_object_centred_crops_always_hold_the_object_and_do_not_always_centre_it() -> None:
    masks = torch.zeros(2, 1, 256, 256)
    masks[1, 0, 200:203, 30:33] = 1  # a 3x3 object; the other target absent
    generator = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(60):
        top, left = crop_origin(masks, 64, 1.0, generator)
        assert 0 <= top <= 192 and 0 <= left <= 192
        assert masks[:, :, top : top + 64, left : left + 64].sum() > 0
        rows.append(200 - top)
    assert len(set(rows)) > 10  # the object lands at many places in the crop


def test_random_crops_cover_the_image() -> None:
    masks = torch.zeros(1, 256, 256)
    masks[0, 5, 5] = 1
    generator = torch.Generator().manual_seed(1)
    origins = [crop_origin(masks, 64, 0.0, generator) for _ in range(60)]
    tops = [t for t, _ in origins]
    lefts = [x for _, x in origins]
    assert min(tops) < 96 < max(tops) and min(lefts) < 96 < max(lefts)  # both halves
    assert sum(masks[0, t : t + 64, x : x + 64].sum() > 0 for t, x in origins) < 30


# --- training groups --------------------------------------------------------------------------
@pytest.fixture
def corners(write_dataset) -> Path:
    """Two 128x128 images, a "dot" near the top-left corner and a "spot" near the bottom-right
    one; the image's red and green values are each pixel's row and column."""
    rows, cols = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)
    dot, spot = np.zeros((128, 128), bool), np.zeros((128, 128), bool)
    dot[10:14, 12:16] = True
    spot[110:115, 100:104] = True
    items = {f"c{i}_CT_body.png": (image, {"dot": dot, "spot": spot}) for i in range(2)}
    return write_dataset(items)


def _view(root: Path, seed: int = 0, share: float = 1.0) -> EpochView:
    base = BiomedParseDataset(root, image_size=None)
    return EpochView(base, range(len(base)), seed=seed, augment=False, prompts_per_image=2,
                     crops=Crops(40, 1.0, share, out_size=40))


def test_a_group_shares_one_crop_and_a_target_left_out_is_absent(corners) -> None:
    view, full = _view(corners), BiomedParseDataset(corners, image_size=None)
    masks_by_target = {full[i]["target"]: full[i]["mask"] for i in range(2)}
    absent = 0
    for i in range(len(view)):
        group = view[i]
        top, left = int(group["image"][0, 0, 0]), int(group["image"][1, 0, 0])
        assert group["image"].shape == (3, 40, 40) and group["mask"].shape == (2, 1, 40, 40)
        for target, mask, area in zip(group["target"], group["mask"], group["area"]):
            # every mask is its full mask's crop at the image's origin
            assert torch.equal(mask, masks_by_target[target][:, top : top + 40, left : left + 40])
            assert area == pytest.approx(float(mask.mean()))
        present = has_target(group["mask"])  # what the loss and the existence head read
        assert present.sum() == 1  # the corners are too far apart for one crop
        gone = int((~present).nonzero()[0, 0])
        assert group["area"][gone] == 0.0 and group["mask"][gone].sum() == 0
        absent += 1
    assert absent == len(view)


def test_cropped_out_caps_the_targets_a_crop_leaves_out(corners) -> None:
    """`cropped_out` 0: the target the crop leaves out leaves the group (the present one
    stays, with the same crop as without the cap); the negatives are not counted."""
    base = BiomedParseDataset(corners, image_size=None)
    crops = Crops(40, 1.0, 1.0, out_size=40)
    capped = EpochView(base, range(len(base)), seed=0, augment=False, prompts_per_image=2,
                       crops=crops, cropped_out=0)
    plain = _view(corners)
    for i in range(len(capped)):
        group, whole = capped[i], plain[i]
        assert group["mask"].shape == (1, 1, 40, 40) and len(group["target"]) == 1
        assert has_target(group["mask"]).all() and group["area"][0] > 0
        assert torch.equal(group["image"], whole["image"])  # the same crop, the same draws
        kept = whole["target"].index(group["target"][0])
        assert torch.equal(group["mask"][0], whole["mask"][kept])
    one = EpochView(base, range(len(base)), seed=0, augment=False, prompts_per_image=2,
                    crops=crops, cropped_out=1)
    assert all(len(one[i]["target"]) == 2 for i in range(len(one)))  # the one left out stays
    with pytest.raises(ValueError, match="cropped_out"):
        DataConfig(cropped_out=-1)


def test_same_seed_same_crops_another_epoch_other_crops(corners) -> None:
    first, again, other_seed = _view(corners), _view(corners), _view(corners, seed=1)
    shown = [first[i]["image"] for i in range(len(first))]
    assert all(torch.equal(a, again[i]["image"]) for i, a in enumerate(shown))
    first.set_epoch(1)
    moved = [first[i]["image"] for i in range(len(first))]
    assert any(not torch.equal(a, b) for a, b in zip(shown, moved))
    assert any(not torch.equal(a, other_seed[i]["image"]) for i, a in enumerate(shown))


def test_negatives_still_come_with_crops(write_dataset) -> None:
    image = np.zeros((100, 100), np.uint8)
    dot = np.zeros((100, 100), bool)
    dot[50:53, 50:53] = True
    root = write_dataset({"a_CT_body.png": (image, {"dot": dot}),  # no spot here
                          "b_CT_body.png": (image, {"spot": dot})})
    base = BiomedParseDataset(root, image_size=None)
    view = EpochView(base, [0], seed=0, augment=False, negatives=1,
                     crops=Crops(40, 0.5, 1.0, out_size=32))
    group = view[0]
    assert group["target"] == ["dot", "spot"] and group["mask"].shape == (2, 1, 32, 32)
    assert group["mask"][0].sum() > 0 and group["area"][0] > 0
    assert group["area"][1] == 0.0 and group["mask"][1].sum() == 0


def test_validation_crops_are_fixed_and_shared_by_an_image(corners) -> None:
    base = BiomedParseDataset(corners, image_size=None)
    crops = Crops(40, 1.0, 1 / 3, out_size=40)
    items = CropItems(base, range(len(base)), crops, seed=0)
    again = CropItems(base, range(len(base)), crops, seed=0)
    assert all(torch.equal(items[i]["image"], again[i]["image"]) for i in range(len(items)))
    by_image: dict[str, list[dict]] = {}
    for i in range(len(items)):
        by_image.setdefault(items[i]["image_file"], []).append(items[i])
    for group in by_image.values():
        assert torch.equal(group[0]["image"], group[1]["image"])  # encoded once
        assert sum(float(item["mask"].sum()) > 0 for item in group) == 1  # centred on one


# --- the plan -----------------------------------------------------------------------------------
def test_the_demo_plans_whole_images(tmp_path) -> None:
    root = tmp_path / "phantoms"
    generate_phantoms(root, images=3, size=256, seed=0, test_fraction=1 / 3, workers=1)
    plan = plan_data(BiomedParseDataset(root, image_size=None), 256)
    assert (plan.crop_size, plan.window_size) == (0, 0)
    assert "whole images" in plan.describe() and "256x256" in plan.describe()


def test_large_images_plan_native_crops_of_the_model_size(write_dataset) -> None:
    big = np.zeros((1024, 1024), np.uint8)
    speck = np.zeros((1024, 1024), bool)
    speck[500:504, 500:504] = True
    root = write_dataset({f"b{i}_CT_body.png": (big, {"speck": speck}) for i in range(2)})
    plan = plan_data(BiomedParseDataset(root, image_size=None), 256)
    assert (plan.crop_size, plan.scale, plan.window_size) == (256, 1.0, 256)
    assert plan.object_crops == pytest.approx(1 / 3) and plan.window_overlap == 0.5
    assert "object sizes unknown" in plan.describe()


def test_object_sizes_set_the_scale() -> None:
    tiny = plan_data(Fingerprint((1024, 1024), (9.0,) * 20), 256)  # 3 px across
    assert (tiny.crop_size, tiny.scale) == (256, 1.0)
    mid = plan_data(Fingerprint((1024, 1024), (10.0**2,) * 20), 256)  # 10 px across
    assert (mid.crop_size, mid.scale) == (256, 0.5)  # still 5 px across
    large = plan_data(Fingerprint((1024, 1024), (17.0**2,) * 20), 256)  # the 1024² phantoms
    assert large.crop_size == 0  # a quarter of the size keeps them 4 px: whole images
    # 2048² with 34 px objects: the steps of 0.25 would say crops at 0.25, but an eighth of
    # the size (the whole image at 256) still keeps them 4 px across
    huge = plan_data(Fingerprint((2048, 2048), (34.0**2,) * 20), 256)
    assert huge.crop_size == 0 and "large enough" in huge.describe()
    finer = plan_data(Fingerprint((2048, 2048), (30.0**2,) * 20), 256)  # 3.75 px resized
    assert (finer.crop_size, finer.scale) == (256, 0.25)


def test_the_config_wins_over_the_plan_and_windows_follow_the_crops(tmp_path) -> None:
    root = tmp_path / "phantoms"
    generate_phantoms(root, images=3, size=128, seed=0, test_fraction=1 / 3, workers=1)
    said: list[str] = []
    cfg = TrainConfig.load(None, {"data.root": str(root), "model.image_size": 64})
    planned = resolve_plan(cfg, say=said.append)
    assert (planned.data.crop_size, planned.data.scale) == (64, 1.0) and len(said) == 1
    assert "crops of 64x64" in said[0]
    model = planned.model.resolve()
    assert (model.window_size, model.window_scale, model.window_overlap) == (64, 1.0, 0.5)
    mine = resolve_plan(cfg.with_overrides({"data.crop_size": 96, "data.scale": 0.75}),
                        say=said.append)
    assert (mine.data.crop_size, mine.data.scale) == (96, 0.75)
    # the line says what is used, and which values the config set over the plan
    assert "crops of 96x96 at scale 0.75" in said[1]
    assert "set in the config: crop_size 96 (planned 64), scale 0.75 (planned 1)" in said[1]
    assert (mine.model.resolve().window_size, mine.model.resolve().window_scale) == (96, 0.75)
    whole = resolve_plan(cfg.with_overrides({"data.crop_size": 0}))
    assert whole.model.resolve().window_size == 0 and crops_of(whole.data, 64) is None


# --- runs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantoms128(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phantoms128") / "phantoms"
    generate_phantoms(root, images=6, size=128, seed=0, test_fraction=1 / 3,
                      absent_fraction=0.5, workers=1)
    return root


def test_a_run_on_planned_crops_stores_the_plan_and_resumes_without_replanning(
        phantoms128, tmp_path, small_config) -> None:
    values = small_config(phantoms128, train={"max_steps": 2, "epochs": 1})
    values["model"]["image_size"] = 64
    values["data"]["crop_size"] = None  # planned: 128-pixel images, model at 64
    cfg = TrainConfig.from_dict(values)
    run = tmp_path / "run"
    result = train(cfg, run, progress=False)
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert (stored["data"]["crop_size"], stored["data"]["scale"]) == (64, 1.0)
    assert stored["model"]["window_size"] == 64 and stored["model"]["window_scale"] == 1.0
    saved = json.loads((result.last_checkpoint / "config.json").read_text())
    assert (saved["window_size"], saved["window_scale"], saved["window_overlap"]) == (64, 1.0,
                                                                                      0.5)
    assert result.metrics["last_val_loss"] is not None
    # resumed with the open config: the stored plan is taken, not planned again
    again = train(cfg, run, resume=True, progress=False)
    assert again.metrics["step"] == result.metrics["step"]


def test_the_expert_trains_on_the_same_crops(phantoms128, tmp_path) -> None:
    pytest.importorskip("segmentation_models_pytorch")
    from boltzformer.baselines import train_unet
    from boltzformer.baselines.unet_training import ImageTargets

    crops = Crops(64, 1.0, 1 / 3, out_size=64)
    base = BiomedParseDataset(phantoms128, image_size=None)
    item = ImageTargets(base, range(len(base)), base.target_names, crops=crops)[0]
    assert item["image"].shape == (3, 64, 64) and item["masks"].shape[-2:] == (64, 64)
    result = train_unet(phantoms128, tmp_path / "unet", steps=2, image_size=64, batch_size=2,
                        crops=crops, progress=False)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert (config["window_size"], config["window_scale"]) == (64, 1.0)
    assert result.metrics["steps"] == 2 and result.metrics["recipe"]["crops"][0] == 64
