"""`boltzformer convert nifti`: a crop of TotalSegmentator's example CT (tests/fixtures/totalseg,
Apache-2.0) and a synthetic Decathlon folder written here; slices are checked against the
volumes, and `stack_slices` must give the source masks back voxel for voxel."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from boltzformer.cli import main
from boltzformer.data import BiomedParseDataset
from boltzformer.data.converters import convert_nifti, stack_slices

FIXTURE = Path(__file__).parent / "fixtures" / "totalseg"
STRUCTURES = {"liver": "liver", "spleen": "spleen", "left kidney": "kidney_left",
              "aorta": "aorta", "left adrenal gland": "adrenal_gland_left",
              "brain": "brain"}  # fmt: skip


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def radiological(plane_xy: np.ndarray) -> np.ndarray:
    """An axial RAS slice (x, y) as shown: rows anterior -> posterior, columns right -> left."""
    return plane_xy.T[::-1, ::-1]


@pytest.fixture(scope="module")
def totalseg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ts") / "out"
    assert main(["convert", "nifti", str(FIXTURE), str(out)]) == 0
    return out


def test_slices_show_the_volume_and_record_their_source(totalseg: Path) -> None:
    image = nib.load(FIXTURE / "ct_crop.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    hu = np.asarray(image.dataobj, np.float32)
    data = json.loads((totalseg / "train.json").read_text())
    assert len(data["images"]) == hu.shape[2] == 8
    volume = data["volumes"]["ct_crop"]
    assert volume["source"] == "ct_crop.nii.gz" and volume["axis"] == 2
    assert volume["shape"] == list(hu.shape)
    assert np.allclose(volume["affine"], image.affine)
    entry = next(i for i in data["images"] if i["slice"] == 5)
    assert entry["volume"] == "ct_crop" and entry["file_name"] == "ct_crop-0005_CT_abdomen.png"
    # abdomen window (400, 40): HU -160 -> 0, HU 240 -> 255
    expected = np.clip((radiological(hu[:, :, 5]) + 160.0) * 255.0 / 400.0, 0, 255)
    assert np.abs(png(totalseg / "train" / entry["file_name"]) - expected).max() <= 0.51
    liver = np.asarray(nib.load(FIXTURE / "masks" / "liver.nii.gz").dataobj) > 0
    mask = png(totalseg / "train_mask" / "ct_crop-0005_CT_abdomen_liver.png")
    assert np.array_equal(mask > 0, radiological(liver[:, :, 5]))


def test_absent_structures_are_empty_masks_flagged_absent(totalseg: Path) -> None:
    data = json.loads((totalseg / "train.json").read_text())
    slice_of = {i["id"]: i["slice"] for i in data["images"]}
    absent = {(a["target"], slice_of[a["image_id"]]) for a in data["annotations"] if a["absent"]}
    # the left adrenal gland starts at slice 3 of the crop; the brain is not in it at all
    expected = {("left adrenal gland", k) for k in range(3)} | {("brain", k) for k in range(8)}
    assert absent == expected
    assert len(data["annotations"]) == 8 * len(STRUCTURES)
    mask = png(totalseg / "train_mask" / "ct_crop-0001_CT_abdomen_left+adrenal+gland.png")
    assert mask.shape == (80, 100) and not mask.any()
    ds = BiomedParseDataset(totalseg, "train")
    assert ds[0]["prompt"].endswith("in abdomen CT")


def test_stack_slices_gives_back_every_structure(totalseg: Path, tmp_path: Path) -> None:
    source = nib.load(FIXTURE / "ct_crop.nii.gz")
    for target, stem in STRUCTURES.items():
        truth = np.asarray(nib.load(FIXTURE / "masks" / f"{stem}.nii.gz").dataobj) > 0
        stacked = stack_slices(totalseg, "train", "ct_crop", target, out_path=tmp_path / "s.nii.gz")
        again = nib.load(tmp_path / "s.nii.gz")
        assert np.array_equal(np.asarray(again.dataobj) > 0, truth), target
        assert np.allclose(again.affine, source.affine)
        assert np.array_equal(np.asarray(stacked.dataobj) > 0, truth)


def test_orientation_is_the_same_whatever_the_voxel_order(totalseg: Path, tmp_path: Path) -> None:
    """The same volume stored as (y, x, z) with x and y reversed (an LPS-like file) gives the
    same slice images and masks, and stacks back onto its own grid."""
    src = tmp_path / "lps"
    (src / "masks").mkdir(parents=True)
    ornt = np.array([[1, -1], [0, -1], [2, 1]])  # new axis 0 <- old y reversed, 1 <- old x reversed

    def reorient(path: Path, target: Path) -> None:
        image = nib.load(path)
        data = nib.orientations.apply_orientation(np.asarray(image.dataobj), ornt)
        affine = image.affine @ nib.orientations.inv_ornt_aff(ornt, image.shape)
        nib.save(nib.Nifti1Image(data, affine), target)

    reorient(FIXTURE / "ct_crop.nii.gz", src / "ct_crop.nii.gz")
    for stem in STRUCTURES.values():
        reorient(FIXTURE / "masks" / f"{stem}.nii.gz", src / "masks" / f"{stem}.nii.gz")
    assert nib.aff2axcodes(nib.load(src / "ct_crop.nii.gz").affine) == ("P", "L", "S")
    out = tmp_path / "out"
    convert_nifti(src, out)
    for name in ("ct_crop-0004_CT_abdomen.png",):
        assert np.array_equal(png(out / "train" / name), png(totalseg / "train" / name))
    for name in ("ct_crop-0004_CT_abdomen_spleen.png", "ct_crop-0006_CT_abdomen_aorta.png"):
        assert np.array_equal(png(out / "train_mask" / name), png(totalseg / "train_mask" / name))
    truth = np.asarray(nib.load(src / "masks" / "spleen.nii.gz").dataobj) > 0
    stacked = stack_slices(out, "train", "ct_crop", "spleen")
    assert np.array_equal(np.asarray(stacked.dataobj) > 0, truth)
    assert np.allclose(stacked.affine, nib.load(src / "ct_crop.nii.gz").affine)


def test_options_only_present_drop_missing_and_axis(tmp_path: Path) -> None:
    out = tmp_path / "drop"
    summary = convert_nifti(FIXTURE, out, drop_missing=True, absent="skip")
    targets = {p.name.split("_CT_abdomen_")[1] for p in (out / "train_mask").iterdir()}
    assert "brain.png" not in targets and "liver.png" in targets
    assert summary["absent"]["train"] == 0
    coronal = convert_nifti(FIXTURE, tmp_path / "coronal", axis="coronal", only_present=True)
    data = json.loads((tmp_path / "coronal" / "train.json").read_text())
    assert data["volumes"]["ct_crop"]["axis"] == 1
    liver = np.asarray(nib.load(FIXTURE / "masks" / "liver.nii.gz").dataobj) > 0
    present = [k for k in range(liver.shape[1]) if liver[:, k, :].any()]  # liver is the largest
    assert coronal["slices"] + coronal["dropped_slices"] == 80
    assert coronal["slices"] >= len(present)
    name = f"ct_crop-{present[0]:04d}_CT_abdomen_liver.png"
    # coronal: rows superior -> inferior, columns patient right -> left
    assert np.array_equal(png(tmp_path / "coronal" / "train_mask" / name) > 0,
                          liver[:, present[0], :].T[::-1, ::-1])  # fmt: skip


def write_decathlon(root: Path) -> dict[str, np.ndarray]:
    """A tiny Decathlon task: two CT cases, labels 1 liver and 2 tumour, and macOS junk."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    labels = {}
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for case in ("liver_0", "liver_1"):
        hu = rng.integers(-1000, 1000, (24, 20, 5)).astype(np.int16)
        label = np.zeros(hu.shape, np.uint8)
        label[4:14, 3:12, 1:4] = 1
        label[6:8, 5:7, 2] = 2  # a tumour on one slice only
        nib.save(nib.Nifti1Image(hu, affine), root / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"{case}.nii.gz")
        labels[case] = label
    (root / "labelsTr" / "._liver_0.nii.gz").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Liver", "modality": {"0": "CT"},
        "labels": {"0": "background", "1": "liver", "2": "tumour"}}))  # fmt: skip
    return labels


