"""`boltzformer convert consep`: synthetic CoNSeP folders (labels written here with scipy) ->
the BiomedParse layout, checked against the hand-made labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from boltzformer.cli import main
from boltzformer.data import BiomedParseDataset, list_splits
from boltzformer.data.converters import convert_consep

# Nucleus id -> (centre y, centre x, CoNSeP's 7-class type); two nuclei of some types.
NUCLEI = {1: (20, 20, 1), 2: (20, 60, 2), 3: (60, 20, 3), 4: (60, 60, 4), 5: (100, 20, 5),
          6: (100, 60, 6), 7: (20, 100, 7), 8: (60, 100, 3), 9: (100, 100, 2)}  # fmt: skip
# HoVer-Net's merge, written out by hand: class name -> the nucleus ids in it.
MERGED = {"other nuclei": {1}, "inflammatory nuclei": {2, 9}, "epithelial nuclei": {3, 4, 8},
          "spindle-shaped nuclei": {5, 6, 7}}  # fmt: skip


def disk_map(shape: tuple[int, int], nuclei: dict[int, tuple[int, int, int]]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inst = np.zeros(shape, np.int32)
    for k, (cy, cx, _) in nuclei.items():
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = k
    return inst


def write_consep(root: Path, split: str, name: str, inst: np.ndarray, types: list[int]) -> None:
    """One CoNSeP image (random RGB PNG) and its .mat in CoNSeP's fields."""
    (root / split / "Images").mkdir(parents=True, exist_ok=True)
    (root / split / "Labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(types))
    image = rng.integers(0, 256, (*inst.shape, 3), dtype=np.uint8)
    Image.fromarray(image).save(root / split / "Images" / f"{name}.png")
    lookup = np.array([0, *types])
    n = len(types)
    scipy.io.savemat(root / split / "Labels" / f"{name}.mat", {
        "inst_map": inst, "type_map": lookup[inst].astype(np.uint8),
        "inst_type": np.array(types, np.int64).reshape(n, 1),
        "inst_centroid": np.zeros((n, 2)),
    })  # fmt: skip


@pytest.fixture
def consep7(tmp_path: Path) -> Path:
    src = tmp_path / "consep"
    inst = disk_map((128, 128), NUCLEI)
    write_consep(src, "Train", "train_1", inst, [t for _, _, t in NUCLEI.values()])
    # a test image without "other" nuclei: its "other nuclei" mask is an absent target
    write_consep(src, "Test", "test_1", disk_map((128, 128), {1: (64, 64, 2)}), [2])
    return src


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_seven_types_merge_into_hovernet_four(consep7: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["convert", "consep", str(consep7), str(out)]) == 0
    inst = disk_map((128, 128), NUCLEI)
    for target, ids in MERGED.items():
        name = f"train_1_pathology_colon_{target.replace(' ', '+')}.png"
        mask = read(out / "train_mask" / name)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask > 0, np.isin(inst, list(ids)))
        instances = read(out / "train_instances" / name)
        assert Image.open(out / "train_instances" / name).mode == "I;16"
        assert instances.max() == len(ids)  # one id per nucleus of the class, 1..n
        assert len(np.unique(instances[instances > 0])) == len(ids)
    data = json.loads((out / "train.json").read_text())
    sentences = {a["target"]: [s["sent"] for s in a["sentences"]] for a in data["annotations"]}
    assert sentences["epithelial nuclei"][0] == "epithelial nuclei in colon pathology"
    assert len(sentences["epithelial nuclei"]) > 2
    assert sum(a["objects"] for a in data["annotations"]) == len(NUCLEI)
    assert list_splits(out) == ["test", "train"]  # train_instances is not a split
    assert (out / "size_stats.md").is_file() and (out / "size_stats.csv").is_file()


