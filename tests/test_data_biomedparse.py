"""The BiomedParse-format reader: the real demo folder, prompts, image and mask formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from boltzformer.data import BiomedParseDataset, collate, list_splits
from boltzformer.data.errors import DataError


@pytest.fixture(scope="module")
def demo(sample_dir):
    return BiomedParseDataset(sample_dir / "biomedparse-demo", "demo", image_size=256)


def test_demo_folder_has_5_images_and_25_masks(demo, sample_dir):
    assert list_splits(sample_dir / "biomedparse-demo") == ["demo"]
    assert len(demo) == 25
    assert len({s.image_file for s in demo.samples}) == 5
    targets = {s.target for s in demo.samples}
    assert {"nodule", "left adrenal gland", "right kidney", "COVID-19 infection"} <= targets
    xray = next(s for s in demo.samples if s.target == "left lung")
    assert (xray.modality, xray.site) == ("X-Ray", "chest")
    assert all(s.area is None for s in demo.samples)  # no JSON: areas are measured on load


def test_demo_lung_nodule_item(demo):
    index = next(i for i, s in enumerate(demo.samples) if s.mask_file == "01_CT_lung_nodule.png")
    item = demo[index]
    assert item["prompt"] == "nodule in lung CT"
    assert (item["target"], item["modality"], item["site"]) == ("nodule", "CT", "lung")
    assert item["image_file"] == "01_CT_lung.png"
    assert item["dataset"] == "biomedparse-demo"
    assert item["area"] == pytest.approx(0.0021, abs=0.0001)  # ~0.21% of the 1024x1024 image
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0.0 and item["image"].max() <= 255.0
    assert item["image"].max() > 200  # 0-255 scale, not 0-1
    assert item["mask"].shape == (1, 256, 256) and item["mask"].dtype == torch.float32
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["mask"].mean().item() == pytest.approx(item["area"], rel=0.1)
    # The RGBA demo image has equal channels (grayscale CT stored as colour).
    assert torch.equal(item["image"][0], item["image"][1])


def test_json_sentences_random_in_training_fixed_in_evaluation(write_dataset, make_disc):
    sentences = ["nodule in lung CT", "pulmonary nodule in chest CT", "small lung lesion in CT"]
    image = np.zeros((32, 32), np.uint8)
    root = write_dataset(
        {"01_CT_lung.png": (image, {"nodule": make_disc(32, 10, 10, 3)})},
        sentences={"01_CT_lung_nodule.png": sentences},
    )
    evaluate = BiomedParseDataset(root, "train", image_size=32)
    assert not evaluate.augment
    assert evaluate.samples[0].sentences == tuple(sentences)
    assert {evaluate[0]["prompt"] for _ in range(20)} == {sentences[0]}

    train = BiomedParseDataset(root, "train", image_size=32, train=True, seed=3)
    assert train.augment  # paper A.5 augmentation is on by default when training
    drawn = [train[0]["prompt"] for _ in range(40)]
    assert set(drawn) == set(sentences)
    again = BiomedParseDataset(root, "train", image_size=32, train=True, seed=3)
    assert [again[0]["prompt"] for _ in range(40)] == drawn  # seeded
    other = BiomedParseDataset(root, "train", image_size=32, train=True, seed=4)
    assert [other[0]["prompt"] for _ in range(40)] != drawn


def test_file_name_prompts_and_plus_signs(write_dataset, make_disc):
    image = np.zeros((16, 16), np.uint8)
    root = write_dataset(
        {"a_1_CT_abdomen.png": (image, {"left adrenal gland": make_disc(16, 8, 8, 2)})}
    )
    ds = BiomedParseDataset(root, "train", image_size=16)
    sample = ds.samples[0]
    assert sample.mask_file == "a_1_CT_abdomen_left+adrenal+gland.png"
    assert (sample.target, sample.site, sample.modality) == ("left adrenal gland", "abdomen", "CT")
    assert ds[0]["prompt"] == "left adrenal gland in abdomen CT"


def test_rgba_mask_with_opaque_alpha_and_rgb_image(write_dataset, make_disc):
    obj = make_disc(40, 12, 20, 5)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[obj, :3] = 255
    rgba[..., 3] = 255  # opaque alpha everywhere: the alpha is not the mask
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    root = write_dataset({"x_MRI_brain.png": (rgb, {"tumor": Image.fromarray(rgba, "RGBA")})})
    item = BiomedParseDataset(root, "train", image_size=40)[0]
    assert torch.equal(item["mask"][0].bool(), torch.from_numpy(obj))
    assert item["area"] == pytest.approx(obj.mean())
    assert torch.equal(item["image"], torch.from_numpy(rgb).permute(2, 0, 1).float())


def test_grayscale_and_16bit_images(write_dataset, make_disc):
    gray = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) % 251
    deep = (np.arange(48 * 48).reshape(48, 48) * 20 + 1000).astype(np.uint16)  # 1000..47060
    mask = make_disc(48, 24, 24, 6)
    root = write_dataset(
        {
            "g_CT_chest.png": (gray.astype(np.uint8), {"heart": mask}),
            "d_CT_chest.png": (Image.fromarray(deep), {"heart": mask}),
        }
    )
    ds = BiomedParseDataset(root, "train", image_size=48)
    items = {item["image_file"]: item for item in (ds[0], ds[1])}
    g = items["g_CT_chest.png"]["image"]
    assert torch.equal(g[0], torch.from_numpy(gray).float())  # L image kept exactly
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], g[2])  # replicated to 3 channels
    d = items["d_CT_chest.png"]["image"]
    assert d.min().item() == 0.0 and d.max().item() == pytest.approx(255.0)  # min/max scaled
    expected = (deep.astype(np.float64) - 1000) / (deep.max() - 1000) * 255
    np.testing.assert_allclose(d[0].numpy(), expected, atol=1e-3)


@pytest.mark.parametrize("size", [37, 256])
def test_masks_stay_binary_after_resizing(write_dataset, make_disc, size):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (100, 100), dtype=np.uint8)
    root = write_dataset(
        {
            "i_CT_lung.png": (image, {"nodule": make_disc(100, 30, 60, 7.5)}),
            "j_CT_lung.png": (image, {"nodule": make_disc(100, 70, 20, 0.4)}),  # a single pixel
        }
    )
    ds = BiomedParseDataset(root, "train", image_size=size)
    for index in range(2):
        item = ds[index]
        assert item["image"].shape == (3, size, size)
        assert set(item["mask"].unique().tolist()) == {0.0, 1.0}  # binary and not empty
    tiny = next(ds[i] for i in range(2) if ds[i]["image_file"] == "j_CT_lung.png")
    assert tiny["area"] == pytest.approx(1e-4)  # area of the original 100x100 mask
    big = next(ds[i] for i in range(2) if ds[i]["image_file"] == "i_CT_lung.png")
    assert big["mask"].mean().item() == pytest.approx(big["area"], rel=0.15)


def test_collate_and_dataloader(write_dataset, make_disc):
    image = np.zeros((20, 20), np.uint8)
    root = write_dataset(
        {f"{k}_CT_lung.png": (image, {"nodule": make_disc(20, 5 + k, 5, 2)}) for k in range(3)}
    )
    ds = BiomedParseDataset(root, "train", image_size=24)
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate)))
    assert batch["image"].shape == (3, 3, 24, 24) and batch["mask"].shape == (3, 1, 24, 24)
    assert batch["prompt"] == ["nodule in lung CT"] * 3
    assert isinstance(batch["area"], list) and all(isinstance(a, float) for a in batch["area"])
    assert sorted(batch["image_file"]) == [f"{k}_CT_lung.png" for k in range(3)]


def test_dataloader_workers_are_seeded_and_independent(write_dataset, make_disc):
    sentences = [f"nodule phrasing {k}" for k in range(6)]
    root = write_dataset(
        {"01_CT_lung.png": (np.zeros((16, 16), np.uint8), {"nodule": make_disc(16, 8, 8, 3)})},
        sentences={"01_CT_lung_nodule.png": sentences},
    )
    ds = BiomedParseDataset(root, "train", image_size=16, train=True, seed=1)

    def prompts() -> list[str]:
        torch.manual_seed(0)  # DataLoader draws its worker seeds from torch's generator
        loader = DataLoader(ds, sampler=[0] * 16, num_workers=2, collate_fn=collate)
        return [p for batch in loader for p in batch["prompt"]]

    first = prompts()
    assert set(first) <= set(sentences) and len(set(first)) > 2
    assert first[0::2] != first[1::2]  # the two workers do not repeat each other
    assert prompts() == first


def test_constant_prompt_replaces_every_sentence(sample_dir):
    root = sample_dir / "biomedparse-demo"
    ds = BiomedParseDataset(root, "demo", image_size=64, train=True, prompt="object in image")
    assert {ds[i]["prompt"] for i in range(len(ds))} == {"object in image"}
    assert ds[0]["target"] == BiomedParseDataset(root, "demo", image_size=64)[0]["target"]
    with pytest.raises(ValueError, match="prompt is empty"):
        BiomedParseDataset(root, "demo", prompt="  ")


def test_target_names_include_the_jsons_categories(write_dataset, make_disc):
    """A category the JSON lists but no sample of this split holds (e.g. an absent target that
    only the test split asks for) is still a target name: the labels vocabulary and the
    U-Net's channels come from `target_names`."""
    image = np.zeros((32, 32), np.uint8)
    root = write_dataset({"01_CT_lung.png": (image, {"nodule": make_disc(32, 10, 10, 3)})},
                         sentences={"01_CT_lung_nodule.png": ["nodule in lung CT"]})
    assert BiomedParseDataset(root, "train", image_size=32).target_names == ["nodule"]
    listing = json.loads((root / "train.json").read_text())
    listing["categories"] = [{"id": 1, "name": "trachea"}, {"id": 2, "name": "nodule"}]
    (root / "train.json").write_text(json.dumps(listing))
    data = BiomedParseDataset(root, "train", image_size=32)
    assert [s.target for s in data.samples] == ["nodule"]
    assert data.target_names == ["nodule", "trachea"]


