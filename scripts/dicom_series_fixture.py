"""Write the tiny synthetic CT series the DICOM SEG tests read (tests/samples/dicom/series/).

    python scripts/dicom_series_fixture.py [--out tests/samples/dicom/series]

Four 64 x 64 axial CT slices of one series (int16 HU, 2.5 mm apart, slice 0 at the feet
end), each a disc of soft tissue in air with a small bright "nodule" whose position moves with
the slice. The file names are shuffled against the slices' positions (and their
InstanceNumbers too), so a reader that sorts by name or by instance number gets the wrong
order: only ImagePositionPatient projected on the slice normal gives it. Every value is fixed
(UIDs included), so the files are the same on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

SIZE, SLICES, SPACING, THICKNESS = 64, 4, (0.7, 0.7), 2.5
ROOT = "1.2.826.0.1.3680043.10.1394."  # a fixed UID root for this fixture
# slice k (by position, feet to head) is written as FILES[k] with InstanceNumber NUMBERS[k]
FILES = ("c.dcm", "a.dcm", "d.dcm", "b.dcm")
NUMBERS = (3, 1, 4, 2)


def slice_hu(k: int) -> np.ndarray:
    """Slice k's HU values (SIZE, SIZE) int16: air, a soft-tissue disc, a nodule."""
    y, x = np.mgrid[:SIZE, :SIZE]
    hu = np.full((SIZE, SIZE), -1000, np.int16)
    hu[(y - 32) ** 2 + (x - 32) ** 2 < 26**2] = 40
    cy, cx = 24 + 4 * k, 28 + 3 * k
    hu[(y - cy) ** 2 + (x - cx) ** 2 < 4**2] = 300
    return hu


def write_slice(k: int, folder: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{ROOT}3.{k + 1}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / FILES[k]), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Phantom^Series", "BF-PHANTOM-1"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{ROOT}1", f"{ROOT}2"
    ds.FrameOfReferenceUID = f"{ROOT}4"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20250101", "120000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.Manufacturer, ds.SeriesNumber = "CT", "boltzformer fixture", 1
    ds.InstanceNumber = NUMBERS[k]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-22.05, -22.05, -100.0 + THICKNESS * k]
    ds.PixelSpacing, ds.SliceThickness = list(SPACING), THICKNESS
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
    ds.PixelData = slice_hu(k).tobytes()
    ds.save_as(folder / FILES[k], enforce_file_format=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/samples/dicom/series"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    for k in range(SLICES):
        write_slice(k, out)
    print(f"wrote {SLICES} slices to {out}/")


if __name__ == "__main__":
    main()
