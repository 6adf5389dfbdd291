"""`predict` on DICOM: a series folder is one volume sorted by position, and every DICOM input
gets a DICOM SEG whose geometry, labels and pixels agree with the NIfTI/PNG outputs (read back
with highdicom). The series is tests/samples/dicom/series (scripts/dicom_series_fixture.py):
four 64 x 64 slices whose file names are shuffled against their positions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

import boltzformer
from boltzformer import PredictOptions, Predictor, cli, predict_files
from boltzformer.data.inputs import read_plane

PROMPTS = ["nodule in lung CT", "left lung in lung CT"]
# the fixture's files from the feet to the head (by ImagePositionPatient, not by name)
BY_POSITION = ["c.dcm", "a.dcm", "d.dcm", "b.dcm"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Full attention: deterministic, so a slice answers the same alone or in the series."""
    torch.manual_seed(0)
    model = boltzformer.build_model("tiny", image_size=64, attention="full")
    return model.save_pretrained(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def series(sample_dir) -> Path:
    return sample_dir / "dicom" / "series"


def _predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> dict:
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(source),
            "--out", str(out), "--window", "lung", *extra]
    for prompt in PROMPTS:
        argv += ["--prompt", prompt]
    assert cli.main(argv) == 0
    return json.loads((out / "predictions.json").read_text())


def _frames(seg: pydicom.Dataset) -> list[tuple[str, int, list[float]]]:
    """Per frame: the source SOPInstanceUID it references, its segment, its position."""
    frames = []
    for group in seg.PerFrameFunctionalGroupsSequence:
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        frames.append((source.ReferencedSOPInstanceUID,
                       int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                       [float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient]))
    return frames


def test_a_series_folder_is_one_volume_and_its_seg_matches_the_nifti(checkpoint, series,
                                                                     tmp_path):
    out = tmp_path / "out"
    # the untrained model's answers peak near 0.643 (nodule) and 0.638 (lung): at 0.64 one
    # segment is painted and one empty, so the SEG leaves the empty frames out
    summary = _predict(checkpoint, series, out, "--threshold", "0.64")
    assert summary["kind"] == "series" and summary["slices"] == BY_POSITION
    assert summary["dicom_seg"] == "segmentation.dcm"
    sources = {name: pydicom.dcmread(series / name) for name in BY_POSITION}
    uids = [sources[name].SOPInstanceUID for name in BY_POSITION]

    # the NIfTI: (rows, columns, slices) in position order, its affine the series' geometry
    names = [p["files"]["mask"] for p in summary["prompts"]]
    masks = np.stack([np.asarray(nib.load(out / n).dataobj) for n in names])  # (P, 64, 64, 4)
    assert masks.shape == (2, 64, 64, 4)
    affine = nib.load(out / names[0]).affine
    for k, name in enumerate(BY_POSITION):
        lps = np.asarray([float(v) for v in sources[name].ImagePositionPatient])
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [-lps[0], -lps[1], lps[2], 1],
                                   atol=1e-4)
    np.testing.assert_allclose(affine @ [1, 0, 0, 1] - affine @ [0, 0, 0, 1],
                               [0, -0.7, 0, 0], atol=1e-6)  # down a column: +y in LPS

    # every slice was answered as that file alone is (the order is the positions')
    predictor = Predictor.from_pretrained(checkpoint)
    prob = np.asarray(nib.load(out / summary["prompts"][0]["files"]["prob"]).dataobj)
    for k, name in enumerate(BY_POSITION):
        predictor.set_image(read_plane(series / name, "lung"))
        alone = predictor.predict(PROMPTS).prob[0]
        np.testing.assert_allclose(prob[:, :, k], alone, atol=1e-4)

    # the SEG: one segment per prompt, frames over the source instances at their positions
    seg = hd.seg.segread(out / "segmentation.dcm")
    assert seg.SegmentationType == "BINARY" and (seg.Rows, seg.Columns) == (64, 64)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == PROMPTS
    referenced = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence
                  for r in s.ReferencedInstanceSequence}
    assert referenced == set(uids)
    assert seg.StudyInstanceUID == sources["a.dcm"].StudyInstanceUID
    frames = _frames(seg)
    # empty frames are left out: one frame per (slice, prompt) with a mask there
    painted = {(uids[k], p + 1) for p in range(2) for k in range(4) if masks[p, :, :, k].any()}
    assert 0 < len(painted) < 8 and int(seg.NumberOfFrames) == len(painted)
    assert {(uid, segment) for uid, segment, _ in frames} == painted
    by_uid = {sources[n].SOPInstanceUID: sources[n] for n in BY_POSITION}
    for uid, _, position in frames:
        np.testing.assert_allclose(position, [float(v) for v in by_uid[uid].ImagePositionPatient])
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2],
                                               combine_segments=False)  # (4, 64, 64, 2)
    np.testing.assert_array_equal(pixels.astype(bool), masks.transpose(3, 1, 2, 0) > 0)


