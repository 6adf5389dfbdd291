"""Figures for predictions and Boltzmann sampling (matplotlib, Agg; no pyplot state).

Colours follow the paper's figures: ground truth outlined in red, prediction in green.

- `overlay`: one image, its predicted mask tinted green, the ground truth outlined in red.
- `prediction_grid`: many such panels in a grid (one per `GridItem`).
- `sampling_figure`: per decoder layer, the tokens one query attended to (bright = sampled,
  the rest dimmed), plus the final prediction (the paper's Fig. 4 and appendix C.1).
- `uncertainty_figure`: image, mean probability and pixel-wise std over sampling draws.
- `prompts_overlay`: several prompts' masks on one image, each in its own colour.
- `probability_maps`: one probability panel per prompt.
- `to_array`: any of these figures as an RGB array (for the web app).

Every function returns the `matplotlib.figure.Figure` and writes it to `path` when given.
Images are (H, W) grey or (H, W, 3) RGB, uint8 or floats in [0, 255]; probabilities and masks
are (H, W) at the image's size.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

GT_COLOR = "#ff2020"
PRED_COLOR = "#20e020"
PRED_TINT = (0.1, 0.9, 0.1)
DIM_ALPHA = 0.75  # how dark the tokens a query did not attend to are drawn
PANEL_INCHES = 3.2
#: One colour per prompt, in order (the first is the prediction green), then repeated.
PROMPT_COLORS = ("#20e020", "#ff9f1c", "#2ec4ff", "#ff4fd8", "#ffe019", "#a98bff", "#ff5a5a",
                 "#00d1a0")


@dataclass(frozen=True)
class GridItem:
    """One panel of `prediction_grid`: image (H, W[, 3]), prob (H, W), optional gt (H, W)."""

    image: np.ndarray
    prob: np.ndarray
    gt: np.ndarray | None = None
    caption: str = ""


def _image(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) -> uint8 (H, W, 3) for imshow."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be (H, W) or (H, W, 3), got shape {image.shape}")
    return np.clip(np.round(image.astype(np.float32)), 0, 255).astype(np.uint8)


def _check_plane(name: str, array: np.ndarray | None, size: tuple[int, int]) -> None:
    if array is not None and tuple(np.shape(array)) != size:
        raise ValueError(
            f"{name} has shape {tuple(np.shape(array))} but the image is {size[0]}x{size[1]}: "
            "give it at the image's size"
        )


def _outline(ax, mask: np.ndarray, color: str, width: float = 1.4) -> None:
    """Draw the boundary of a binary (H, W) mask."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=width)


def _caption(ax, text: str, width: int = 34) -> None:
    if text:
        ax.set_title(textwrap.fill(text, width), fontsize=9)


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _legend(fig: Figure, with_gt: bool) -> None:
    handles = [Line2D([], [], color=PRED_COLOR, lw=2, label="prediction")]
    if with_gt:
        handles.insert(0, Line2D([], [], color=GT_COLOR, lw=2, label="ground truth"))
    fig.legend(handles=handles, loc="lower center", ncols=len(handles), frameon=False,
               fontsize=8)


def _save(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi)
    return fig


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _tint(ax, mask: np.ndarray, rgb: Sequence[float], outline: str) -> None:
    """Tint a binary (H, W) mask with `rgb` (0-1 floats) and outline it in `outline`."""
    tint = np.zeros((*mask.shape, 4), np.float32)
    tint[..., :3] = rgb
    tint[..., 3] = 0.35 * mask
    ax.imshow(tint, interpolation="nearest")
    _outline(ax, mask, outline, 1.0)


def draw_overlay(
    ax, image: np.ndarray, prob: np.ndarray, gt: np.ndarray | None = None, *,
    caption: str = "", threshold: float = 0.5,
) -> None:
    """Draw on `ax`: the image, prob >= threshold tinted and outlined green, gt in red."""
    rgb = _image(image)
    size = rgb.shape[:2]
    _check_plane("prob", prob, size)
    _check_plane("gt", gt, size)
    mask = np.asarray(prob) >= threshold
    ax.imshow(rgb, interpolation="antialiased")
    _tint(ax, mask, PRED_TINT, PRED_COLOR)
    if gt is not None:
        _outline(ax, gt, GT_COLOR)
    _caption(ax, caption)
    _bare(ax)


