"""`boltzformer convert lidc` on the synthetic case of scripts/lidc_fixture.py (tests/samples/lidc):
two readers' rectangles, a hole, an outline matched by z only, a point nodule; the masks are
checked against the rectangles, not against the converter's own drawing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boltzformer.cli import main
from boltzformer.data.converters import convert_lidc, stack_slices

FIXTURE = Path(__file__).parent / "samples" / "lidc"
CASE = "LIDC-IDRI-9001"
SERIES = FIXTURE / CASE / "1.2.826.0.1.3680043.10.1394.7.1" / "1.2.826.0.1.3680043.10.1394.7.2"
TARGET = "lung nodule"


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """The rectangle's pixels, outline included (x = column, y = row)."""
    mask = np.zeros((32, 32), bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = True
    return mask


A, A2, B, HOLE = box(8, 10, 20, 22), box(2, 26, 5, 29), box(12, 10, 24, 22), box(14, 14, 18, 18)


def masks_by_slice(out: Path, split: str = "train") -> dict[int, np.ndarray]:
    data = json.loads((out / f"{split}.json").read_text())
    slice_of = {i["id"]: i["slice"] for i in data["images"]}
    return {slice_of[a["image_id"]]: np.asarray(Image.open(out / f"{split}_mask" / a["mask_file"]))
            > 0 for a in data["annotations"]}  # fmt: skip


@pytest.fixture(scope="module")
def half(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lidc") / "out"
    return out, convert_lidc(FIXTURE, out, empty_every=1)


def test_masks_are_the_readers_outlines_at_half_agreement(half: tuple[Path, dict]) -> None:
    out, summary = half
    masks = masks_by_slice(out)
    # nodule 1 (two readers: a voxel either includes is >= half); the hole lies inside A
    expected = {0: np.zeros((32, 32), bool), 1: A, 2: A | B, 3: A | (B & ~HOLE), 4: B | A2}
    assert sorted(masks) == list(range(5))
    for k, mask in expected.items():
        assert np.array_equal(masks[k], mask), k
    assert summary["nodules"] == 2 and summary["images"] == {"train": 5}
    assert any("< 3 mm" in note for note in summary["notes"])  # the point nodule, left out
    assert any("one case" in note for note in summary["notes"])
    data = json.loads((out / "train.json").read_text())
    absent = {a["image_id"]: a["absent"] for a in data["annotations"]}
    assert [absent[i["id"]] for i in sorted(data["images"], key=lambda i: i["slice"])] == [
        True, False, False, False, False]  # fmt: skip
    assert data["annotations"][0]["sentences"][0]["sent"] == "lung nodule in chest CT"
    assert data["images"][0]["file_name"].endswith("_CT_lung.png")


def test_each_nodule_has_its_own_instance_id(half: tuple[Path, dict]) -> None:
    out, _ = half
    data = json.loads((out / "train.json").read_text())
    ann = next(a for a in data["annotations"]
               if data["images"][a["image_id"]]["slice"] == 4)  # fmt: skip
    ids = np.asarray(Image.open(out / "train_instances" / ann["mask_file"]))
    assert ann["objects"] == 2
    assert set(np.unique(ids[B])) == {ids[B][0]} and set(np.unique(ids[A2])) == {ids[A2][0]}
    assert ids[B][0] != ids[A2][0] and not ids[~(B | A2)].any()


def test_full_agreement_cuts_the_hole_and_drops_single_reader_parts(tmp_path: Path) -> None:
    convert_lidc(FIXTURE, tmp_path / "o", agreement=1.0, empty_every=1)
    masks = masks_by_slice(tmp_path / "o")
    assert np.array_equal(masks[3], A & B & ~HOLE)
    assert np.array_equal(masks[2], A & B)
    assert not masks[1].any()  # only reader 1 drew slice 1 of nodule 1
    assert np.array_equal(masks[4], A2)  # nodule 2 has one reader: all of that reader's


def test_slices_record_their_series_and_stack_back_on_its_grid(half: tuple[Path, dict],
                                                              tmp_path: Path) -> None:  # fmt: skip
    out, _ = half
    data = json.loads((out / "train.json").read_text())
    volume = data["volumes"][CASE]
    assert volume["shape"] == [32, 32, 5] and volume["axis"] == 2
    assert volume["series_uid"] == "1.2.826.0.1.3680043.10.1394.7.2"
    # sorted by position, not by file name: slice k is the k-th SOP UID of the fixture
    assert volume["sop_uids"] == [f"1.2.826.0.1.3680043.10.1394.7.3.{k + 1}" for k in range(5)]
    assert all(i["sop_uid"] == volume["sop_uids"][i["slice"]] for i in data["images"])
    image = stack_slices(out, "train", CASE, TARGET, out_path=tmp_path / "n.nii.gz")
    stacked = np.asarray(image.dataobj)
    masks = masks_by_slice(out)
    assert stacked.shape == (32, 32, 5)
    assert all(np.array_equal(stacked[:, :, k] > 0, masks[k]) for k in range(5))
    # voxel (row r, column c, slice k) -> RAS (11.2 - 0.7 c, 11.2 - 0.7 r, -100 + 2.5 k)
    world = image.affine @ np.array([3.0, 2.0, 4.0, 1.0])
    assert np.allclose(world[:3], [11.2 - 1.4, 11.2 - 2.1, -90.0])


def test_split_is_by_case_and_empty_slices_are_thinned(tmp_path: Path) -> None:
    src = tmp_path / "LIDC"
    for case in (CASE, "LIDC-IDRI-9002"):
        shutil.copytree(FIXTURE / CASE, src / case)
    summary = convert_lidc(src, tmp_path / "o", test_fraction=0.5, empty_every=1)
    assert summary["images"] == {"train": 5, "test": 5} and not summary["notes"][:-1]
    cases = {s: {p.name.rsplit("-", 1)[0] for p in (tmp_path / "o" / s).iterdir()}
             for s in ("train", "test")}  # fmt: skip
    assert sorted(cases.values(), key=sorted) == [{CASE}, {"LIDC-IDRI-9002"}]
    picked = convert_lidc(src, tmp_path / "p", test_cases=["LIDC-IDRI-9002"], agreement=1.0,
                          empty_every=2)  # fmt: skip
    # agreement 1: slices 0 and 1 are empty; every 2nd empty one is kept (the first)
    assert sorted(masks_by_slice(tmp_path / "p", "test")) == [0, 2, 3, 4]
    assert picked["dropped_slices"] == 2
    convert_lidc(src, tmp_path / "m", agreement=1.0, empty_every=1, margin=1)
    assert sorted(masks_by_slice(tmp_path / "m")) == [1, 2, 3, 4]


def test_other_layouts_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    no_dicom = tmp_path / "none"
    no_dicom.mkdir()
    (no_dicom / "notes.txt").write_text("x")
    no_xml = tmp_path / "noxml"
    shutil.copytree(SERIES, no_xml)
    (no_xml / "069.xml").unlink()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(SERIES, elsewhere)
    text = (elsewhere / "069.xml").read_text()
    text = text.replace("1.2.826.0.1.3680043.10.1394.7.3.", "9.9.")
    text = text.replace("<imageZposition>-", "<imageZposition>5")
    (elsewhere / "069.xml").write_text(text)
    for src, words in ((no_dicom, "no DICOM series"), (no_xml, "no LIDC XML"),
                       (elsewhere, "is on a slice")):  # fmt: skip
        assert main(["convert", "lidc", str(src), str(tmp_path / f"o_{src.name}")]) == 1
        err = [line for line in capsys.readouterr().err.strip().splitlines()
               if not line.startswith("series:")]  # the progress bar, before the error
        assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
    assert main(["convert", "lidc", str(FIXTURE), str(tmp_path / "a"), "--agreement", "0"]) == 1
    assert "agreement" in capsys.readouterr().err
    assert main(["convert", "lidc", str(SERIES), str(tmp_path / "ok")]) == 0
    assert "one case (LIDC-IDRI-9001): everything is in train" in capsys.readouterr().out