@pytest.mark.parametrize(("image_size", "augment"), [(None, False), (128, False), (128, True)])
def test_load_group_reads_the_image_once_and_gives_what_items_give(sample_dir, image_size,
                                                                   augment, monkeypatch):
    """The trainers load an image's K items together: the same items as one by one (the
    masks resized alike, the prompts and augmentations drawn in the same order), for one
    decode of the image."""
    import boltzformer.data.biomedparse as biomedparse

    root = sample_dir / "biomedparse-demo"
    one_by_one = BiomedParseDataset(root, "demo", image_size=image_size, train=True,
                                    augment=augment, seed=3)
    grouped = BiomedParseDataset(root, "demo", image_size=image_size, train=True,
                                 augment=augment, seed=3)
    group = [i for i, s in enumerate(grouped.samples) if s.image_file == "06_CT_abdomen.png"]
    assert len(group) >= 3
    expected = [one_by_one[i] for i in group]
    reads = []
    real_read = biomedparse.read_image
    monkeypatch.setattr(biomedparse, "read_image",
                        lambda path, **kw: reads.append(path) or real_read(path, **kw))
    got = grouped.load_group(group)
    assert len(reads) == 1
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        assert {k: v for k, v in a.items() if k not in ("image", "mask")} == {
            k: v for k, v in b.items() if k not in ("image", "mask")}
    assert augment == any(not torch.equal(b["image"], got[0]["image"]) for b in got)
    other = next(i for i, s in enumerate(grouped.samples) if s.image_file != "06_CT_abdomen.png")
    mixed = grouped.load_group([group[0], other])  # two images: item by item
    assert mixed[1]["image_file"] != mixed[0]["image_file"]


def test_load_group_names_the_bad_mask_or_skips_it(write_dataset, make_disc, tmp_path):
    image = np.zeros((32, 32), np.uint8)
    root = write_dataset({"01_CT_lung.png": (image, {"nodule": make_disc(32, 10, 10, 3),
                                                     "tumor": make_disc(32, 20, 20, 4)})})
    strict = BiomedParseDataset(root, "train", image_size=32)
    lenient = BiomedParseDataset(root, "train", image_size=32, skip_bad=True)
    bad = next((root / "train_mask").glob("*tumor*"))  # changed after the folder was read
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    with pytest.raises(DataError, match="mask is 16x16 but its image"):
        strict.load_group([0, 1])
    items = lenient.load_group([0, 1])
    assert [item["target"] for item in items] == ["nodule", "nodule"]  # the bad one skipped
