"""Figures for training and evaluation, drawn with matplotlib's Agg canvas (no display)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

GROUP_COLOURS = {"small": "tab:red", "large": "tab:blue"}


def plot_loss_curve(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss per logged step, validation loss and Dice per epoch (metrics.jsonl
    records with "kind" "train" or "val") -> a PNG at `path`."""
    train = [r for r in records if r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "val"]
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train],
                color="tab:gray", lw=1, label="train loss")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val],
                "o-", color="tab:orange", label="validation loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("Dice + BCE loss")
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [r["val_dice"] for r in val],
                 "s--", color="tab:green", label="validation Dice")
        ax2.set_ylabel("validation Dice")
        ax2.set_ylim(0, 1)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if handles:
        ax.legend(handles, labels, loc="upper right")
    ax.set_title("Training")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_dice_vs_size(samples: Sequence[dict[str, Any]], path: str | Path, *, small: float
                      ) -> Path:
    """Dice against object area (% of the image, log axis) for present targets -> PNG; a
    dotted line at the small/large threshold `small` (an area fraction)."""
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for group, colour in GROUP_COLOURS.items():
        pts = [s for s in samples if s["size"] == group]
        if pts:
            ax.scatter([100 * s["area"] for s in pts], [s["dice"] for s in pts], s=12,
                       alpha=0.6, color=colour, label=f"{group} (n={len(pts)})")
    ax.axvline(100 * small, color="k", ls=":", lw=1, label=f"{100 * small:g}% of the image")
    ax.set_xscale("log")
    ax.set_xlabel("object area (% of the image, log scale)")
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title("Dice against object size")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def plot_confusion(confusion: dict[str, dict[str, int]], path: str | Path) -> Path:
    """Prompted target (rows) against best-matching target (columns, "none" last), each row
    as shares of its prompts -> PNG. `confusion` as `grounding.summarize_grounding` gives."""
    rows = sorted(confusion)
    columns = sorted({c for counts in confusion.values() for c in counts} - {"none"} | set(rows))
    columns.append("none")
    shares = [[confusion[r].get(c, 0) / max(1, sum(confusion[r].values())) for c in columns]
              for r in rows]
    side = 0.32 * len(columns) + 3
    fig = Figure(figsize=(side, 0.32 * len(rows) + 2.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(shares):
        for j, v in enumerate(row):
            if v >= 0.05:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("best-matching annotated target")
    ax.set_ylabel("prompted target")
    ax.set_title("Grounding: where each prompt's prediction lands (% of its prompts)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
