"""`boltzformer predict` and `boltzformer visualize` on real images, DICOM and NIfTI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

import boltzformer
from boltzformer import Predictor, cli
from boltzformer.inference import visualize

DEMO_IMAGES = [
    "01_CT_lung.png", "06_CT_abdomen.png", "08_MRI_heart.png", "15_X-Ray_chest.png",
    "19_pathology_liver.png",
]


def _save(tmp_path_factory, name: str, **overrides) -> Path:
    torch.manual_seed(0)
    model = boltzformer.build_model("tiny", image_size=128, **overrides)
    return model.save_pretrained(tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _save(tmp_path_factory, "ckpt")


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory) -> Path:
    """Full attention: deterministic, so a volume's slices can be checked one by one."""
    return _save(tmp_path_factory, "ckpt-full", attention="full")


@pytest.fixture
def demo(sample_dir) -> Path:
    return sample_dir / "biomedparse-demo"


def _results(out: Path) -> dict:
    return json.loads((out / "predictions.json").read_text())


@pytest.mark.parametrize("name", DEMO_IMAGES)
def test_predict_on_demo_images(checkpoint, demo, tmp_path, name):
    image = demo / "demo" / name
    prompts = ["nodule in lung CT", "Left kidney in abdomen CT!"]
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", prompts[0], "--prompt", prompts[1], "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    size = Image.open(image).size
    results = _results(tmp_path)
    assert [r["prompt"] for r in results["prompts"]] == prompts
    for record, stem in zip(results["prompts"], ["nodule-in-lung-ct", "left-kidney-in-abdomen-ct"]):
        mask = Image.open(tmp_path / f"{stem}_mask.png")
        assert record["files"]["mask"] == f"{stem}_mask.png"
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
        prob = np.asarray(Image.open(tmp_path / f"{stem}_prob.png"))
        # the mask is the thresholded probability
        np.testing.assert_array_equal(np.asarray(mask) > 0, prob >= 128)
    assert Image.open(tmp_path / "overlay.png").size[0] > 300
    assert not list(tmp_path.glob("*_std.png"))  # one draw: no uncertainty files


def test_predict_dicom_applies_the_window(checkpoint, sample_dir, tmp_path):
    dcm = sample_dir / "dicom" / "CT_lung_nodule.dcm"
    ds = pydicom.dcmread(dcm)
    probs = {}
    for window in ("lung", "bone"):
        out = tmp_path / window
        argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(dcm),
                "--window", window, "--prompt", "nodule in lung CT", "--out", str(out)]
        assert cli.main(argv) == 0
        mask = Image.open(out / "nodule-in-lung-ct_mask.png")
        assert mask.size == (ds.Columns, ds.Rows)
        probs[window] = np.asarray(Image.open(out / "nodule-in-lung-ct_prob.png"))
        assert _results(out)["window"] == window
    # the window changes what the model sees, hence its answer
    assert not np.array_equal(probs["lung"], probs["bone"])


