"""`boltzformer convert dsb2018` on two real DSB2018 images (tests/fixtures/dsb2018, CC0):
one fluorescence image with 11 nuclei and one H&E image with 3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boltzformer.cli import main
from boltzformer.data import BiomedParseDataset
from boltzformer.data.converters.dataset_writer import split_by_name
from boltzformer.data.converters.dsb2018 import imaging_type

SRC = Path(__file__).parent / "fixtures" / "dsb2018"
FLUO = "16c3d5935ba94b720becc24b7a05741c26149e221e3401924080f41e2f891368"
HE = "af576e8ec3a8d0b57eb6a311299e9e4fd2047970d3dd9d6f52e54ea6a91109da"


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dsb") / "out"
    assert main(["convert", "dsb2018", str(SRC), str(out), "--test-fraction", "0"]) == 0
    return out


def mask_files(image_id: str) -> list[np.ndarray]:
    folder = SRC / "stage1_train" / image_id / "masks"
    return [np.asarray(Image.open(p)) > 0 for p in sorted(folder.glob("*.png"))]


@pytest.mark.parametrize(("image_id", "modality", "nuclei"), [
    (FLUO, "fluorescence+microscopy", 11), (HE, "H&E+microscopy", 3)])  # fmt: skip
def test_masks_are_the_union_and_instances_the_files(
    converted: Path, image_id: str, modality: str, nuclei: int
) -> None:
    name = f"{image_id}_{modality}_cells_nuclei.png"
    masks = mask_files(image_id)
    assert len(masks) == nuclei
    merged = np.asarray(Image.open(converted / "train_mask" / name))
    assert np.array_equal(merged > 0, np.logical_or.reduce(masks))
    instances = np.asarray(Image.open(converted / "train_instances" / name))
    assert instances.max() == nuclei
    found = sorted((instances == k).sum() for k in range(1, nuclei + 1))
    assert found == sorted(int(m.sum()) for m in masks)  # one id per mask file, whole
    # RGBA source: the colour channels are kept, the alpha dropped
    source = np.asarray(Image.open(SRC / "stage1_train" / image_id / "images" / f"{image_id}.png"))
    image = np.asarray(Image.open(converted / "train" / f"{image_id}_{modality}_cells.png"))
    assert source.shape[2] == 4 and image.shape[2] == 3
    assert np.array_equal(image, source[..., :3])


def test_prompts_name_the_imaging_type_and_the_reader_loads_it(converted: Path) -> None:
    data = json.loads((converted / "train.json").read_text())
    prompts = {a["file_name"][:8]: a["sentences"][0]["sent"] for a in data["annotations"]}
    assert prompts == {FLUO[:8]: "nuclei in fluorescence microscopy",
                       HE[:8]: "nuclei in H&E microscopy"}  # fmt: skip
    ds = BiomedParseDataset(converted, "train")
    assert {ds[i]["modality"] for i in range(len(ds))} == {"fluorescence microscopy",
                                                          "H&E microscopy"}  # fmt: skip


def test_imaging_rule_on_a_gray_bright_image() -> None:
    rng = np.random.default_rng(0)
    gray = np.clip(rng.normal(220, 15, (64, 64)), 0, 255).astype(np.uint8)
    assert imaging_type(np.repeat(gray[..., None], 3, axis=2)) == "brightfield"
    assert imaging_type(np.repeat((gray // 8)[..., None], 3, axis=2)) == "fluorescence"
    tinted = np.stack([gray, gray // 2 + 60, gray], axis=2).astype(np.uint8)
    assert imaging_type(tinted) == "H&E"


def test_split_is_seeded_and_stable_under_file_order() -> None:
    ids = [f"{i:04x}" for i in range(50)]
    split = split_by_name(ids, 0.2, seed=0)
    assert sum(v == "test" for v in split.values()) == 10
    assert split_by_name(ids[::-1], 0.2, seed=0) == split
    assert split_by_name(ids, 0.2, seed=1) != split
    # adding an id moves no other id from test to train or back, except by the count
    bigger = split_by_name([*ids, "ffff"], 0.2, seed=0)
    assert sum(bigger[i] != split[i] for i in ids) <= 1


def test_tiles_and_one_line_errors(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiled"
    assert main(["convert", "dsb2018", str(SRC), str(out), "--tile", "128", "--seed", "3",
                 "--test-fraction", "0.5"]) == 0  # fmt: skip
    assert len(list((out / "train").iterdir())) + len(list((out / "test").iterdir())) == 4 + 6
    printed = capsys.readouterr().out.splitlines()  # format_summary, what the verb prints
    assert printed[:2] == ["imaging types (source images): 1 H&E, 1 fluorescence",
                           f"wrote {out}"]
    assert sorted(line.split(":")[0] for line in printed[2:4]) == ["  test", "  train"]
    assert main(["convert", "dsb2018", str(SRC), str(out)]) == 1  # not empty
    assert main(["convert", "dsb2018", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 1
    other = tmp_path / "other"
    shutil.copytree(SRC / "stage1_train" / FLUO / "masks", other / "masks")
    assert main(["convert", "dsb2018", str(other), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "not a DSB2018 folder" in err[2]
    assert all("Traceback" not in line for line in err)
