"""Prompts per target (canonical plus paraphrases) and the targets that may be left out."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ..biomedparse import default_prompt

#: Paraphrases per target after the canonical `<target> in <site> <modality>` prompt.
#: Placeholders: {mod} (CT, MRI), {adj} (thoracic, abdominal). "left" is the patient's left.
SENTENCES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "nodule": (
            "pulmonary nodule in chest {mod}",
            "small lung lesion in {mod} scan",
            "lung nodule on {adj} {mod}",
            "round nodule in the lung parenchyma on {mod}",
            "solitary pulmonary nodule in the chest {mod} image",
        ),
        "left lung": (
            "the patient's left lung on {adj} {mod}",
            "left lung field in chest {mod} scan",
            "left lung parenchyma on {mod}",
        ),
        "right lung": (
            "the patient's right lung on {adj} {mod}",
            "right lung field in chest {mod} scan",
            "right lung parenchyma on {mod}",
        ),
        "aorta": (
            "aorta on {adj} {mod}",
            "the aortic lumen in {mod} scan",
            "{adj} aorta in {mod} image",
        ),
        "esophagus": (
            "esophagus on {adj} {mod}",
            "oesophagus behind the heart and trachea in {mod} scan",
            "the gullet in chest {mod} image",
        ),
        "trachea": (
            "trachea on {adj} {mod}",
            "air-filled tracheal lumen in chest {mod} scan",
            "the windpipe in {mod} image",
        ),
        "heart": (
            "heart on {adj} {mod}",
            "cardiac chambers and myocardium in chest {mod} scan",
            "the heart in {mod} image",
        ),
        "liver": (
            "liver on {adj} {mod}",
            "hepatic parenchyma in {mod} scan",
            "the liver in the right upper abdomen on {mod}",
        ),
        "liver tumor": (
            "hepatic lesion on {adj} {mod}",
            "focal liver mass in {mod} scan",
            "tumor within the liver on {adj} {mod}",
            "liver neoplasm in {mod} image",
        ),
        "hepatic vessel": (
            "intrahepatic vessels on {adj} {mod}",
            "portal and hepatic veins inside the liver in {mod} scan",
            "thin blood vessels of the liver on {mod}",
        ),
        "gallbladder": (
            "gall bladder on {adj} {mod}",
            "fluid-filled gallbladder under the liver in {mod} scan",
            "the gallbladder in {mod} image",
        ),
        "spleen": (
            "spleen on {adj} {mod}",
            "splenic parenchyma in {mod} scan",
            "the spleen in the left upper abdomen on {mod}",
        ),
        "left kidney": (
            "the patient's left kidney on {adj} {mod}",
            "left renal parenchyma in {mod} scan",
            "kidney on the left side of the patient in {adj} {mod}",
        ),
        "right kidney": (
            "the patient's right kidney on {adj} {mod}",
            "right renal parenchyma in {mod} scan",
            "kidney on the right side of the patient in {adj} {mod}",
        ),
        "left adrenal gland": (
            "the patient's left adrenal gland on {adj} {mod}",
            "left suprarenal gland in {mod} scan",
            "thin left adrenal gland beside the aorta on {mod}",
        ),
        "right adrenal gland": (
            "the patient's right adrenal gland on {adj} {mod}",
            "right suprarenal gland in {mod} scan",
            "thin right adrenal gland behind the vena cava on {mod}",
        ),
        "inferior vena cava": (
            "IVC on {adj} {mod}",
            "postcava in {mod} scan",
            "the inferior vena cava beside the liver on {mod}",
        ),
        "pancreas": (
            "pancreatic gland on {adj} {mod}",
            "the pancreas in {mod} scan",
            "pancreas head, body and tail on {adj} {mod}",
        ),
        "stomach": (
            "gastric lumen and wall on {adj} {mod}",
            "the stomach in {mod} scan",
            "stomach in the left upper abdomen on {mod}",
        ),
    }
)

#: Targets that may be left out of an image on purpose (written with an empty mask).
ABSENT_CANDIDATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chest": ("nodule",),
        "abdomen": (
            "liver tumor",
            "left kidney",
            "right kidney",
            "left adrenal gland",
            "right adrenal gland",
            "gallbladder",
        ),
    }
)

#: Targets of the other site, prompted on a slice that cannot hold them (empty masks): chest
#: structures on abdomen slices and abdominal organs on chest slices (the aorta is in both).
FOREIGN_CANDIDATES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "chest": ("liver", "liver tumor", "gallbladder", "spleen", "left kidney",
                  "right kidney", "left adrenal gland", "right adrenal gland",
                  "inferior vena cava", "pancreas", "stomach"),
        "abdomen": ("right lung", "left lung", "esophagus", "trachea", "heart", "nodule"),
    }
)

MIN_PIXELS = 3  # a present target has at least this many pixels


def sentences_for(target: str, site: str, modality: str) -> list[str]:
    """Prompts for one mask: the canonical `<target> in <site> <modality>`, then paraphrases."""
    adj = {"chest": "thoracic", "abdomen": "abdominal"}.get(site, site)
    extra = [s.format(mod=modality, adj=adj) for s in SENTENCES.get(target, ())]
    return [default_prompt(target, site, modality), *extra]
