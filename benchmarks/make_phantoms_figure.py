"""Draw docs/phantoms.png: four phantoms from the built-in generator, one target outlined each.

    python benchmarks/make_phantoms_figure.py            # writes docs/phantoms.png
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from boltzformer.data import BiomedParseDataset, generate_phantoms
from boltzformer.inference.viz import GridItem, prediction_grid

TARGETS = ("nodule", "left adrenal gland", "liver tumor", "right kidney")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        generate_phantoms(tmp, images=40, size=256, seed=0, progress=False)
        data = BiomedParseDataset(tmp, "train", image_size=256, train=False)
        items = []
        for target in TARGETS:
            index = next(i for i, s in enumerate(data.samples) if s.target == target)
            sample = data[index]
            mask = sample["mask"][0].numpy() > 0.5
            items.append(GridItem(image=sample["image"].permute(1, 2, 0).numpy().astype(np.uint8),
                                  prob=np.zeros(mask.shape, dtype=np.float32), gt=mask,
                                  caption=f"{target} ({100 * sample['area']:.2f} %)"))
    path = Path(__file__).resolve().parents[1] / "docs" / "phantoms.png"
    prediction_grid(items, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
