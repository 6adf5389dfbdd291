"""Issue 41, item 4: how many small objects a mask drawn at a given stride can find at all.

A model's mask is painted on a grid: the image as the model sees it (resized, or scaled by
the plan's crop scale), and on that grid at the mask path's stride. BoltzFormer's query
masks are at stride 4 of the model's input (Eq. 1 on S at H/4; PiGMA adds a stride-2
correction from the image's colours), the U-Net expert's at stride 1. This measures the
ceiling each stride sets on object detection, with no model at all: for every test mask,
the logit field at stride s that best fits the mask on the model's grid (Dice + BCE, the
training loss, fitted by Adam), bilinearly upsampled to the grid, resized to the mask's own
size as the evaluator resizes predictions, thresholded at 0.5 and scored like a prediction
(objects matched at IoU >= 0.5, by size as a share of the image). Stride 1 is the mask
resampled to the grid itself (what resizing alone leaves). `small_objects.py ceiling` asks
the same of Dice, per target, on 256² images; this counts objects at the mask's own size.

    python benchmarks/stride_ceiling.py count DATA --scale 0.25 --strides 1 2 4 8
    python benchmarks/stride_ceiling.py count DATA --grid 128 --strides 1 2 4  # whole, 128²
    python benchmarks/stride_ceiling.py figure DATA --image 00320_MRI_abdomen \
        --target "hepatic vessel" --scale 0.25 --runs RUNS/plan128-k16-s0 --out FIG.png

`--scale`: the grid is the image times the scale (the plan's crop scale; a crop-trained model
predicts with windows that tile the scaled image). `--grid N`: the whole image resized to N²
(a model trained on whole images). `count` prints, per stride, the objects found (recall)
by size bin and the targets' recall under 0.1 %; `--json` writes the counts. `figure` draws
one test mask, the best stride-4 field's mask, and each run's answer (its last checkpoint,
through its windows), cut to the target's box.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from boltzformer.data import BiomedParseDataset, read_mask
from boltzformer.data.crops import resample_masks
from boltzformer.evaluation.objects import BIN_NAMES, label_objects, score_objects
from boltzformer.modeling.loss import dice_bce_loss


def fit_field(target: Tensor, stride: int, *, steps: int = 150, lr: float = 0.5) -> Tensor:
    """The logits (K, 1, h/s, w/s) whose bilinear upsampling best fits masks target (K, 1, h,
    w) under the training loss (Dice + BCE per mask), upsampled: (K, 1, h, w) logits."""
    size = target.shape[-2:]
    coarse = (max(1, round(size[0] / stride)), max(1, round(size[1] / stride)))
    start = F.adaptive_avg_pool2d(target, coarse)  # coverage, as logits of 0.5 +- a margin
    field = ((start - 0.5) * 8).clone().requires_grad_(True)
    optim = torch.optim.Adam([field], lr=lr)
    for _ in range(steps):
        up = F.interpolate(field, size=size, mode="bilinear", align_corners=False)
        loss = dice_bce_loss(up, target) * target.shape[0]  # each mask its own Dice + BCE
        optim.zero_grad()
        loss.backward()
        optim.step()
    with torch.no_grad():
        return F.interpolate(field, size=size, mode="bilinear", align_corners=False)


def to_native(prob: Tensor, size: tuple[int, int]) -> np.ndarray:
    """Probabilities (K, 1, h, w) resized to the mask's size as the evaluator does, > 0.5."""
    shrink = size[0] < prob.shape[-2] or size[1] < prob.shape[-1]
    up = F.interpolate(prob, size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return (up[:, 0] > 0.5).numpy()


def grid_of(shape: tuple[int, int], scale: float | None, grid: int | None) -> tuple[int, int]:
    if grid:
        return grid, grid
    assert scale is not None
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    count = verbs.add_parser("count", help="objects each stride can find, all test images")
    figure = verbs.add_parser("figure", help="one mask: the truth, stride 4's best, runs'")
    for sub in (count, figure):
        sub.add_argument("data", type=Path)
        sub.add_argument("--split", default="test")
        sub.add_argument("--scale", type=float, default=None, help="grid = image x scale")
        sub.add_argument("--grid", type=int, default=None, help="grid = N x N (whole image)")
        sub.add_argument("--steps", type=int, default=150, help="Adam steps per fit")
    count.add_argument("--strides", type=int, nargs="+", default=[1, 2, 4, 8])
    count.add_argument("--images", type=int, default=None, help="first N test images")
    count.add_argument("--json", type=Path, default=None)
    figure.add_argument("--image", required=True, help="the test image's file stem")
    figure.add_argument("--target", required=True)
    figure.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="lesion_controls.py run folders (BoltzFormer)")
    figure.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if (args.scale is None) == (args.grid is None):
        parser.error("give one of --scale or --grid")
    torch.manual_seed(0)
    if args.verb == "figure":
        draw(args)
        return
    data = BiomedParseDataset(args.data, args.split, image_size=None)
    by_image: dict[Path, list[int]] = defaultdict(list)
    for i, sample in enumerate(data.samples):
        by_image[sample.image_path].append(i)
    images = sorted(by_image)[: args.images]
    # counts[stride][target]: (4, bins) tp, fp, fn, iou_sum summed over images
    counts: dict[int, dict[str, np.ndarray]] = {s: defaultdict(lambda: np.zeros((4, 4)))
                                                for s in args.strides}
    for n, image in enumerate(images):
        samples = [data.samples[i] for i in by_image[image]]
        masks = np.stack([read_mask(s.mask_path) for s in samples])
        shape = (int(masks.shape[1]), int(masks.shape[2]))
        native = torch.from_numpy(masks).float()[:, None]
        target = resample_masks(native, grid_of(shape, args.scale, args.grid))
        truth = [label_objects(m) for m in masks]
        for stride in args.strides:
            prob = target if stride == 1 else fit_field(target, stride, steps=args.steps).sigmoid()
            pred = to_native(prob, shape)
            for k, sample in enumerate(samples):
                labels, n_pred = label_objects(pred[k])
                counts[stride][sample.target] += score_objects(*truth[k], labels, n_pred)
        print(f"image {n + 1}/{len(images)}", end="\r", flush=True)
    print()
    report(counts)
    if args.json:
        args.json.write_text(json.dumps(
            {"data": str(args.data), "scale": args.scale, "grid": args.grid,
             "images": len(images),
             "counts": {str(s): {t: c.tolist() for t, c in by.items()}
                        for s, by in counts.items()}}, indent=1))