def test_an_empty_answer_keeps_its_segment(checkpoint, series, tmp_path):
    """--threshold 1: nothing is painted, yet the SEG lists both prompts (and all frames,
    empty: a SEG cannot have none)."""
    _predict(checkpoint, series, tmp_path / "out", "--threshold", "1")
    seg = hd.seg.segread(tmp_path / "out" / "segmentation.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == PROMPTS
    assert int(seg.NumberOfFrames) == 8
    assert not seg.get_pixels_by_source_instance(
        [pydicom.dcmread(series / n).SOPInstanceUID for n in BY_POSITION],
        combine_segments=False).any()


def test_a_dicom_slice_gets_a_single_frame_seg_equal_to_its_pngs(checkpoint, sample_dir,
                                                                 tmp_path):
    source = sample_dir / "dicom" / "CT_lung_nodule.dcm"
    summary = _predict(checkpoint, source, tmp_path / "out")
    assert summary["kind"] == "image" and summary["dicom_seg"] == "segmentation.dcm"
    uid = pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID
    seg = hd.seg.segread(tmp_path / "out" / "segmentation.dcm")
    assert [s.SegmentLabel for s in seg.SegmentSequence] == PROMPTS
    assert (seg.Rows, seg.Columns) == (512, 512)
    assert {uid_ for uid_, _, _ in _frames(seg)} == {uid}
    pixels = seg.get_pixels_by_source_instance([uid], combine_segments=False)[0]
    for p, record in enumerate(summary["prompts"]):
        png = np.asarray(Image.open(tmp_path / "out" / record["files"]["mask"])) > 0
        np.testing.assert_array_equal(pixels[..., p].astype(bool), png)


def test_no_dicom_seg_and_the_python_call(checkpoint, series, tmp_path, capsys):
    """--no-dicom-seg writes none; `predict_files` is the command's work, from Python."""
    _predict(checkpoint, series, tmp_path / "cli", "--no-dicom-seg")
    assert not (tmp_path / "cli" / "segmentation.dcm").exists()
    summary = predict_files(Predictor.from_pretrained(checkpoint), series, PROMPTS,
                            tmp_path / "py", PredictOptions(window="lung"))
    assert summary["dicom_seg"] == "segmentation.dcm" and summary["slices"] == BY_POSITION
    for record in summary["prompts"]:
        name = record["files"]["mask"]
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "py" / name).dataobj),
                                      np.asarray(nib.load(tmp_path / "cli" / name).dataobj))


def test_a_folder_with_an_image_among_the_dicom_stays_a_folder_of_images(checkpoint, series,
                                                                       tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(series, folder)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "photo.png")
    summary = _predict(checkpoint, folder, tmp_path / "out")
    assert summary["kind"] == "folder" and len(summary["images"]) == 5
    for name in BY_POSITION:  # each DICOM file on its own, with its own one-frame SEG
        one = json.loads((tmp_path / "out" / Path(name).stem / "predictions.json").read_text())
        assert one["dicom_seg"] == "segmentation.dcm"
    assert "dicom_seg" not in json.loads(
        (tmp_path / "out" / "photo" / "predictions.json").read_text())


@pytest.mark.parametrize("fault", ["same-position", "other-orientation", "other-size"])
def test_a_broken_series_is_a_one_line_error(checkpoint, series, tmp_path, capsys, fault):
    folder = tmp_path / "series"
    shutil.copytree(series, folder)
    ds = pydicom.dcmread(folder / "a.dcm")
    ds.SOPInstanceUID = "1.2.3.4"
    if fault == "same-position":
        ds.save_as(folder / "e.dcm")  # a second slice where a.dcm is
        message = "two slices at one position"
    elif fault == "other-orientation":
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(folder / "a.dcm")
        message = "ImageOrientationPatient differs"
    else:
        ds.Rows = ds.Columns = 32
        ds.PixelData = np.zeros((32, 32), np.int16).tobytes()
        ds.save_as(folder / "a.dcm")
        message = "a series volume has one slice size"
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(folder),
            "--prompt", "nodule", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
