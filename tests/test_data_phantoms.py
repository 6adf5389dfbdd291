"""Synthetic phantoms: BiomedParse layout, determinism, sizes, anatomy, prompts and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from boltzformer.cli import build_parser, main
from boltzformer.data import BiomedParseDataset, DataError
from boltzformer.data.phantoms import (
    ABSENT_CANDIDATES,
    FOREIGN_CANDIDATES,
    SENTENCES,
    generate_phantoms,
    make_phantom,
    sentences_for,
    size_statistics,
)


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantoms") / "set"
    summary = generate_phantoms(root, images=20, size=128, seed=5, absent_fraction=0.3, workers=1)
    return root, summary


@pytest.fixture(scope="module")
def phantoms_256():
    """Phantoms drawn in memory at the default size, for size and anatomy checks."""
    return [make_phantom(i, size=256, seed=11) for i in range(48)]


def test_layout_and_reader(phantom_set):
    root, summary = phantom_set
    assert summary["images"] == {"train": 16, "test": 4}
    for name in ("train", "train_mask", "test", "test_mask"):
        assert (root / name).is_dir()
    for name in ("train.json", "test.json", "size_stats.md", "size_stats.csv"):
        assert (root / name).is_file()
    assert len(list((root / "train").iterdir())) == 16
    train = BiomedParseDataset(root, "train", image_size=128)
    assert len(train) == summary["masks"]["train"] == len(list((root / "train_mask").iterdir()))
    assert all(len(s.sentences) >= 4 for s in train.samples)  # paraphrases from the JSON
    for index in range(0, len(train), 7):
        sample, item = train.samples[index], train[index]
        assert item["area"] == pytest.approx(sample.area, abs=1e-9)  # JSON area is right
        assert (
            item["prompt"]
            == sample.sentences[0]
            == f"{sample.target} in {sample.site} {sample.modality}"
        )
        assert item["image"].shape == (3, 128, 128)


def test_absent_targets_have_empty_masks(phantom_set):
    root, _ = phantom_set
    data = json.loads((root / "train.json").read_text())
    absent = [a for a in data["annotations"] if a["absent"]]
    assert absent, "absent_fraction=0.3 over 16 images should leave some targets out"
    sites = {img["id"]: img["site"] for img in data["images"]}
    train = BiomedParseDataset(root, "train", image_size=128)
    by_file = {s.mask_file: i for i, s in enumerate(train.samples)}
    for ann in absent:
        assert ann["target"] in ABSENT_CANDIDATES[sites[ann["image_id"]]]
        assert ann["area_fraction"] == 0.0
        item = train[by_file[ann["mask_file"]]]
        assert item["area"] == 0.0 and item["mask"].sum() == 0
    present = [a for a in data["annotations"] if not a["absent"]]
    assert all(a["area_fraction"] > 0 for a in present)


def test_foreign_targets_are_absent_and_leave_the_pixels_alone(tmp_path):
    for i in range(12):
        plain = make_phantom(i, size=96, seed=3)
        foreign = make_phantom(i, size=96, seed=3, foreign_fraction=1.0)
        np.testing.assert_array_equal(plain.image, foreign.image)
        assert plain.foreign is None and foreign.foreign not in plain.masks
        assert foreign.foreign in FOREIGN_CANDIDATES[foreign.site]
        assert not foreign.masks[foreign.foreign].any()
        assert set(foreign.masks) - set(plain.masks) == {foreign.foreign}
    generate_phantoms(tmp_path / "f", images=4, size=96, seed=3, test_fraction=0.5,
                      foreign_fraction=1.0, workers=1)
    for split in ("train", "test"):
        data = json.loads((tmp_path / "f" / f"{split}.json").read_text())
        sites = {img["id"]: img["site"] for img in data["images"]}
        absent = [a for a in data["annotations"] if a["absent"]]
        assert len(absent) == 2  # one foreign target per image
        for ann in absent:
            assert ann["target"] in FOREIGN_CANDIDATES[sites[ann["image_id"]]]
            assert ann["area_fraction"] == 0.0


def test_same_seed_same_files_different_seed_different(phantom_set, tmp_path):
    root, _ = phantom_set
    again = tmp_path / "again"
    generate_phantoms(again, images=20, size=128, seed=5, absent_fraction=0.3, workers=1)
    assert _digests(again) == _digests(root)
    other = tmp_path / "other"
    generate_phantoms(other, images=20, size=128, seed=6, absent_fraction=0.3, workers=1)
    first, second = _digests(root), _digests(other)
    images = [k for k in first if k.startswith("train/")]
    assert all(first[k] != second.get(k) for k in images)


def test_output_does_not_depend_on_worker_count(tmp_path):
    generate_phantoms(tmp_path / "one", images=6, size=96, seed=2, workers=1)
    generate_phantoms(tmp_path / "two", images=6, size=96, seed=2, workers=2)
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")


def test_refuses_a_non_empty_output_folder(phantom_set):
    root, _ = phantom_set
    with pytest.raises(DataError, match="not an empty folder"):
        generate_phantoms(root, images=2, size=96)


def _records(phantoms):
    return [
        {
            "modality": p.modality,
            "site": p.site,
            "masks": [(t, t, float(m.mean()), t == p.absent) for t, m in p.masks.items()],
        }
        for p in phantoms
    ]


def test_size_statistics_are_mostly_small(phantoms_256, phantom_set):
    rows = {r["target"]: r for r in size_statistics(_records(phantoms_256))}
    assert len(rows) >= 15
    small = [t for t, r in rows.items() if r["mean_pct"] < 1.0]
    assert len(small) > len(rows) / 2  # most target types are below 1% of the image
    assert {"nodule", "left adrenal gland", "right adrenal gland", "liver tumor"} <= set(small)
    nodule = rows["nodule"]
    assert nodule["min_pct"] >= 0.003 and nodule["max_pct"] <= 0.4 and nodule["mean_pct"] < 0.2
    assert min(r["min_pct"] for r in rows.values()) < 0.02  # down to ~0.005%
    assert 8 < max(r["max_pct"] for r in rows.values()) < 22  # lungs and liver
    root, summary = phantom_set
    with (root / "size_stats.csv").open() as handle:
        saved = list(csv.DictReader(handle))
    assert [r["target"] for r in saved] == [r["target"] for r in summary["stats"]]
    assert "| nodule |" in (root / "size_stats.md").read_text()


def _centre_x(mask: np.ndarray) -> float:
    return float(np.nonzero(mask)[1].mean()) / mask.shape[1]


def test_anatomy_and_laterality(phantoms_256):
    abdomens = [p for p in phantoms_256 if p.site == "abdomen"]
    chests = [p for p in phantoms_256 if p.site == "chest"]
    assert len(abdomens) >= 10 and len(chests) >= 8
    assert {p.modality for p in abdomens} == {"CT", "MRI"}
    for p in abdomens:
        m = p.masks
        # Radiological convention: the patient's left is on the image right.
        assert _centre_x(m["left kidney"]) > 0.5 > _centre_x(m["right kidney"])
        assert _centre_x(m["left adrenal gland"]) > _centre_x(m["right adrenal gland"])
        assert _centre_x(m["liver"]) < 0.5 < _centre_x(m["spleen"])
        assert not (m["left kidney"] & m["right kidney"]).any()
        assert not (m["left adrenal gland"] & (m["left kidney"] | m["aorta"])).any()
        for part in ("liver tumor", "hepatic vessel"):
            if part in m:
                assert (m[part] <= m["liver"]).all()  # inside the liver, part of its mask
    for p in chests:
        m = p.masks
        assert _centre_x(m["left lung"]) > 0.5 > _centre_x(m["right lung"])
        lungs = m["left lung"] | m["right lung"]
        assert (m["nodule"] <= lungs).all()
        assert not (m["aorta"] & lungs).any() and not (m["esophagus"] & lungs).any()


def test_nodules_have_distractors_of_the_same_brightness(phantoms_256):
    """Vessel cross-sections in the lungs are as bright as the nodule: saliency is not enough."""
    for p in (p for p in phantoms_256 if p.site == "chest"):
        nodule = p.masks["nodule"]
        lungs = (p.masks["left lung"] | p.masks["right lung"]) & ~nodule
        _, distractors = ndimage.label((p.image >= np.median(p.image[nodule])) & lungs)
        assert distractors >= 10  # separate lung structures at least as bright as the nodule


def test_prompts_need_the_text():
    for extra in SENTENCES.values():
        assert len(extra) >= 3 and len(set(extra)) == len(extra)
    sentences = sentences_for("left kidney", "abdomen", "MRI")
    assert sentences[0] == "left kidney in abdomen MRI"
    assert all("left" in s and "MRI" in s for s in sentences)
    assert all("{" not in s for t in SENTENCES for s in sentences_for(t, "chest", "CT"))


def test_synth_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(
        ["synth", str(out), "--images", "5", "--size", "96", "--seed", "1", "--workers", "1"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "| target |" in printed and "size_stats.md" in printed
    assert len(list((out / "train").iterdir())) == 4 and len(list((out / "test").iterdir())) == 1
    assert main(["synth", str(out), "--images", "5"]) == 1  # refuses to overwrite
    assert "not an empty folder" in capsys.readouterr().err
    help_text = build_parser()._subparsers._group_actions[0].choices["synth"].format_help()
    assert "--images" in help_text and "BiomedParse" in help_text
