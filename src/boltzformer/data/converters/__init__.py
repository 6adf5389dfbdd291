"""Converters of public data sets into the BiomedParse layout (`boltzformer convert`).

`consep` (H&E nuclei in 4 or 7 classes), `dsb2018` (Kaggle DSB 2018 nuclei), `nifti`
(TotalSegmentator-style mask files, Decathlon-style label volumes or the Ljubljana MS-lesion
patients (`ms_lesions`), cut into slices), `lidc` (LIDC-IDRI CT series with the readers'
nodule outlines, `lidc_xml`);
`dataset_writer` writes images, masks, instance maps, the JSON and the size statistics.
"""

from .consep import convert_consep
from .dataset_writer import DatasetWriter, TargetMask, format_summary, summary_lines
from .dsb2018 import convert_dsb2018
from .lidc import convert_lidc
from .nifti import convert_nifti, stack_slices

__all__ = [
    "DatasetWriter",
    "TargetMask",
    "convert_consep",
    "convert_dsb2018",
    "convert_lidc",
    "convert_nifti",
    "format_summary",
    "stack_slices",
    "summary_lines",
]
