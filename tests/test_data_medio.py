"""Medical image I/O: DICOM HU and windows on a real CT slice, NIfTI round trip, images."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from boltzformer.data import (
    WINDOWS,
    DataError,
    apply_window,
    load_any,
    nifti_slices,
    read_dicom,
    read_dicom_hu,
    read_image,
    read_nifti,
    stack_slices,
    write_nifti_mask,
)


@pytest.fixture(scope="module")
def dicom_path(sample_dir):
    return sample_dir / "dicom" / "CT_lung_nodule.dcm"


def test_dicom_rescale_to_hounsfield_units(dicom_path):
    ds = pydicom.dcmread(dicom_path)
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    hu = read_dicom_hu(dicom_path)
    assert hu.shape == (512, 512) and hu.dtype == np.float32
    np.testing.assert_array_equal(hu, ds.pixel_array.astype(np.float32) - 1024)
    assert hu.min() == -1024  # air outside the scan circle
    lung = (hu > -950) & (hu < -600)  # aerated lung is a large part of this chest slice
    soft = (hu > -100) & (hu < 100)
    assert lung.mean() > 0.1 and soft.mean() > 0.1


def test_dicom_windows(dicom_path):
    hu = read_dicom_hu(dicom_path)
    lung = read_dicom(dicom_path, "lung")
    width, level = WINDOWS["lung"]
    expected = np.clip((hu - (level - width / 2)) / width * 255, 0, 255)
    np.testing.assert_allclose(lung, expected, atol=1e-3)
    abdomen = read_dicom(dicom_path, "abdomen")
    np.testing.assert_array_equal(abdomen, read_dicom(dicom_path, "400,40"))
    np.testing.assert_array_equal(abdomen, read_dicom(dicom_path, (400, 40)))
    assert (abdomen[hu < -160] == 0).all() and (abdomen[hu > 240] == 255).all()
    bone = read_dicom(dicom_path, "bone")
    assert (bone[hu < 400 - 900] == 0).all() and bone.max() > 200
    full = read_dicom(dicom_path)  # no window: min/max
    assert full.min() == 0 and full.max() == 255
    with pytest.raises(ValueError, match="unknown window 'sharp'"):
        read_dicom(dicom_path, "sharp")
    # Lung parenchyma is mid-gray in the lung window but black in the abdomen window.
    parenchyma = (hu > -900) & (hu < -700)
    assert 40 < lung[parenchyma].mean() < 150 and abdomen[parenchyma].max() == 0


def test_load_any_dispatches(dicom_path, tmp_path):
    slices = load_any(dicom_path, window="lung")
    assert slices.shape == (1, 512, 512, 3) and slices.dtype == np.float32
    np.testing.assert_allclose(slices[0, :, :, 1], read_dicom(dicom_path, "lung"))
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    np.testing.assert_array_equal(load_any(tmp_path / "photo.png")[0], rgb)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: unknown file type"):
        load_any(tmp_path / "notes.txt")


def test_not_a_dicom_file(tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match=r"fake\.dcm: not a readable DICOM file"):
        read_dicom(tmp_path / "fake.dcm")


def test_image_formats(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for name in ("a.png", "a.tif", "a.bmp"):
        Image.fromarray(rgb).save(tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name), rgb)
    smooth = np.repeat(np.linspace(0, 255, 40, dtype=np.uint8)[None, :, None], 24, 0)
    Image.fromarray(np.repeat(smooth, 3, 2)).save(tmp_path / "a.jpg", quality=95)
    jpg = read_image(tmp_path / "a.jpg")
    assert jpg.shape == (24, 40, 3) and np.abs(jpg.astype(int) - smooth.astype(int)).max() < 8
    deep = np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 60
    Image.fromarray(deep).save(tmp_path / "deep.tif")
    loaded = read_image(tmp_path / "deep.tif")
    assert loaded.dtype == np.float32 and loaded.shape == (24, 40, 3)
    np.testing.assert_allclose(loaded[..., 0], deep / deep.max() * 255, atol=1e-3)


@pytest.fixture
def nifti_file(tmp_path):
    affine = np.array(
        [[0.7, 0.05, 0.0, -90.0], [0.0, 0.8, 0.1, -120.0], [0.0, 0.0, 2.5, -30.0], [0, 0, 0, 1]]
    )
    volume = np.random.default_rng(0).integers(-1000, 1000, (10, 12, 5)).astype(np.int16)
    image = nib.Nifti1Image(volume, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=2)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"boltzformer test"
    image.header.set_slope_inter(2.0, -5.0)  # stored values are scaled on reading
    path = tmp_path / "scan.nii.gz"
    nib.save(image, path)
    return path, volume.astype(np.float32) * 2 - 5


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_nifti_round_trip_keeps_affine_and_header(nifti_file, tmp_path, axis):
    path, expected = nifti_file
    volume, reference = read_nifti(path)
    np.testing.assert_allclose(volume, expected)
    slices = nifti_slices(volume, axis)
    assert slices.shape[0] == volume.shape[axis]
    masks = np.stack([s > 500 for s in slices])  # e.g. a model's per-slice predictions
    mask_volume = stack_slices(masks, axis)
    np.testing.assert_array_equal(mask_volume, expected > 500)
    write_nifti_mask(mask_volume, reference, tmp_path / "mask.nii.gz")
    written = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(written.affine, reference.affine)
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "descrip", "dim"):
        np.testing.assert_array_equal(written.header[key], reference.header[key])
    np.testing.assert_allclose(written.header.get_qform(), reference.header.get_qform())
    assert written.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(written.dataobj), (expected > 500).astype(np.uint8))


def test_nifti_errors(nifti_file, tmp_path):
    path, _ = nifti_file
    _, reference = read_nifti(path)
    with pytest.raises(DataError, match=r"wrong\.nii\.gz: mask shape \(10, 12\) differs"):
        write_nifti_mask(np.zeros((10, 12)), reference, tmp_path / "wrong.nii.gz")
    raw = gzip.decompress(path.read_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))
    with pytest.raises(DataError, match=r"cut\.nii\.gz: truncated or corrupt NIfTI data"):
        read_nifti(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii").write_bytes(b"junk" * 100)
    with pytest.raises(DataError, match=r"junk\.nii: not a readable NIfTI file"):
        read_nifti(tmp_path / "junk.nii")


def test_load_any_nifti(nifti_file):
    path, expected = nifti_file
    slices = load_any(path, axis=2)
    assert slices.shape == (5, 10, 12, 3)
    assert slices.min() >= 0 and slices.max() <= 255
    windowed = load_any(path, window=(1000, 0), axis=0)
    assert windowed.shape == (10, 12, 5, 3)
    np.testing.assert_allclose(windowed[..., 0], apply_window(expected, (1000, 0)), atol=1e-4)
