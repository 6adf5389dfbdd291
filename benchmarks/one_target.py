"""The control of small_objects.md's nodule section ("can the model learn the target when it
is all there is to learn?"): a BiomedParse folder holding one target (or one site) only,
and a target's Dice by object size from an evaluation's per_sample.csv.

    python benchmarks/one_target.py make DATA OUT --target nodule [--absent]
    python benchmarks/one_target.py make DATA OUT --site chest
    python benchmarks/one_target.py sizes REPORT_DIR --target nodule [--edges 15,40,80]

`make`: OUT gets train.json and test.json with only the target's present items (with
--absent, its annotated absent items too), the images that have one, and links to DATA's
image and mask folders, so nothing is copied; with --site instead, every item (present or
absent) of the images of that site. `sizes`: the target's present items grouped
by their true size in pixels (at the evaluated size), each group's count, mean Dice and
items missed (Dice 0), and all of them.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path


def make(data: Path, out: Path, target: str | None, site: str | None, absent: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        record = json.loads((data / f"{split}.json").read_text())
        sites = {image["id"]: image.get("site") for image in record["images"]}
        items = [a for a in record["annotations"]
                 if (a["target"] == target and (absent or not a.get("absent")))
                 or (site is not None and sites[a["image_id"]] == site)]
        images = {a["image_id"] for a in items}
        record["annotations"] = items
        record["images"] = [image for image in record["images"] if image["id"] in images]
        (out / f"{split}.json").write_text(json.dumps(record))
        for folder in (split, f"{split}_mask"):
            link = out / folder
            if not link.exists():
                link.symlink_to((data / folder).resolve(), target_is_directory=True)
        print(f"{split}: {len(items)} {target or site} items on {len(images)} images")


def sizes(report: Path, target: str, edges: list[int]) -> None:
    with (report / "per_sample.csv").open() as f:
        rows = [r for r in csv.DictReader(f)
                if r["target"] == target and int(r["gt_pixels"]) > 0]
    print("| true pixels | items | Dice | missed |")
    print("|---|---:|---:|---:|")
    bounds = [0, *edges, None]
    for lo, hi in zip(bounds, bounds[1:]):
        dice = [float(r["dice"]) for r in rows
                if int(r["gt_pixels"]) >= lo and (hi is None or int(r["gt_pixels"]) < hi)]
        label = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
        mean = f"{100 * statistics.mean(dice):.1f}" if dice else "–"
        print(f"| {label} | {len(dice)} | {mean} | {sum(d == 0 for d in dice)} |")
    every = [float(r["dice"]) for r in rows]
    if every:
        print(f"| all | {len(every)} | {100 * statistics.mean(every):.1f} | "
              f"{sum(d == 0 for d in every)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="a BiomedParse folder of one target")
    m.add_argument("data", type=Path)
    m.add_argument("out", type=Path)
    what = m.add_mutually_exclusive_group(required=True)
    what.add_argument("--target")
    what.add_argument("--site", help="every item of the images of this site instead")
    m.add_argument("--absent", action="store_true",
                   help="keep the target's annotated absent items too")
    s = sub.add_parser("sizes", help="a target's Dice by true size")
    s.add_argument("report", type=Path)
    s.add_argument("--target", required=True)
    s.add_argument("--edges", default="15,40,80", help="size bounds in pixels (15,40,80)")
    args = parser.parse_args()
    if args.command == "make":
        make(args.data, args.out, args.target, args.site, args.absent)
    else:
        sizes(args.report, args.target, [int(v) for v in args.edges.split(",")])


if __name__ == "__main__":
    main()
