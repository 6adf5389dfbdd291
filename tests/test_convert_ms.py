"""`boltzformer convert nifti` on the MS-lesion layout: the two synthetic patients of
scripts/ms_fixture.py (tests/samples/ms_lesions), checked against the fixture's own boxes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from boltzformer.cli import main
from boltzformer.data.converters import convert_nifti, stack_slices

FIXTURE = Path(__file__).parent / "samples" / "ms_lesions"
TARGET = "multiple sclerosis lesion"
MASK = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"


def volume(patient: str, prefix: str) -> np.ndarray:
    path = next((FIXTURE / patient).glob(f"{prefix}_*.nii.gz"))
    return np.asarray(nib.load(path).dataobj)


def shown(plane_xy: np.ndarray) -> np.ndarray:
    """An axial slice of the fixture (voxel axes L, A) as written: rows anterior -> posterior,
    columns the patient's right -> left."""
    return np.swapaxes(plane_xy, 0, 1)[::-1]


def over_brain(values: np.ndarray) -> np.ndarray:
    """0-255 through the 0.5-99.5 percentiles of the non-zero voxels, 0 outside them."""
    low, high = np.percentile(values[values != 0], [0.5, 99.5])
    return np.where(values != 0, np.clip((values - low) * 255.0 / (high - low), 0, 255), 0)


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def rgb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ms") / "rgb"
    assert main(["convert", "nifti", str(FIXTURE), str(out), "--sequence", "FLAIR,T1,T2",
                 "--test-cases", "patient02"]) == 0  # fmt: skip
    return out


def test_rgb_channels_are_the_sequences_each_over_the_brain(rgb: Path) -> None:
    image = png(rgb / "train" / "patient01-0005_MRI-FLAIR-T1-T2_brain.png")
    assert image.shape == (28, 24, 3)
    for c, name in enumerate(("FLAIR", "T1", "T2")):
        expected = shown(over_brain(volume("patient01", name))[:, :, 5])
        assert np.abs(image[..., c] - expected).max() <= 0.51, name
    data = json.loads((rgb / "train.json").read_text())
    assert data["annotations"][0]["sentences"][0]["sent"] == f"{TARGET} in brain MRI-FLAIR-T1-T2"


def test_masks_instances_absent_and_blank_slices(rgb: Path) -> None:
    truth = volume("patient01", "GOLD_STANDARD") > 0
    data = json.loads((rgb / "train.json").read_text())
    by_slice = {i["slice"]: i for i in data["images"]}
    assert sorted(by_slice) == list(range(1, 9))  # slices 0 and 9 are blank: left out
    for ann in data["annotations"]:
        k = data["images"][ann["image_id"]]["slice"]
        mask = png(rgb / "train_mask" / ann["mask_file"]) > 0
        assert np.array_equal(mask, shown(truth[:, :, k]))
        assert ann["absent"] == (k not in (3, 5))
    ann = next(a for a in data["annotations"] if data["images"][a["image_id"]]["slice"] == 5)
    ids = png(rgb / "train_instances" / ann["mask_file"])
    assert ann["objects"] == 2 and sorted(np.unique(ids)) == [0, 1, 2]


def test_split_by_patient_and_stacking_back(rgb: Path, tmp_path: Path) -> None:
    for split, patient in (("train", "patient01"), ("test", "patient02")):
        assert {p.name.split("-")[0] for p in (rgb / split).iterdir()} == {patient}
        image = stack_slices(rgb, split, patient, TARGET, out_path=tmp_path / "s.nii.gz")
        source = nib.load(next((FIXTURE / patient).glob("GOLD_STANDARD_*")))
        assert np.array_equal(np.asarray(image.dataobj) > 0, np.asarray(source.dataobj) > 0)
        assert np.allclose(image.affine, source.affine)
    volume_meta = json.loads((rgb / "test.json").read_text())["volumes"]["patient02"]
    assert volume_meta["sequences"][0].startswith("FLAIR_") and len(volume_meta["sequences"]) == 3


def test_one_sequence_is_grey_and_empty_slices_thin(tmp_path: Path) -> None:
    summary = convert_nifti(FIXTURE, tmp_path / "o", test_cases=["patient01"], empty_every=3)
    image = png(tmp_path / "o" / "test" / "patient01-0003_MRI-FLAIR_brain.png")
    assert image.ndim == 2
    assert np.abs(image - shown(over_brain(volume("patient01", "FLAIR"))[:, :, 3])).max() <= 0.51
    # patient01: lesion slices 3, 5; empty 1, 2, 4, 6, 7, 8 -> every 3rd: 1, 6
    kept = sorted(int(p.name[10:14]) for p in (tmp_path / "o" / "test").iterdir())
    assert kept == [1, 3, 5, 6]
    assert summary["images"] == {"test": 4, "train": 4}  # patient02: 4, 5 and 1, 6


def test_layout_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    no_mask = tmp_path / "no_mask"
    shutil.copytree(FIXTURE / "patient01", no_mask / "patient01")
    (no_mask / "patient01" / MASK).unlink()
    shapes = tmp_path / "shapes"
    shutil.copytree(FIXTURE / "patient01", shapes / "patient01")
    t1 = next((shapes / "patient01").glob("T1_*"))
    nib.save(nib.Nifti1Image(np.ones((24, 28, 9), np.float32), np.eye(4)), t1)
    cases = ((no_mask, [], "GOLD_STANDARD"), (shapes, ["--sequence", "FLAIR,T1,T2"], "differs"),
             (FIXTURE, ["--sequence", "FLAIR,T1"], "three different"),
             (FIXTURE, ["--sequence", "T1POST"], "no T1POST"),
             (FIXTURE, ["--test-cases", "patient07"], "no such case"))  # fmt: skip
    for n, (src, extra, words) in enumerate(cases):
        assert main(["convert", "nifti", str(src), str(tmp_path / f"o{n}"), *extra]) == 1
        err = [line for line in capsys.readouterr().err.strip().splitlines()
               if not line.startswith("volumes:")]  # the progress bar, before the error
        assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