def test_decathlon_label_volumes(tmp_path: Path) -> None:
    labels = write_decathlon(tmp_path / "Task03_Liver")
    out = tmp_path / "out"
    assert main(["convert", "nifti", str(tmp_path / "Task03_Liver"), str(out),
                 "--test-fraction", "0.5", "--window", "400", "40"]) == 0  # fmt: skip
    splits = {s: json.loads((out / f"{s}.json").read_text()) for s in ("train", "test")}
    cases = {s: list(d["volumes"]) for s, d in splits.items()}
    assert sorted(cases["train"] + cases["test"]) == ["liver_0", "liver_1"]
    for split, data in splits.items():
        case = cases[split][0]
        assert len(data["images"]) == 5
        tumour = [a for a in data["annotations"] if a["target"] == "tumour"]
        assert sum(not a["absent"] for a in tumour) == 1
        for target, value in (("liver", 1), ("tumour", 2)):
            stacked = stack_slices(out, split, case, target)
            assert np.array_equal(np.asarray(stacked.dataobj) > 0, labels[case] == value)
            assert np.allclose(stacked.affine, np.diag([0.8, 0.8, 2.5, 1.0]))
    sentences = splits["train"]["annotations"][0]["sentences"]
    assert sentences[0]["sent"] in ("liver in abdomen CT", "tumour in abdomen CT")


