"""The Ljubljana MS-lesion layout for `convert nifti`: several MRI sequences and one lesion mask
per patient.

    SRC/patientXX/FLAIR_..._regtoMNI.nii.gz, T1_..., T2_... (float, skull-stripped: 0 outside
    the brain) and GOLD_STANDARD_....nii.gz (uint8, 1 = lesion), all on one voxel grid

(SRC may be one patient folder, or any folder above the patient folders.) One sequence is
written as a grey image, several as the channels of an RGB image in the order given, each
shown through its own 0.5-99.5 percentiles over the brain (its non-zero voxels). `nifti.py`
cuts the slices; this module finds the cases and reads the sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..errors import DataError
from ..medio import apply_window

#: The one target of the layout, and the site in the image names.
MS_TARGET, MS_SITE = "multiple sclerosis lesion", "brain"
#: The file name that marks a patient folder's lesion mask.
MASK_PREFIX = "GOLD_STANDARD"
#: The sequences a patient folder of the layout may hold (file name prefixes).
KNOWN_SEQUENCES = ("FLAIR", "T1", "T1POST", "T2")
_NIFTI = (".nii.gz", ".nii")


@dataclass(frozen=True)
class MSCase:
    """One patient: the chosen sequences' files (in channel order) and the lesion mask."""

    name: str
    sequences: tuple[Path, ...]
    mask: Path


def parse_sequences(text: str | Sequence[str]) -> tuple[str, ...]:
    """`"FLAIR"` or `"FLAIR,T1,T2"` (or a list) -> upper-case names; 1 or 3 of them."""
    names = text.split(",") if isinstance(text, str) else list(text)
    seqs = tuple(n.strip().upper() for n in names if n.strip())
    if len(seqs) not in (1, 3) or len(set(seqs)) != len(seqs):
        raise ValueError(f"--sequence {','.join(seqs) or text!r}: give one sequence (grey) or "
                         "three different ones (RGB), e.g. FLAIR or FLAIR,T1,T2")
    unknown = [s for s in seqs if s not in KNOWN_SEQUENCES]
    if unknown:
        raise ValueError(f"--sequence {unknown[0]}: unknown; use {', '.join(KNOWN_SEQUENCES)}")
    return seqs


def ms_modality(sequences: Sequence[str]) -> str:
    """The modality in the image names: `MRI-FLAIR`, `MRI-FLAIR-T1-T2`."""
    return "-".join(("MRI", *sequences))


def _sequence_of(path: Path) -> str | None:
    """The sequence a file holds (the longest known prefix before `_`), or None."""
    if not path.name.endswith(_NIFTI):
        return None
    head = path.name.split("_", 1)[0].upper()
    return head if head in KNOWN_SEQUENCES else None


def _is_case(folder: Path) -> bool:
    return any(p.name.startswith(MASK_PREFIX) or _sequence_of(p) is not None
               for p in folder.iterdir() if p.name.endswith(_NIFTI))  # fmt: skip


def is_ms_layout(src: Path) -> bool:
    """True when `src` or a folder below it holds a GOLD_STANDARD mask NIfTI."""
    return any(p.name.endswith(_NIFTI) for p in src.rglob(f"{MASK_PREFIX}*"))


def find_ms_cases(src: Path, sequences: Sequence[str]) -> list[MSCase]:
    """Every patient folder at or below `src`; one-line errors for a missing mask or sequence."""
    folders = [src] if _is_case(src) else []
    folders += sorted(p for p in src.rglob("*") if p.is_dir() and _is_case(p))
    cases = []
    for folder in folders:
        files = sorted(folder.iterdir())
        masks = [p for p in files if p.name.startswith(MASK_PREFIX) and p.name.endswith(_NIFTI)]
        if len(masks) != 1:
            raise DataError(f"{folder}: {'no' if not masks else len(masks)} {MASK_PREFIX}_*.nii.gz "
                            "lesion mask(s); a patient folder needs exactly one")  # fmt: skip
        chosen = []
        for seq in sequences:
            found = [p for p in files if _sequence_of(p) == seq]
            if len(found) != 1:
                held = sorted({s for p in files if (s := _sequence_of(p))})
                raise DataError(f"{folder}: {'no' if not found else 'more than one'} {seq}_*.nii.gz"
                                f" (it holds {', '.join(held) or 'no sequence'})")  # fmt: skip
            chosen.append(found[0])
        cases.append(MSCase(folder.name, tuple(chosen), masks[0]))
    if len({c.name for c in cases}) != len(cases):
        raise DataError(f"{src}: two patient folders share a name; give them one by one")
    return cases


def brain_display(volume: np.ndarray) -> np.ndarray:
    """A skull-stripped volume -> uint8 through its 0.5-99.5 percentiles over the brain (the
    non-zero voxels; all voxels when none is zero); the background stays 0."""
    brain = volume != 0
    inside = volume[brain] if brain.any() else volume.ravel()
    low, high = np.percentile(inside, [0.5, 99.5])
    width = max(float(high - low), 1e-6)
    shown = np.rint(apply_window(volume, (width, float(low) + width / 2))).astype(np.uint8)
    return np.where(brain, shown, 0).astype(np.uint8) if brain.any() else shown


def lesion_instances(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int32 ids of its 8-connected components, 0 = background."""
    ids, _ = ndimage.label(mask, structure=np.ones((3, 3), int))
    return ids.astype(np.int32)
