"""Bad input gets a DataError naming the file and the problem; skip_bad logs and counts."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from boltzformer.data import BiomedParseDataset, DataError, read_image, read_mask


@pytest.fixture
def one_good(write_dataset, make_disc):
    """A split with one good image/mask pair, 32x32."""
    image = np.full((32, 32), 100, np.uint8)
    return write_dataset({"good_CT_lung.png": (image, {"nodule": make_disc(32, 16, 16, 4)})})


def test_mask_without_image(one_good, make_disc):
    Image.fromarray(make_disc(32, 5, 5, 2).astype(np.uint8) * 255).save(
        one_good / "train_mask" / "lost_CT_lung_nodule.png"
    )
    with pytest.raises(DataError, match=r"lost_CT_lung_nodule\.png: no image for this mask"):
        BiomedParseDataset(one_good, "train")


def test_unreadable_image(one_good):
    (one_good / "train" / "good_CT_lung.png").write_bytes(b"this is not a png file")
    with pytest.raises(DataError, match=r"good_CT_lung\.png: not a readable image"):
        BiomedParseDataset(one_good, "train")


def test_truncated_image_is_found_on_access(one_good):
    path = one_good / "train" / "good_CT_lung.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixel data cut
    ds = BiomedParseDataset(one_good, "train")  # headers are fine
    with pytest.raises(DataError, match=r"good_CT_lung\.png: truncated or corrupt image data"):
        ds[0]


def test_mask_size_differs_from_image(one_good):
    Image.fromarray(np.zeros((30, 32), np.uint8)).save(
        one_good / "train_mask" / "good_CT_lung_nodule.png"
    )
    with pytest.raises(DataError, match=r"good_CT_lung_nodule\.png: mask is 32x30 but its image"):
        BiomedParseDataset(one_good, "train")


def test_mask_values_other_than_0_255(one_good, tmp_path):
    values = np.zeros((32, 32), np.uint8)
    values[:4] = 128
    values[4:8] = 255
    Image.fromarray(values).save(one_good / "train_mask" / "good_CT_lung_nodule.png")
    ds = BiomedParseDataset(one_good, "train")
    with pytest.raises(DataError, match=r"nodule\.png: mask values must be 0 and 255.*128"):
        ds[0]
    # Documented rule: 0/1 masks are binary too.
    Image.fromarray((values > 0).astype(np.uint8)).save(tmp_path / "01.png")
    assert read_mask(tmp_path / "01.png").sum() == 8 * 32


def test_coloured_and_transparent_masks_are_refused(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[2:4, 2:4, 0] = 255  # red only
    Image.fromarray(rgb).save(tmp_path / "red.png")
    with pytest.raises(DataError, match=r"red\.png: mask is coloured"):
        read_mask(tmp_path / "red.png")
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:4, 2:4] = 255  # the shape is only in the alpha and colour of 4 pixels
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    with pytest.raises(DataError, match=r"alpha\.png: mask has a transparent alpha channel"):
        read_mask(tmp_path / "alpha.png")


def test_empty_data_set(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train_mask").mkdir()
    with pytest.raises(DataError, match=r"split 'train' has no usable masks"):
        BiomedParseDataset(tmp_path, "train")


def test_unknown_split_and_missing_folder(one_good, tmp_path):
    with pytest.raises(DataError, match=r"unknown split 'valid'; available: train"):
        BiomedParseDataset(one_good, "valid")
    with pytest.raises(DataError, match=r"nowhere: data set folder not found"):
        BiomedParseDataset(tmp_path / "nowhere", "train")


def test_image_over_pixel_limit(one_good):
    with pytest.raises(
        DataError, match=r"good_CT_lung\.png: 32x32 = 1024 pixels is over the limit"
    ):
        BiomedParseDataset(one_good, "train", max_pixels=1000)
    assert len(BiomedParseDataset(one_good, "train", max_pixels=1024)) == 1
    with pytest.raises(DataError, match="over the limit of 1000"):
        read_image(one_good / "train" / "good_CT_lung.png", max_pixels=1000)


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("mask_file", "../../secret.png"),
        ("mask_file", "/etc/passwd"),
        ("mask_file", "..\\train\\good_CT_lung.png"),
        ("file_name", "../train_mask/good_CT_lung_nodule.png"),
        ("file_name", "/tmp/good_CT_lung.png"),
    ],
)
def test_json_names_outside_the_data_set_are_refused(one_good, field, name):
    annotation = {"id": 0, "mask_file": "good_CT_lung_nodule.png", "file_name": "good_CT_lung.png"}
    annotation[field] = name
    (one_good / "train.json").write_text(json.dumps({"images": [], "annotations": [annotation]}))
    for skip_bad in (False, True):  # never skipped quietly: the whole JSON is refused
        with pytest.raises(DataError, match=r"train\.json: .* outside the data set folder"):
            BiomedParseDataset(one_good, "train", skip_bad=skip_bad)


def test_symlink_escaping_the_data_set_is_refused(one_good, tmp_path):
    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(outside)
    (one_good / "train_mask" / "link.png").symlink_to(outside)
    annotation = {"mask_file": "link.png", "file_name": "good_CT_lung.png"}
    (one_good / "train.json").write_text(json.dumps({"annotations": [annotation]}))
    with pytest.raises(DataError, match=r"'link\.png' resolves outside the data set folder"):
        BiomedParseDataset(one_good, "train")


def test_invalid_json(one_good):
    (one_good / "train.json").write_text("{not json")
    with pytest.raises(DataError, match=r"train\.json: not a readable JSON file"):
        BiomedParseDataset(one_good, "train")
    (one_good / "train.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"train\.json: expected COCO-like"):
        BiomedParseDataset(one_good, "train")


def test_skip_bad_logs_and_counts(one_good, make_disc, caplog):
    masks = one_good / "train_mask"
    save = Image.fromarray
    save(make_disc(32, 5, 5, 2).astype(np.uint8) * 255).save(masks / "lost_CT_lung_nodule.png")
    save(np.zeros((16, 16), np.uint8)).save(masks / "good_CT_lung_small+mask.png")
    rng = np.random.default_rng(0)
    save(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
        one_good / "train" / "cut_CT_lung.png"
    )
    save(make_disc(32, 9, 9, 3).astype(np.uint8) * 255).save(masks / "cut_CT_lung_nodule.png")
    cut = one_good / "train" / "cut_CT_lung.png"
    cut.write_bytes(cut.read_bytes()[:150])

    with pytest.raises(DataError):
        BiomedParseDataset(one_good, "train")
    with caplog.at_level(logging.WARNING, logger="boltzformer.data"):
        ds = BiomedParseDataset(one_good, "train", skip_bad=True)
    assert len(ds) == 2  # the good pair, and the truncated image found only on access
    assert len(ds.skipped) == 2
    assert {s.file.rsplit("/", 1)[-1] for s in ds.skipped} == {
        "lost_CT_lung_nodule.png",
        "good_CT_lung_small+mask.png",
    }
    assert "no image for this mask" in caplog.text and "mask is 16x16" in caplog.text
    assert "skipped 2 bad samples" in caplog.text

    caplog.clear()
    bad = next(i for i, s in enumerate(ds.samples) if s.image_file == "cut_CT_lung.png")
    with caplog.at_level(logging.WARNING, logger="boltzformer.data"):
        item = ds[bad]  # the next good sample comes back instead
    assert item["image_file"] == "good_CT_lung.png"
    assert len(ds.skipped) == 3 and "truncated or corrupt" in ds.skipped[-1].reason
    assert "cut_CT_lung.png" in caplog.text
    ds[bad]
    assert len(ds.skipped) == 3  # a sample known to be bad is skipped without a new record


def test_skip_bad_when_every_sample_fails_on_access(one_good):
    path = one_good / "train" / "good_CT_lung.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:150])
    ds = BiomedParseDataset(one_good, "train", skip_bad=True)
    with pytest.raises(DataError, match="every sample of split 'train' failed to load"):
        ds[0]
    assert len(ds.skipped) == 1


def test_missing_file_for_a_reader(tmp_path):
    with pytest.raises(DataError, match=r"absent\.png: file not found"):
        read_image(tmp_path / "absent.png")
