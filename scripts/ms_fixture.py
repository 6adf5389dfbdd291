"""Write the tiny synthetic MS-lesion set the `convert nifti` MS tests read
(tests/samples/ms_lesions/).

    python scripts/ms_fixture.py [--out tests/samples/ms_lesions]

Two patients in the Ljubljana mirror's layout, `patientNN/{FLAIR,T1,T2}_..._regtoMNI.nii.gz`
(float32) and `GOLD_STANDARD_..._regtoMNI.nii.gz` (uint8, 1 = lesion), 24 x 28 x 10 voxels
with the MNI files' affine (L, A, S voxel axes, 1 mm). The "brain" is an ellipsoid on slices
1-8 (slices 0 and 9 are blank: 0 everywhere), each sequence its own contrast; lesions are
boxes: patient01 one on slice 3 and two apart on slice 5, patient02 one across slices 4-5.
The tests hold the same numbers. Fixed values: the same files on every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 28, 10)
AFFINE = np.array([[-1.0, 0, 0, 12], [0, 1, 0, -14], [0, 0, 1, -5], [0, 0, 0, 1]])
TAIL = "_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
MASK = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
#: patient -> lesion boxes (x0, x1, y0, y1, z0, z1), half-open voxel ranges
LESIONS = {
    "patient01": ((5, 8, 6, 9, 3, 4), (4, 6, 16, 18, 5, 6), (15, 18, 10, 13, 5, 6)),
    "patient02": ((10, 13, 12, 16, 4, 6),),
}
#: sequence -> (brain value, lesion value, gradient along x)
CONTRAST = {"FLAIR": (300.0, 700.0, 4.0), "T1": (800.0, 500.0, -6.0), "T2": (600.0, 900.0, 2.0)}


def brain() -> np.ndarray:
    x, y, z = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    inside = ((x - 11.5) / 10) ** 2 + ((y - 13.5) / 12) ** 2 + ((z - 4.5) / 4.2) ** 2 <= 1
    inside[:, :, (0, 9)] = False
    return inside


def lesions(patient: str) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    for x0, x1, y0, y1, z0, z1 in LESIONS[patient]:
        mask[x0:x1, y0:y1, z0:z1] = 1
    return mask


def sequence(name: str, patient: str) -> np.ndarray:
    tissue, lesion, slope = CONTRAST[name]
    x = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
    values = np.broadcast_to(tissue + slope * x, SHAPE).copy()
    values[lesions(patient) > 0] = lesion
    return np.where(brain(), values, 0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tests/samples/ms_lesions"))
    out = parser.parse_args().out
    for patient in LESIONS:
        folder = out / patient
        folder.mkdir(parents=True, exist_ok=True)
        for name in CONTRAST:
            nib.save(nib.Nifti1Image(sequence(name, patient), AFFINE), folder / f"{name}{TAIL}")
        nib.save(nib.Nifti1Image(lesions(patient), AFFINE), folder / MASK)
    print(f"wrote {len(LESIONS)} patients to {out}/")


if __name__ == "__main__":
    main()