def test_not_a_nifti_layout_and_bad_window_are_one_line_errors(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["convert", "nifti", str(tmp_path / "empty"), str(tmp_path / "o")]) == 1
    src = tmp_path / "ts"
    shutil.copytree(FIXTURE, src)
    assert main(["convert", "nifti", str(src), str(tmp_path / "o2"), "--window", "soft"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not a NIfTI layout" in err[0] and "unknown window" in err[1]
    assert all("Traceback" not in line for line in err)


def test_totalsegmentator_case_folders_split_by_case(tmp_path: Path) -> None:
    src = tmp_path / "Totalsegmentator_dataset"
    for case in ("s0001", "s0002"):
        (src / case).mkdir(parents=True)
        shutil.copyfile(FIXTURE / "ct_crop.nii.gz", src / case / "ct.nii.gz")
        shutil.copytree(FIXTURE / "masks", src / case / "segmentations")
    summary = convert_nifti(src, tmp_path / "out", test_fraction=0.5)
    assert summary["images"] == {"train": 8, "test": 8}
    cases = {s: {p.name.split("-")[0] for p in (tmp_path / "out" / s).iterdir()}
             for s in ("train", "test")}  # fmt: skip
    assert sorted(cases.values(), key=sorted) == [{"s0001"}, {"s0002"}]


def test_multichannel_mri_uses_the_channel_and_percentiles(tmp_path: Path) -> None:
    src = tmp_path / "Task01_BrainTumour"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    rng = np.random.default_rng(1)
    values = rng.normal(500, 100, (16, 12, 3, 2)).astype(np.float32)
    label = np.zeros((16, 12, 3), np.uint8)
    label[2:6, 3:9, 1] = 1
    nib.save(nib.Nifti1Image(values, np.eye(4)), src / "imagesTr" / "brats_1.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), src / "labelsTr" / "brats_1.nii.gz")
    (src / "dataset.json").write_text(json.dumps({
        "name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w"},
        "labels": {"0": "background", "1": "edema"}}))  # fmt: skip
    out = tmp_path / "out"
    assert main(["convert", "nifti", str(src), str(out), "--channel", "1", "--site", "brain"]) == 0
    channel = values[..., 1]
    low, high = np.percentile(channel, [0.5, 99.5])
    expected = np.clip((channel[:, :, 1] - low) * 255.0 / (high - low), 0, 255).T[::-1, ::-1]
    image = png(out / "train" / "brats_1-0001_MRI_brain.png")
    assert np.abs(image - expected).max() <= 0.51
    data = json.loads((out / "train.json").read_text())
    assert data["annotations"][0]["sentences"][0]["sent"] == "edema in brain MRI"