def overlay(
    image: np.ndarray, prob: np.ndarray, gt: np.ndarray | None = None, *,
    caption: str = "", threshold: float = 0.5, path: str | Path | None = None,
) -> Figure:
    """One panel: prediction (prob >= threshold) tinted green on the image, gt outlined red."""
    fig = _new_figure(PANEL_INCHES * 1.4, PANEL_INCHES * 1.4 + 0.5)
    ax = fig.add_axes((0.02, 0.08, 0.96, 0.82))
    draw_overlay(ax, image, prob, gt, caption=caption, threshold=threshold)
    _legend(fig, gt is not None)
    return _save(fig, path)


def prediction_grid(
    items: Sequence[GridItem], path: str | Path | None = None, *, ncols: int = 4,
    threshold: float = 0.5,
) -> Figure:
    """A grid of `overlay` panels, one per item, `ncols` wide."""
    if not items:
        raise ValueError("prediction_grid needs at least one item")
    ncols = max(1, min(ncols, len(items)))
    nrows = math.ceil(len(items) / ncols)
    panel = PANEL_INCHES * (1.4 if len(items) == 1 else 1.0)
    height = panel * nrows + 0.45
    fig = _new_figure(panel * ncols, height)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, item in zip(axes.flat, items):
        draw_overlay(ax, item.image, item.prob, item.gt, caption=item.caption,
                     threshold=threshold)
    for ax in list(axes.flat)[len(items):]:
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.5 / height, bottom=0.35 / height,
                        wspace=0.04, hspace=0.2)
    _legend(fig, any(item.gt is not None for item in items))
    return _save(fig, path)


def sampling_figure(
    image: np.ndarray,
    keep_masks: Sequence[np.ndarray],
    final_prob: np.ndarray,
    gt: np.ndarray | None = None,
    *,
    query: int = 0,
    path: str | Path | None = None,
    title: str = "",
    threshold: float = 0.5,
    ncols: int = 3,
) -> Figure:
    """Per decoder layer, the image tokens query `query` attended to; then the prediction.

    keep_masks: one (Q, h_l, w_l) bool array per layer (`Predictor.sampling`). Each layer
    panel shows the image with the tokens the query did not see dimmed and the gt outlined
    red. Layers fill rows of `ncols` (the paper visits 3 feature levels per round); the
    right-hand column holds the final prediction and the input.
    """
    if not keep_masks:
        raise ValueError("no keep masks: the model has no decoder layers to show")
    num_queries = keep_masks[0].shape[0]
    if not 0 <= query < num_queries:
        raise ValueError(
            f"query {query} does not exist: the model has queries 0..{num_queries - 1}"
        )
    rgb = _image(image)
    h, w = rgb.shape[:2]
    _check_plane("final_prob", final_prob, (h, w))
    _check_plane("gt", gt, (h, w))
    ncols = max(1, min(ncols, len(keep_masks)))
    nrows = math.ceil(len(keep_masks) / ncols)
    side = nrows * PANEL_INCHES
    height = side + 1.1  # room for the heading above and the legend below
    fig = _new_figure((ncols + 1) * PANEL_INCHES * 0.92, height)
    grid = fig.add_gridspec(max(nrows, 2), ncols + 1, left=0.01, right=0.99, wspace=0.05,
                            hspace=0.18, top=1 - 0.8 / height, bottom=0.3 / height)
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    for layer, keep in enumerate(keep_masks):
        ax = fig.add_subplot(grid[layer // ncols, layer % ncols])
        seen = np.asarray(keep[query], dtype=bool)
        shade = np.zeros((*seen.shape, 4), np.float32)
        shade[..., 3] = DIM_ALPHA * ~seen
        ax.imshow(rgb)
        ax.imshow(shade, extent=extent, interpolation="nearest")
        if gt is not None:
            _outline(ax, gt, GT_COLOR)
        ax.set_title(
            f"layer {layer + 1}: {seen.shape[0]}x{seen.shape[1]} tokens, {seen.mean():.0%} seen",
            fontsize=8,
        )
        _bare(ax)
    ax = fig.add_subplot(grid[0, ncols])
    draw_overlay(ax, rgb, final_prob, gt, threshold=threshold)
    ax.set_title("final prediction", fontsize=8)
    ax = fig.add_subplot(grid[1, ncols])
    ax.imshow(rgb)
    if gt is not None:
        _outline(ax, gt, GT_COLOR)
    ax.set_title("input", fontsize=8)
    _bare(ax)
    heading = f"Boltzmann sampling of query {query}: bright = attended, dark = masked out"
    fig.suptitle(f"{title}\n{heading}" if title else heading, fontsize=10)
    _legend(fig, gt is not None)
    return _save(fig, path)


def uncertainty_figure(
    image: np.ndarray, prob: np.ndarray, std: np.ndarray, gt: np.ndarray | None = None, *,
    caption: str = "", samples: int | None = None, threshold: float = 0.5,
    path: str | Path | None = None,
) -> Figure:
    """Three panels: the prediction overlay, the mean probability, the pixel-wise std."""
    rgb = _image(image)
    _check_plane("std", std, rgb.shape[:2])
    fig = _new_figure(3 * PANEL_INCHES + 1.6, PANEL_INCHES + 0.9)
    axes = fig.subplots(1, 3)
    draw_overlay(axes[0], rgb, prob, gt, threshold=threshold)
    axes[0].set_title("prediction", fontsize=9)
    panels = (
        (axes[1], prob, "mean probability", "viridis", 1.0),
        (axes[2], std, "std over draws", "magma", max(float(np.max(std)), 1e-6)),
    )
    for ax, values, name, cmap, vmax in panels:
        shown = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="antialiased")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, format="%.2g")
        bar.ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=9)
        _bare(ax)
    draws = f" ({samples} sampling draws)" if samples else ""
    fig.suptitle(textwrap.fill(f"{caption}{draws}", 90), fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.95, top=0.86, bottom=0.1, wspace=0.18)
    _legend(fig, gt is not None)
    return _save(fig, path)


