"""Write the tiny synthetic LIDC-IDRI case the `convert lidc` tests read (tests/samples/lidc/).

    python scripts/lidc_fixture.py [--out tests/samples/lidc]

One case in TCIA's layout, LIDC-IDRI-9001/<study UID>/<series UID>/: five 32 x 32 axial CT
slices (int16 HU, 2.5 mm apart; file names shuffled against their positions) and `069.xml`,
LIDC's reader XML with two readers:
- reader 1: nodule "A1", the rectangle x 8-20, y 10-22 on slices 1-3; nodule "A2", the
  rectangle x 2-5, y 26-29 on slice 4 (only this reader marks it);
- reader 2: nodule "B1", the rectangle x 12-24, y 10-22 on slices 2-4, with a hole
  (inclusion FALSE) x 14-18, y 14-18 on slice 3; its slice-4 outline names no SOP UID
  (matched by imageZposition); and a nodule < 3 mm, one point on slice 0.
(x = column, y = row, both inclusive; the tests hold the same numbers.) Synthetic and fixed,
UIDs included: no patient data, the same files on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

SIZE, SLICES, SPACING, THICKNESS, Z0 = 32, 5, 0.7, 2.5, -100.0
ROOT = "1.2.826.0.1.3680043.10.1394.7."  # a fixed UID root for this fixture
CASE, STUDY, SERIES = "LIDC-IDRI-9001", f"{ROOT}1", f"{ROOT}2"
FILES = ("000003.dcm", "000005.dcm", "000001.dcm", "000004.dcm", "000002.dcm")
#: (reader, nodule, slice, (x0, y0, x1, y1), inclusion, by SOP UID)
OUTLINES = (
    (0, "A1", 1, (8, 10, 20, 22), True, True),
    (0, "A1", 2, (8, 10, 20, 22), True, True),
    (0, "A1", 3, (8, 10, 20, 22), True, True),
    (0, "A2", 4, (2, 26, 5, 29), True, True),
    (1, "B1", 2, (12, 10, 24, 22), True, True),
    (1, "B1", 3, (12, 10, 24, 22), True, True),
    (1, "B1", 3, (14, 14, 18, 18), False, True),
    (1, "B1", 4, (12, 10, 24, 22), True, False),
)
POINT = (1, "B2", 0, (16, 16))


def sop_uid(k: int) -> str:
    return f"{ROOT}3.{k + 1}"


def slice_hu(k: int) -> np.ndarray:
    """Slice k's HU (SIZE, SIZE) int16: air, a soft-tissue disc, brighter where the nodules are."""
    y, x = np.mgrid[:SIZE, :SIZE]
    hu = np.full((SIZE, SIZE), -1000, np.int16)
    hu[(y - 16) ** 2 + (x - 16) ** 2 < 15**2] = -800
    for _, _, kk, (x0, y0, x1, y1), inclusion, _ in OUTLINES:
        if kk == k and inclusion:
            hu[y0 + 1 : y1, x0 + 1 : x1] = 40 + 10 * k
    return hu


def write_slice(k: int, folder: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid(k)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(folder / FILES[k]), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid(k)
    ds.PatientName, ds.PatientID = "Phantom^LIDC", CASE
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY, SERIES
    ds.FrameOfReferenceUID = f"{ROOT}4"
    ds.Modality, ds.Manufacturer, ds.SeriesNumber = "CT", "boltzformer fixture", 1
    ds.InstanceNumber = int(FILES[k][:6])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-11.2, -11.2, Z0 + THICKNESS * k]
    ds.PixelSpacing, ds.SliceThickness = [SPACING, SPACING], THICKNESS
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.PixelData = slice_hu(k).tobytes()
    ds.save_as(folder / FILES[k], enforce_file_format=True)


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """The outline points of a rectangle, clockwise, one pixel apart."""
    top = [(x, y0) for x in range(x0, x1)]
    right = [(x1, y) for y in range(y0, y1)]
    bottom = [(x, y1) for x in range(x1, x0, -1)]
    left = [(x0, y) for y in range(y1, y0, -1)]
    return top + right + bottom + left


def _roi(k: int, points: list[tuple[int, int]], inclusion: bool, by_uid: bool) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>"
                    for x, y in points)  # fmt: skip
    uid = sop_uid(k) if by_uid else ""
    return (f"<roi><imageZposition>{Z0 + THICKNESS * k:.6f} </imageZposition>"
            f"<imageSOP_UID>{uid}</imageSOP_UID>"
            f"<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>")


def lidc_xml() -> str:
    """The reader XML (LidcReadMessage in the http://www.nih.gov namespace)."""
    sessions = []
    for reader in (0, 1):
        nodules: dict[str, list[str]] = {}
        for r, nodule, k, box, inclusion, by_uid in OUTLINES:
            if r == reader:
                nodules.setdefault(nodule, []).append(_roi(k, _rectangle(*box), inclusion,
                                                           by_uid))  # fmt: skip
        if reader == POINT[0]:
            nodules[POINT[1]] = [_roi(POINT[2], [POINT[3]], True, True)]
        body = "".join(f"<unblindedReadNodule><noduleID>{n}</noduleID>{''.join(rois)}"
                       "</unblindedReadNodule>" for n, rois in nodules.items())  # fmt: skip
        body += (f"<nonNodule><nonNoduleID>N1</nonNoduleID><imageSOP_UID>{sop_uid(0)}"
                 "</imageSOP_UID><locus><xCoord>5</xCoord><yCoord>5</yCoord></locus></nonNodule>")
        sessions.append(f"<readingSession><servicingRadiologistID>{reader}"
                        f"</servicingRadiologistID>{body}</readingSession>")  # fmt: skip
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<LidcReadMessage xmlns="http://www.nih.gov">'
            f"<ResponseHeader><SeriesInstanceUid>{SERIES}</SeriesInstanceUid>"
            f"<StudyInstanceUID>{STUDY}</StudyInstanceUID></ResponseHeader>"
            + "\n".join(sessions) + "</LidcReadMessage>\n")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/samples/lidc"))
    folder = parser.parse_args().out / CASE / STUDY / SERIES
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(SLICES):
        write_slice(k, folder)
    (folder / "069.xml").write_text(lidc_xml(), encoding="utf-8")
    print(f"wrote {SLICES} slices and 069.xml to {folder}/")


if __name__ == "__main__":
    main()
