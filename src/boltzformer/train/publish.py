"""A trained checkpoint to the Hugging Face Hub (`boltzformer push-to-hub`): its model card's
facts gathered from its run folder and an evaluation's metrics.json, then the upload.

The checkpoint is loaded first (BoltzFormer, or the U-Net expert when its config.json says
so), so a broken one is refused with the same one-line `CheckpointError` as any load; the
model is then saved again with its card and uploaded (`push_to_hub`), the weights unchanged.
What the run folder does not say (a folder copied without its run, no evaluation) the card
says is unknown.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from boltzformer.modeling.boltzformer import BoltzFormer
from boltzformer.modeling.checkpoint import CONFIG_FILE, read_config
from boltzformer.modeling.config import BoltzFormerConfig
from boltzformer.modeling.model_card import CARD_FILE, CardFacts, write_card
from boltzformer.train.config import TrainConfig
from boltzformer.train.run_dir import (
    BEST,
    CONFIG_NAME,
    LAST,
    METRICS_NAME,
    SNAPSHOTS,
    read_records,
    resolve_checkpoint,
)

METRICS_FILE = "metrics.json"  # what `boltzformer evaluate` writes into its REPORT_DIR
_UNET_KEYS = {"targets", "encoder"}  # keys of a U-Net expert's config.json, not BoltzFormer's


def run_folder(checkpoint: Path) -> Path | None:
    """The training run folder a checkpoint folder belongs to (`best/`, `last/` or
    `snapshots/<minutes>min` under a folder with config.yaml); None when it has none."""
    folder = checkpoint.parent.parent if checkpoint.parent.name == SNAPSHOTS else \
        checkpoint.parent
    return folder if (folder / CONFIG_NAME).is_file() else None


def training_facts(checkpoint: Path) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(training data's name, rows) from the checkpoint's run folder: split, steps, epoch and
    validation Dice of this checkpoint as the run's metrics.jsonl records them; (None, ())
    when the checkpoint has no run folder."""
    run = run_folder(checkpoint)
    if run is None:
        return None, ()
    cfg = TrainConfig.from_yaml(run / CONFIG_NAME)
    name = Path(cfg.data.root).name if cfg.data.root else None
    rows: list[tuple[str, str]] = [
        ("split", f"{cfg.data.split} (validation: {cfg.data.val_fraction:.0%} of its images)")]
    records = read_records(run / METRICS_NAME) if (run / METRICS_NAME).is_file() else []
    vals = [r for r in records if r.get("kind") == "val"]
    if checkpoint.name == BEST:
        vals = [r for r in vals if r.get("best")]
    at = vals[-1] if checkpoint.name in (BEST, LAST) and vals else None
    if at is not None:
        rows += [("checkpoint", f"{checkpoint.name}/ at step {at['step']}, epoch {at['epoch']}"),
                 ("validation Dice", f"{at['val_dice']:.4f}")]
    else:
        rows.append(("checkpoint", f"{checkpoint.relative_to(run)}/"))
    steps = [r["step"] for r in records if "step" in r]
    if steps:
        rows.append(("steps in the run", str(max(steps))))
    return name, tuple(rows)


