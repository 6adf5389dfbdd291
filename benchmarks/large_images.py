"""The large images of a BiomedParse-format data set, as a data set of their own.

Issue 41 measures crops against whole images on DSB2018's large images: most of its images
are 256 x 256 or 320 x 256, which any plan resizes whole, and 126 of its 664 are 520 to
1,388 pixels wide. This keeps the images whose longer side is at least --min-side, in both
splits, with their masks, instance maps and JSON records (copied: the reader refuses links
that lead out of the data set's folder).

    python benchmarks/large_images.py data/dsb2018 data/dsb2018-large --min-side 512
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

SPLITS = ("train", "test")


def keep_large(src: Path, out: Path, min_side: int) -> dict[str, int]:
    """Copy the images of `src` with a side of at least `min_side` (and their masks and
    instance maps) into `out`, with filtered `<split>.json`; images kept per split."""
    kept: dict[str, int] = {}
    for split in SPLITS:
        records: dict[str, Any] = json.loads((src / f"{split}.json").read_text())
        images = [im for im in records["images"] if max(im["width"], im["height"]) >= min_side]
        ids = {im["id"] for im in images}
        annotations = [a for a in records["annotations"] if a["image_id"] in ids]
        for folder in (split, f"{split}_mask", f"{split}_instances"):
            if (src / folder).is_dir():
                (out / folder).mkdir(parents=True, exist_ok=True)
        for im in images:
            shutil.copyfile(src / split / im["file_name"], out / split / im["file_name"])
        for a in annotations:
            for folder in (f"{split}_mask", f"{split}_instances"):
                source = src / folder / a["mask_file"]
                if source.is_file():
                    shutil.copyfile(source, out / folder / a["mask_file"])
        info = {**records.get("info", {}), "min_side": min_side, "subset_of": src.name}
        (out / f"{split}.json").write_text(json.dumps(
            {**records, "info": info, "images": images, "annotations": annotations}, indent=1))
        kept[split] = len(images)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="a BiomedParse-format data set")
    parser.add_argument("out", type=Path, help="a new folder")
    parser.add_argument("--min-side", type=int, default=512,
                        help="keep images whose longer side is at least this (default 512)")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty")
    if not (args.src / "train.json").is_file():
        raise SystemExit(f"{args.src} holds no train.json: not a BiomedParse-format data set")
    kept = keep_large(args.src, args.out, args.min_side)
    print(", ".join(f"{n} {split} images" for split, n in kept.items()),
          f"with a side of at least {args.min_side} px in {args.out}")


if __name__ == "__main__":
    main()
