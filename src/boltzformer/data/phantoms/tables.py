"""Tissue classes and the contrast tables that turn them into CT (HU) or MRI signal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType


class Tissue(IntEnum):
    """Tissue classes painted into a scene; a contrast table maps each to a signal."""

    AIR = 0
    LUNG = 1
    FAT = 2
    MUSCLE = 3
    BONE = 4
    MARROW = 5
    FLUID = 6
    LIVER = 7
    SPLEEN = 8
    CORTEX = 9
    MEDULLA = 10
    BLOOD = 11
    SOFT = 12
    GGO = 13
    TUMOR = 14
    ADRENAL = 15
    PANCREAS = 16
    WALL = 17
    BOWEL_CONTRAST = 18
    MYOCARDIUM = 19


@dataclass(frozen=True)
class Contrast:
    """Signal per tissue (HU for CT, relative for MRI) and texture amplitude per tissue.

    Texture amplitudes are fractions of the display range (the window width for CT).
    """

    values: Mapping[Tissue, float]
    texture: Mapping[Tissue, float]


def _table(**values: float) -> Mapping[Tissue, float]:
    return MappingProxyType({Tissue[name.upper()]: v for name, v in values.items()})


_CT_TEXTURE = _table(
    air=0.0, lung=0.03, fat=0.015, muscle=0.025, bone=0.05, marrow=0.08, fluid=0.004,
    liver=0.02, spleen=0.015, cortex=0.015, medulla=0.015, blood=0.006, soft=0.012,
    ggo=0.03, tumor=0.03, adrenal=0.012, pancreas=0.035, wall=0.02, bowel_contrast=0.03,
    myocardium=0.015,
)  # fmt: skip
_MR_TEXTURE = _table(
    air=0.0, lung=0.01, fat=0.025, muscle=0.03, bone=0.01, marrow=0.06, fluid=0.01,
    liver=0.025, spleen=0.02, cortex=0.02, medulla=0.02, blood=0.01, soft=0.02,
    ggo=0.02, tumor=0.04, adrenal=0.015, pancreas=0.04, wall=0.025, bowel_contrast=0.02,
    myocardium=0.02,
)  # fmt: skip

_CT_PORTAL = _table(
    air=-1000, lung=-860, fat=-100, muscle=55, bone=750, marrow=250, fluid=8, liver=110,
    spleen=120, cortex=185, medulla=140, blood=165, soft=40, ggo=-550, tumor=60, adrenal=50,
    pancreas=100, wall=90, bowel_contrast=320, myocardium=100,
)  # fmt: skip
_CT_PLAIN = _table(
    air=-1000, lung=-860, fat=-100, muscle=50, bone=750, marrow=250, fluid=8, liver=62,
    spleen=50, cortex=35, medulla=30, blood=42, soft=40, ggo=-550, tumor=32, adrenal=35,
    pancreas=45, wall=45, bowel_contrast=300, myocardium=45,
)  # fmt: skip
_MR_T1 = _table(
    air=0.0, lung=0.03, fat=0.85, muscle=0.3, bone=0.05, marrow=0.62, fluid=0.1, liver=0.52,
    spleen=0.38, cortex=0.42, medulla=0.3, blood=0.08, soft=0.35, ggo=0.15, tumor=0.28,
    adrenal=0.42, pancreas=0.58, wall=0.35, bowel_contrast=0.12, myocardium=0.35,
)  # fmt: skip
_MR_T2 = _table(
    air=0.0, lung=0.03, fat=0.7, muscle=0.18, bone=0.05, marrow=0.45, fluid=0.95, liver=0.28,
    spleen=0.55, cortex=0.5, medulla=0.64, blood=0.06, soft=0.3, ggo=0.4, tumor=0.68,
    adrenal=0.3, pancreas=0.36, wall=0.3, bowel_contrast=0.9, myocardium=0.3,
)  # fmt: skip

#: Contrast tables: CT in Hounsfield units (portal-venous and plain), MRI relative signal.
CONTRASTS: Mapping[str, Contrast] = MappingProxyType(
    {
        "ct_portal": Contrast(_CT_PORTAL, _CT_TEXTURE),
        "ct_plain": Contrast(_CT_PLAIN, _CT_TEXTURE),
        "mr_t1": Contrast(_MR_T1, _MR_TEXTURE),
        "mr_t2": Contrast(_MR_T2, _MR_TEXTURE),
    }
)