def report(counts: dict[int, dict[str, np.ndarray]]) -> None:
    """Print found / total by size bin per stride, then per target under 0.1 %."""
    print("stride | " + " | ".join(f"found {b}" for b in BIN_NAMES) + " | found < 0.1 %")
    for stride, by_target in counts.items():
        total = sum(by_target.values())
        tp, fn = total[0], total[2]
        cells = [f"{int(tp[b])} of {int(tp[b] + fn[b])}" for b in range(len(BIN_NAMES))]
        small = f"{int(tp[:2].sum())} of {int(tp[:2].sum() + fn[:2].sum())}"
        print(f"{stride} | " + " | ".join(cells) + f" | {small}")
    targets = sorted(next(iter(counts.values())))
    print("\ntarget, found < 0.1 % at each stride: " + ", ".join(str(s) for s in counts))
    for name in targets:
        cells = []
        for by_target in counts.values():
            c = by_target[name]
            cells.append(f"{int(c[0, :2].sum())} of {int(c[0, :2].sum() + c[2, :2].sum())}")
        print(f"{name} | " + " | ".join(cells))


def draw(args: argparse.Namespace) -> None:
    """The figure of `figure`: panels cut to the target's box (+ a margin), answers in green
    over the image, the truth in red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    from boltzformer.inference.predictor import Predictor

    data = BiomedParseDataset(args.data, args.split, image_size=None)
    sample = next((s for s in data.samples if s.image_path.stem == args.image
                   and s.target == args.target), None)
    if sample is None:
        raise SystemExit(f"no {args.target!r} mask for image {args.image!r} in {args.split}")
    image = np.asarray(Image.open(sample.image_path).convert("RGB"))
    truth = read_mask(sample.mask_path)
    shape = (int(truth.shape[0]), int(truth.shape[1]))
    target = resample_masks(torch.from_numpy(truth).float()[None, None],
                            grid_of(shape, args.scale, args.grid))
    panels = [("truth", truth),
              ("best stride-4 field", to_native(fit_field(target, 4, steps=args.steps)
                                                .sigmoid(), shape)[0])]
    for run in args.runs:
        predictor = Predictor.from_pretrained(run / "run" / "last", progress=False)
        predictor.set_image(image)
        answer = predictor.predict([sample.sentences[0]]).prob[0] > 0.5
        panels.append((run.name, answer))
    ys, xs = np.nonzero(truth)
    margin = 20
    box = (slice(max(0, ys.min() - margin), ys.max() + margin),
           slice(max(0, xs.min() - margin), xs.max() + margin))
    fig = Figure(figsize=(3 * len(panels), 3.2))
    for k, (title, mask) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        shown = image[box].copy()
        shown[mask[box]] = (230, 40, 40) if k == 0 else (40, 200, 40)
        ax.imshow(shown)
        _, n = label_objects(mask[box])
        ax.set_title(f"{title}\n{n} objects", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