def test_seven_classes_on_request_and_absent_targets(consep7: Path, tmp_path: Path) -> None:
    out = tmp_path / "out7"
    convert_consep(consep7, out, classes=7)
    inst = disk_map((128, 128), NUCLEI)
    mask = read(out / "train_mask" / "train_1_pathology_colon_malignant+epithelial+nuclei.png")
    assert np.array_equal(mask > 0, inst == 4)
    mask = read(out / "train_mask" / "train_1_pathology_colon_endothelial+nuclei.png")
    assert np.array_equal(mask > 0, inst == 7)
    test = json.loads((out / "test.json").read_text())
    absent = {a["target"] for a in test["annotations"] if a["absent"]}
    assert absent == {"other nuclei", "healthy epithelial nuclei", "malignant epithelial nuclei",
                      "fibroblast nuclei", "muscle nuclei", "endothelial nuclei"}  # fmt: skip
    ds = BiomedParseDataset(out, "test")
    assert len(ds) == 7
    empty = [ds[i] for i in range(len(ds)) if ds.samples[i].target == "muscle nuclei"][0]
    assert empty["mask"].sum() == 0


def test_absent_skip_writes_only_present_classes(consep7: Path, tmp_path: Path) -> None:
    out = tmp_path / "skip"
    convert_consep(consep7, out, absent="skip")
    assert [p.name for p in (out / "test_mask").iterdir()] == [
        "test_1_pathology_colon_inflammatory+nuclei.png"]


def test_merged_labels_cannot_give_seven_classes(tmp_path: Path, capsys) -> None:
    src = tmp_path / "merged"
    write_consep(src, "Train", "a", disk_map((64, 64), {1: (30, 30, 4)}), [4])
    assert main(["convert", "consep", str(src), str(tmp_path / "o"), "--classes", "7"]) == 1
    err = capsys.readouterr().err
    assert "4 merged types" in err and len(err.strip().splitlines()) == 1
    # and with 4 classes a type-4 nucleus of merged labels stays spindle-shaped
    convert_consep(src, tmp_path / "o4")
    mask = read(tmp_path / "o4" / "train_mask" / "a_pathology_colon_spindle-shaped+nuclei.png")
    assert mask.sum() > 0


def test_full_tile_is_cut_into_patches(tmp_path: Path) -> None:
    src = tmp_path / "tiles"
    centres = [(10, 10), (250, 500), (500, 260), (700, 760), (990, 990), (520, 990)]
    nuclei = {k: (y, x, 1 + k % 7) for k, (y, x) in enumerate(centres, start=1)}
    inst = disk_map((1000, 1000), nuclei)
    write_consep(src, "Train", "train_full", inst, [t for _, _, t in nuclei.values()])
    out = tmp_path / "out"
    convert_consep(src, out, tile=256)
    images = sorted((out / "train").iterdir())
    assert len(images) == 16  # rows and columns start at 0, 256, 512, 744
    source = np.asarray(Image.open(src / "Train" / "Images" / "train_full.png"))
    tile = np.asarray(Image.open(out / "train" / "train_full-y744x512_pathology_colon.png"))
    assert tile.shape == (256, 256, 3)
    assert np.array_equal(tile, source[744:1000, 512:768])
    # nucleus 2 at (250, 500) has type 3 (epithelial) and crosses the tiles' border at y 256
    mask = read(out / "train_mask" / "train_full-y0x256_pathology_colon_epithelial+nuclei.png")
    assert mask.any() and np.array_equal(mask > 0, (inst == 2)[0:256, 256:512])
    # nuclei 4 (700, 760) and 6 (520, 990) have types 5 and 7: spindle-shaped
    spindle = read(out / "train_mask" /
                   "train_full-y512x744_pathology_colon_spindle-shaped+nuclei.png")  # fmt: skip
    assert np.array_equal(spindle > 0, np.isin(inst, [4, 6])[512:768, 744:1000])
    total = sum(read(p).max() for p in (out / "train_instances").iterdir())
    assert total >= len(nuclei)  # nuclei on a tile border count once per tile they touch


def test_not_consep_is_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "x" / "images").mkdir(parents=True)
    assert main(["convert", "consep", str(tmp_path / "x"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "not a CoNSeP folder" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