def _volume(path: Path) -> nib.Nifti1Image:
    """A (40, 6, 36) int16 volume (axis 1 = slices) with an oblique affine and a header."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (40, 6, 36)).astype(np.int16)
    affine = np.array([[0.8, 0.1, 0, -50.0], [0, 2.5, 0, 20.0], [0, 0.05, 0.8, 7.0], [0, 0, 0, 1]])
    image = nib.Nifti1Image(data, affine)
    image.header["descrip"] = b"made in test_predict_cli"
    image.header.set_xyzt_units("mm", "sec")
    image.to_filename(path)
    return image


def test_predict_nifti_keeps_affine_header_and_shape(checkpoint, tmp_path, capsys):
    src = _volume(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(tmp_path / "ct.nii.gz"),
            "--axis", "1", "--prompt", "liver", "--samples", "2", "--batch-size", "4",
            "--out", str(out)]
    assert cli.main(argv) == 0
    assert "slice" in capsys.readouterr().err  # the progress bar over slices
    mask = nib.load(out / "liver_mask.nii.gz")
    assert mask.shape == src.shape
    np.testing.assert_allclose(mask.affine, src.affine)
    assert mask.header["descrip"].item() == b"made in test_predict_cli"
    assert mask.header.get_xyzt_units() == ("mm", "sec")
    assert np.asarray(mask.dataobj).dtype == np.uint8
    prob = nib.load(out / "liver_prob.nii.gz")
    std = nib.load(out / "liver_std.nii.gz")
    for image in (prob, std):
        assert image.shape == src.shape
        np.testing.assert_allclose(image.affine, src.affine)
    np.testing.assert_array_equal(np.asarray(mask.dataobj) > 0, prob.get_fdata() >= 0.5)
    assert std.get_fdata().max() > 0
    assert (out / "liver_uncertainty.png").is_file() and (out / "overlay.png").is_file()
    assert _results(out)["shape"] == list(src.shape)


def test_predict_nifti_slices_land_where_they_came_from(full_checkpoint, tmp_path):
    src = _volume(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    # window 255,127.5 maps 0..255 to itself: the model sees the voxel values as they are
    argv = ["predict", "--checkpoint", str(full_checkpoint), "--input",
            str(tmp_path / "ct.nii.gz"), "--axis", "1", "--window", "255,127.5",
            "--prompt", "liver", "--out", str(out)]
    assert cli.main(argv) == 0
    prob = nib.load(out / "liver_prob.nii.gz").get_fdata()
    predictor = Predictor.from_pretrained(full_checkpoint)
    volume = np.asarray(src.dataobj).astype(np.uint8)
    for k in (0, 5):
        predictor.set_image(volume[:, k, :])
        np.testing.assert_allclose(prob[:, k, :], predictor.predict(["liver"]).prob[0],
                                   atol=1e-5)


def test_visualize_draws_one_panel_per_layer(checkpoint, demo, tmp_path, monkeypatch):
    figures = []
    draw = visualize.viz.sampling_figure
    monkeypatch.setattr(visualize.viz, "sampling_figure",
                        lambda *a, **k: figures.append(draw(*a, **k)) or figures[-1])
    image = demo / "demo" / "01_CT_lung.png"
    out = tmp_path / "figs" / "sampling.png"
    argv = ["visualize", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule in lung CT", "--mask",
            str(demo / "demo_mask" / "01_CT_lung_nodule.png"), "--query", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    assert Image.open(out).size[0] > 600
    (fig,) = figures
    layers = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
    assert len(layers) == boltzformer.BoltzFormer.from_pretrained(checkpoint).config.num_layers
    # each layer panel dims exactly the tokens query 2 did not attend to
    predictor = Predictor.from_pretrained(checkpoint)
    predictor.set_image(np.asarray(Image.open(image).convert("RGB")))
    trace = predictor.sampling("nodule in lung CT")
    for ax, keep in zip(layers, trace.keep_masks):
        shade = np.asarray(ax.images[-1].get_array())[..., 3]
        np.testing.assert_array_equal(shade > 0, ~keep[2])
    # the ground truth is outlined (red contour) in every layer panel
    assert all(ax.collections for ax in layers)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--checkpoint": "no-such-folder"}, "no-such-folder: no such folder"),
        ({"--input": "unreadable.png"}, "not a readable image"),
        ({"--input": "missing.png"}, "file not found"),
        ({"--prompt": "  "}, "--prompt"),
        ({"--axis": "3"}, "axis 3 does not exist"),
        ({"--window": "lungs"}, "unknown window 'lungs'"),
        ({"--samples": "0"}, "--samples"),
    ],
    ids=["missing-checkpoint", "unreadable-image", "missing-image", "empty-prompt",
         "bad-axis", "bad-window", "no-samples"],
)
def test_bad_input_fails_with_a_clear_message(checkpoint, tmp_path, capsys, change, message):
    (tmp_path / "unreadable.png").write_text("not an image")
    _volume(tmp_path / "ct.nii.gz")
    args = {"--checkpoint": str(checkpoint), "--input": "ct.nii.gz", "--prompt": "liver",
            "--out": str(tmp_path / "out")} | change
    for key in ("--checkpoint", "--input"):
        args[key] = str(tmp_path / args[key])
    argv = ["predict"] + [x for pair in args.items() for x in pair]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("boltzformer predict: error:") and message in err
    assert not (tmp_path / "out").exists()


def test_visualize_bad_input(checkpoint, demo, tmp_path, capsys):
    image = demo / "demo" / "01_CT_lung.png"
    base = ["visualize", "--checkpoint", str(checkpoint), "--input", str(image),
            "--out", str(tmp_path / "f.png")]
    assert cli.main([*base, "--prompt", ""]) == 1
    assert cli.main([*base, "--prompt", "liver", "--query", "99"]) == 1
    assert cli.main([*base, "--prompt", "liver", "--mask", str(tmp_path / "none.png")]) == 1
    err = capsys.readouterr().err
    assert "--prompt is empty" in err and "--query 99" in err and "file not found" in err
    assert not (tmp_path / "f.png").exists()


def test_predict_with_sliding_windows(checkpoint, demo, tmp_path):
    image = tmp_path / "crop.png"  # 200 x 150: 5 x 3 windows of 64 px
    Image.open(demo / "demo" / DEMO_IMAGES[0]).crop((400, 300, 600, 450)).save(image)
    argv = ["predict", "--checkpoint", str(checkpoint), "--input", str(image),
            "--prompt", "nodule in lung CT", "--out", str(tmp_path / "out"), "--window-size", "64",
            "--window-overlap", "0.25"]
    assert cli.main(argv) == 0
    assert _results(tmp_path / "out")["window_size"] == 64
    mask = Image.open(tmp_path / "out" / "nodule-in-lung-ct_mask.png")
    assert mask.size == Image.open(image).size
    predictor = Predictor.from_pretrained(checkpoint, window_size=64, window_overlap=0.25,
                                          progress=False)
    predictor.set_image(np.asarray(Image.open(image).convert("RGB")))
    want = predictor.predict(["nodule in lung CT"]).prob[0]  # the same windows, same seed
    np.testing.assert_array_equal(np.asarray(mask) > 0, want >= 0.5)


def test_bad_window_options_are_one_line_errors(checkpoint, demo, tmp_path, capsys):
    base = ["predict", "--checkpoint", str(checkpoint), "--input",
            str(demo / "demo" / DEMO_IMAGES[0]), "--prompt", "liver", "--out", str(tmp_path)]
    assert cli.main([*base, "--window-size", "8"]) == 1
    assert "--window-size must be 0" in capsys.readouterr().err
    assert cli.main([*base, "--window-size", "64", "--window-overlap", "1"]) == 1
    assert "--window-overlap must be in [0, 1)" in capsys.readouterr().err