def _figure(value: Any) -> str | None:
    """A figure as the card prints it; None when it is missing or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def evaluation_figures(payload: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...], str]:
    """(figure rows, source sentence) of a `boltzformer evaluate` metrics.json payload:
    overall Dice, Dice by object size, objects, absent targets and Dice per target."""
    def get(*keys: str) -> Any:
        value: Any = payload
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    wanted = [
        ("samples", get("n_samples")),
        ("Dice (mean over present targets)", get("overall", "dice_mean")),
        ("failure rate", get("overall", "failure_rate")),
        *((f"Dice, {s} objects", get("size_strata", "weighted", s, "dice_mean"))
          for s in ("small", "tiny", "large")),
        ("object F1", get("objects", "overall", "f1")),
        ("object PQ", get("objects", "overall", "pq")),
        ("absent targets: false-positive rate", get("absent", "false_positive_rate")),
    ]
    by_target = get("by_target") or {}
    wanted += [(f"Dice, {name}", get("by_target", name, "dice_mean")) for name in by_target]
    rows = tuple((name, text) for name, value in wanted if (text := _figure(value)) is not None)
    source = (f"Measured by `boltzformer evaluate` on {payload.get('data', 'unknown data')}, "
              f"split {payload.get('split', '?')} (seed {payload.get('seed', '?')}, "
              f"threshold {payload.get('threshold', '?')}).")
    return rows, source


def find_metrics(checkpoint: Path, metrics: Path | None) -> Path | None:
    """The metrics.json to quote: `metrics` (the file, or a REPORT_DIR holding it), else one
    in the checkpoint folder or its run folder; None when there is none."""
    if metrics is not None:
        path = metrics / METRICS_FILE if metrics.is_dir() else metrics
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file; give the {METRICS_FILE} (or its "
                                    "folder) that `boltzformer evaluate --out` wrote")
        return path
    run = run_folder(checkpoint)
    for folder in (checkpoint, run):
        if folder is not None and (folder / METRICS_FILE).is_file():
            return folder / METRICS_FILE
    return None


def card_facts(
    checkpoint: Path, *, metrics: Path | None = None, license: str = "mit",
    repo_id: str | None = None,
) -> CardFacts:
    """What the card of `checkpoint` says beyond its config: its training (from its run
    folder) and its measured figures (from `find_metrics`)."""
    trained_on, training = training_facts(checkpoint)
    figures: tuple[tuple[str, str], ...] = ()
    source = None
    path = find_metrics(checkpoint, metrics)
    if path is not None:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not the JSON `boltzformer evaluate` writes ({err})") \
                from None
        if not isinstance(payload, dict):
            raise ValueError(f"{path}: not the JSON object `boltzformer evaluate` writes")
        figures, source = evaluation_figures(payload)
    return CardFacts(repo_id=repo_id, license=license, trained_on=trained_on,
                     training=training, figures=figures, figures_source=source)


def is_unet_checkpoint(checkpoint: Path) -> bool:
    """Whether a checkpoint folder's config.json is the U-Net expert's."""
    try:
        values = json.loads((checkpoint / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False  # BoltzFormer.from_pretrained names the problem
    return isinstance(values, dict) and values.keys() >= _UNET_KEYS


def push_checkpoint(
    checkpoint: Path, repo_id: str, *, private: bool = False,
    revision: str | None = None, token: str | None = None, metrics: Path | None = None,
    license: str = "mit",
) -> str:
    """Upload the checkpoint that `checkpoint` names (a checkpoint or run folder, as the
    other verbs read it: `resolve_checkpoint`) to Hub repository `repo_id`, with a model card
    of its run and evaluation (`card_facts`); the commit URL."""
    folder = resolve_checkpoint(checkpoint)
    facts = card_facts(folder, metrics=metrics, license=license, repo_id=repo_id)
    if is_unet_checkpoint(folder):
        from boltzformer.baselines.unet import UNetExpert

        return UNetExpert.from_pretrained(folder).push_to_hub(
            repo_id, private=private, revision=revision, token=token, card=facts)
    return BoltzFormer.from_pretrained(folder).push_to_hub(
        repo_id, private=private, revision=revision, token=token, card=facts)


def refresh_card(checkpoint: Path) -> Path | None:
    """Rewrite the model card of a checkpoint folder from its config.json as it is now (after
    `boltzformer calibrate` wrote a size floor into it) and its run (`card_facts`); the card's
    path, or None when the folder has no card to refresh."""
    if not (checkpoint / CARD_FILE).is_file():
        return None
    facts = card_facts(checkpoint)
    if is_unet_checkpoint(checkpoint):
        from boltzformer.baselines.unet import UNetBaselineConfig, UNetExpert

        unet = read_config(checkpoint / CONFIG_FILE, UNetBaselineConfig.from_dict)
        return write_card(checkpoint, UNetExpert.describe(unet), facts)
    config = read_config(checkpoint / CONFIG_FILE, BoltzFormerConfig.from_dict)
    return write_card(checkpoint, BoltzFormer.describe(config), facts)
