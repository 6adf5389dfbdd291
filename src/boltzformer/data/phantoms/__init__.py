"""Built-in synthetic benchmark: CT/MRI-like 2D slices with small, text-prompted targets.

Each image is an axial slice drawn from simple shapes in normalised coordinates [-1, 1]
(x to the image right = the patient's left, radiological convention; y down = posterior):

- chest CT (two levels): body wall, ribs, spine, left/right lung with a tree of vessels and
  vessel cross-sections, mediastinum, aorta, esophagus, and heart (lower) or trachea
  (upper); targets include pulmonary nodules that look like the vessel cross-sections
  (same density, overlapping sizes) but are rounder, larger on average, lobulated,
  spiculated or ground-glass;
- abdomen CT (portal-venous or plain) and MRI (T1- or T2-like): liver with hepatic vessels,
  cysts and tumours, gallbladder, spleen, left/right kidney, left/right adrenal gland
  (thin slivers beside diaphragmatic crura and renal vessels of similar look), aorta,
  inferior vena cava, pancreas, stomach, bowel loops, vertebra, muscles and fat.

Pixels come from a tissue map through a contrast table (HU and a display window for CT,
relative signal for MRI) plus organ texture, partial-volume blur and noise (Gaussian for
CT; bias field and Rician noise for MRI). Each image has its own generator seeded by
(seed, index), so output does not depend on the number of worker processes.

Modules: `tables` (tissues, contrast tables), `prompts` (sentences per target),
`geometry` (shapes on the pixel grid), `scene` (the maps being painted), `trunk` (body
wall, spine, ribs), `chest` and `abdomen` (each site's anatomy), `render` (scene to
pixels), `phantom` (one slice), `writer` (a data set on disk).
"""

from ..size_stats import format_size_table, size_statistics
from .phantom import Phantom, make_phantom
from .prompts import ABSENT_CANDIDATES, FOREIGN_CANDIDATES, SENTENCES, sentences_for
from .tables import CONTRASTS, Contrast, Tissue
from .writer import generate_phantoms

__all__ = [
    "ABSENT_CANDIDATES",
    "FOREIGN_CANDIDATES",
    "CONTRASTS",
    "SENTENCES",
    "Contrast",
    "Phantom",
    "Tissue",
    "format_size_table",
    "generate_phantoms",
    "make_phantom",
    "sentences_for",
    "size_statistics",
]
