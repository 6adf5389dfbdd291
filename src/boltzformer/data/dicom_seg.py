"""Masks as a DICOM Segmentation (SEG) object, written with highdicom: what 3D Slicer, OHIF and
PACS open over the source images.

One BINARY SEG per input: one segment per prompt (its label the prompt), its frames
referencing the source instances with their plane positions (a multi-frame SEG for a series,
one frame per segment for a slice). Every prompt keeps its segment, also an empty one (a
target "not found"): the SEG lists what was asked. Frames empty in a segment are left out, as
the standard allows (viewers show them empty); when every mask is empty, highdicom keeps all
frames (a SEG needs one).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import DataError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: The longest SegmentLabel (VR LO); longer prompts are cut.
LABEL_CHARS = 64
SOFTWARE = "boltzformer"


def _version() -> str:
    """This package's version, as installed (the SEG's software version)."""
    try:
        return metadata.version("boltzformer")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def write_dicom_seg(
    sources: Sequence[Dataset], masks: np.ndarray, labels: Sequence[str], path: Path
) -> None:
    """Write `masks` (P, N, rows, columns) bool, prompt by source slice, as a BINARY SEG at
    `path`: segment p+1 labelled `labels[p]`, frame n over `sources[n]` (headers suffice; no
    pixel data needed). A one-line `DataError` when the sources cannot carry a SEG (no
    patient, study or frame of reference attributes highdicom needs, mixed series, ...)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    version = _version()
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 4 or masks.shape[1] != len(sources) or masks.shape[0] != len(labels):
        raise ValueError(f"masks {masks.shape}: expected ({len(labels)}, {len(sources)}, "
                         "rows, columns)")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="BoltzFormer", version=version, family=codes.cid7162.ArtificialIntelligence)
    segments = [
        hd.seg.SegmentDescription(
            segment_number=p + 1, segment_label=label[:LABEL_CHARS],
            # a text prompt names no coded anatomy: the generic "tissue" category and type,
            # the prompt itself in the label
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for p, label in enumerate(labels)
    ]
    try:
        with warnings.catch_warnings():  # "reverting to encoding all frames": said above
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=list(sources),
                pixel_array=np.moveaxis(masks, 0, -1),  # (N, rows, columns, P)
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=segments,
                series_instance_uid=hd.UID(), series_number=9001,
                sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer=SOFTWARE, manufacturer_model_name="BoltzFormer",
                software_versions=version, device_serial_number="0",
                series_description="BoltzFormer segmentation",
            )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path.name}: cannot write a DICOM SEG over these images "
                        f"({message})") from None
    seg.save_as(path)