def prompt_color(index: int) -> str:
    """The colour of prompt number `index` (0-based) in `prompts_overlay` and `probability_maps`."""
    return PROMPT_COLORS[index % len(PROMPT_COLORS)]


def prompts_overlay(
    image: np.ndarray, probs: np.ndarray, prompts: Sequence[str], *, threshold: float = 0.5,
    title: str = "", path: str | Path | None = None,
) -> Figure:
    """One panel: each prompt's mask (probs[p] >= threshold) tinted and outlined in its own
    colour (`prompt_color(p)`), with a legend of the prompts and their areas.

    probs: (P, H, W) at the image's size, one plane per prompt, in the order of `prompts`.
    """
    rgb = _image(image)
    probs = np.asarray(probs)
    if probs.ndim != 3 or len(probs) != len(prompts):
        raise ValueError(f"probs must be (P, H, W) for {len(prompts)} prompts, got {probs.shape}")
    _check_plane("probs[0]", probs[0], rgb.shape[:2])
    legend_rows = math.ceil(len(prompts) / 2)
    height = PANEL_INCHES * 1.6 + 0.25 * legend_rows + 0.4
    fig = _new_figure(PANEL_INCHES * 1.6, height)
    bottom = (0.25 * legend_rows + 0.1) / height
    ax = fig.add_axes((0.02, bottom, 0.96, 1 - bottom - 0.35 / height))
    ax.imshow(rgb, interpolation="antialiased")
    handles = []
    for p, (prob, prompt) in enumerate(zip(probs, prompts)):
        mask = prob >= threshold
        color = prompt_color(p)
        _tint(ax, mask, to_rgb(color), color)
        label = f"{prompt}: {int(mask.sum())} px ({mask.mean():.2%})"
        handles.append(Line2D([], [], color=color, lw=4, label=textwrap.shorten(label, 60)))
    _caption(ax, title, 60)
    _bare(ax)
    fig.legend(handles=handles, loc="lower center", ncols=min(2, len(handles)), frameon=False,
               fontsize=7)
    return _save(fig, path)


def probability_maps(
    probs: np.ndarray, prompts: Sequence[str], *, ncols: int = 3, path: str | Path | None = None,
) -> Figure:
    """One panel per prompt: its probability (P, H, W) in [0, 1] (viridis, one shared colour
    bar), titled with the prompt in its `prompts_overlay` colour."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or len(probs) != len(prompts) or not len(prompts):
        raise ValueError(f"probs must be (P, H, W) for {len(prompts)} prompts, got {probs.shape}")
    ncols = max(1, min(ncols, len(prompts)))
    nrows = math.ceil(len(prompts) / ncols)
    fig = _new_figure(PANEL_INCHES * ncols + 0.8, PANEL_INCHES * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for p, (ax, prob, prompt) in enumerate(zip(axes.flat, probs, prompts)):
        shown = ax.imshow(prob, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="antialiased")
        ax.set_title(textwrap.fill(prompt, 34), fontsize=9, color=prompt_color(p))
        _bare(ax)
    for ax in list(axes.flat)[len(prompts):]:
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.88, top=0.9, bottom=0.03, wspace=0.05, hspace=0.2)
    bar = fig.colorbar(shown, cax=fig.add_axes((0.9, 0.1, 0.02, 0.75)))
    bar.set_label("probability", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return _save(fig, path)


def to_array(fig: Figure) -> np.ndarray:
    """A figure rendered to an (H, W, 3) uint8 RGB array (at its dpi)."""
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg), "figures of this module draw with Agg"
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
