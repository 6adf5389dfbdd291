"""`boltzformer predict --input FOLDER` and `Predictor.predict_images`: images batched through
the encoder, each answered as it would be alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import boltzformer
from boltzformer import Predictor, cli
from boltzformer.data.inputs import read_plane

PROMPTS = ["nodule in lung CT", "liver"]


def _model(**overrides) -> boltzformer.BoltzFormer:
    torch.manual_seed(0)
    return boltzformer.build_model("tiny", image_size=128, **overrides).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _model().save_pretrained(tmp_path_factory.mktemp("ckpt"))


def _images() -> dict[str, np.ndarray]:
    """Four images of different sizes and kinds: grey, RGB, RGBA, 16-bit grey."""
    rng = np.random.default_rng(0)
    return {
        "a_grey.png": rng.integers(0, 256, (48, 64), dtype=np.uint8),
        "b_rgb.jpg": rng.integers(0, 256, (70, 50, 3), dtype=np.uint8),
        "c_rgba.png": rng.integers(0, 256, (40, 40, 4), dtype=np.uint8),
        "d_wide.tif": rng.integers(0, 4000, (36, 90), dtype=np.uint16),
    }


@pytest.fixture
def folder(tmp_path, sample_dir) -> Path:
    """The four images, the sample CT DICOM slice, an unreadable PNG and a text file."""
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, array in _images().items():
        Image.fromarray(array).save(scans / name)
    shutil.copy(sample_dir / "dicom" / "CT_lung_nodule.dcm", scans / "e_ct.dcm")
    (scans / "broken.png").write_text("not an image")
    (scans / "notes.txt").write_text("not read")
    return scans


def _predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> int:
    """`predict` of PROMPTS with seed 3; the lung window for a folder or a DICOM file (it
    applies to the folder's DICOM files only)."""
    window = [] if source.suffix in (".png", ".jpg", ".tif") else ["--window", "lung"]
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(source),
            "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], *window, "--seed", "3",
            "--out", str(out), *extra]
    return cli.main(argv)


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_predict_images_equals_one_image_at_a_time() -> None:
    predictor = Predictor(_model(), seed=3)
    images = list(_images().values())
    for batch_size in (1, 3):
        preds = list(predictor.predict_images(iter(images), PROMPTS, batch_size=batch_size,
                                              samples=2))
        assert len(preds) == len(images)
        for image, pred in zip(images, preds):
            predictor.set_image(image)
            alone = predictor.predict(PROMPTS, samples=2)
            assert pred.prob.shape == (2, *image.shape[:2]) and pred.prompts == tuple(PROMPTS)
            np.testing.assert_allclose(pred.prob, alone.prob, atol=1e-5)
            np.testing.assert_allclose(pred.std, alone.std, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size"):  # at the call, not at the first image
        predictor.predict_images(images, PROMPTS, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        predictor.predict_images(images, [" "])


@pytest.mark.parametrize("batch_size", [1, 3])
def test_folder_writes_what_each_image_alone_writes(checkpoint, folder, tmp_path, capsys,
                                                    batch_size):
    out = tmp_path / "out"
    assert _predict(checkpoint, folder, out, "--batch-size", str(batch_size)) == 0
    captured = capsys.readouterr()
    assert "image" in captured.err  # the progress bar over images
    assert "skipped" in captured.out and "broken.png" in captured.out
    assert "notes.txt" in captured.out
    summary = _json(out / "predictions.json")
    readable = ["a_grey.png", "b_rgb.jpg", "c_rgba.png", "d_wide.tif", "e_ct.dcm"]
    assert [entry["file"] for entry in summary["images"]] == readable
    assert [s["file"] for s in summary["skipped"]] == ["broken.png"]
    assert summary["not_read"] == ["notes.txt"] and summary["batch_size"] == batch_size
    for entry in summary["images"]:
        alone = tmp_path / "alone" / entry["file"]
        assert _predict(checkpoint, folder / entry["file"], alone) == 0
        sub = out / entry["folder"]
        assert sorted(p.name for p in sub.iterdir()) == sorted(p.name for p in alone.iterdir())
        ours, theirs = _json(sub / "predictions.json"), _json(alone / "predictions.json")
        assert ours == theirs  # the same input, shape, settings, files and fractions
        assert entry["prompts"] == ours["prompts"] and entry["shape"] == ours["shape"]
        for record in ours["prompts"]:
            mask, prob = record["files"]["mask"], record["files"]["prob"]
            np.testing.assert_array_equal(np.asarray(Image.open(sub / mask)),
                                          np.asarray(Image.open(alone / mask)))
            diff = (np.asarray(Image.open(sub / prob)).astype(int)
                    - np.asarray(Image.open(alone / prob)))
            assert np.abs(diff).max() <= 1  # 8-bit rounding of probabilities ~1e-7 apart


def test_folder_with_the_existence_head_decides_per_image(tmp_path, folder, capsys):
    model = _model(existence_head=True)
    checkpoint = model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    assert _predict(checkpoint, folder, out, "--batch-size", "2") == 0
    summary = _json(out / "predictions.json")
    predictor = Predictor(model, seed=3)
    existence = []
    for entry in summary["images"]:
        path = folder / entry["file"]
        predictor.set_image(read_plane(path, "lung" if path.suffix == ".dcm" else None))
        alone = predictor.predict(PROMPTS)
        for i, record in enumerate(entry["prompts"]):
            assert record["existence"] == pytest.approx(float(alone.exists[i]), abs=1e-5)
            assert record["found"] == bool(alone.found[i])
            existence.append(record["existence"])
    assert len(set(existence)) > 2  # each image has its own answer

    # a head that answers "absent" for everything: every image says so and writes empty masks
    with torch.no_grad():
        last = model.existence.mlp.layers[-1]
        last.weight.zero_()
        last.bias.fill_(-5.0)
    absent = model.save_pretrained(tmp_path / "absent")
    out = tmp_path / "out-absent"
    assert _predict(absent, folder, out) == 0
    said = capsys.readouterr().out
    for entry in _json(out / "predictions.json")["images"]:
        assert f"{entry['file']}: 'liver': not found" in said
        for record in entry["prompts"]:
            assert record["found"] is False
            mask = Image.open(out / entry["folder"] / record["files"]["mask"])
            assert np.asarray(mask).max() == 0


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no images in this folder"),
        ({"notes.txt": "x", "ct.nii.gz": "x"}, "no images in this folder"),
        ({"a.png": "x", "b.dcm": "x"}, "none of its 2 image file(s) could be read"),
    ],
    ids=["empty", "no-images", "none-readable"],
)
def test_a_folder_without_readable_images_is_a_one_line_error(checkpoint, tmp_path, capsys,
                                                              files, message):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, text in files.items():
        (scans / name).write_text(text)
    assert _predict(checkpoint, scans, tmp_path / "out") == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]  # "\r" ends a bar's line
    assert lines[-1].startswith("boltzformer predict: error:") and message in lines[-1]
    assert all("%|" in line for line in lines[:-1])  # before it, at most the progress bar
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
