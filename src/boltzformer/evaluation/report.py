"""report.md of an evaluation: Markdown tables of the metrics `evaluate` aggregates.

Sections: settings, overall Dice, the size strata (paper Table 2, with the tiny sub-stratum),
breakdowns per data set, modality and target, grounding, objects (detection and panoptic
quality), volumes (3D Dice) and absent targets. Dice is in %, mean (std).
"""

from __future__ import annotations

import math
from typing import Any


def render_markdown(metrics: dict[str, Any], settings: dict[str, Any], *, scatter: str) -> str:
    """The report of `metrics` (as `evaluate` returns them), run with `settings` (listed
    first: checkpoint, seed, ...); `scatter` is the file name of the Dice-vs-size plot."""
    m = metrics
    strata = m["size_strata"]
    lines = ["# BoltzFormer evaluation", ""]
    lines += [f"- {key}: `{value}`" for key, value in settings.items()]
    lines += [
        f"- samples: {m['n_samples']} ({m['n_present']} present targets, "
        f"{m['n_absent']} absent)",
        "",
        "Dice is in %, mean (std); failures are present targets missed completely.",
        "",
        "## Overall",
        "",
        *_table(["", "n", "Dice", "failure rate"], [_stat_row("all present", m["overall"])]),
        "",
        "## By object size (paper Table 2)",
        "",
        f"Small: < {strata['threshold']:.0%} of the image area; tiny: < "
        f"{100 * strata.get('tiny_threshold', math.nan):g}%, a part of small. Weighted: the "
        "average over data sets weighted by each stratum's share of the data set.",
        "",
        *_table(
            ["stratum", "n", "Dice", "failure rate"],
            [_stat_row(name, s) for name, s in strata["weighted"].items()],
        ),
        "",
        *_table(
            ["data set", "stratum", "share", "n", "Dice", "failure rate"],
            [
                [name, stratum, f"{s['share']:.1%}", *_stat_row("", s)[1:]]
                for name, d in strata["per_dataset"].items()
                for stratum, s in d.items()
            ],
        ),
        "",
        f"![Dice against object size]({scatter})",
        "",
    ]
    for title, key in (("data set", "by_dataset"), ("modality", "by_modality"),
                       ("target", "by_target")):
        lines += [f"## By {title}", "",
                  *_table([title, "n", "Dice", "failure rate"],
                          [_stat_row(k, v) for k, v in m[key].items()]), ""]
    lines += _grounding_section(m.get("grounding"))
    lines += _objects_section(m.get("objects"))
    lines += _volumes_section(m.get("volumes"))
    absent = m["absent"]
    lines += ["## Absent targets", ""]
    if absent["n"]:
        lines += [
            f"{absent['n']} absent targets: {absent['correct']} correctly empty "
            f"({absent['correct_rate']:.1%}), {absent['false_positive']} false positives "
            f"({absent['false_positive_rate']:.1%}); mean predicted area "
            f"{_pct(absent.get('mean_pred_area'))} of the image.",
            "",
            *_table(["target", "n", "false positives"],
                    [[k, v["n"], v["false_positive"]] for k, v in absent["by_target"].items()]),
        ]
    else:
        lines.append("None in this split.")
    exist = absent.get("existence")
    if exist:
        gate = settings.get("existence_threshold", 0.5)
        lines += ["", f"Existence output ({exist['n']} prompts, {exist['n_absent']} absent; "
                  f"an answer below {gate:g} is an empty mask): AUROC "
                  f"{exist['auroc']:.3f}, accuracy at 0.5 {_pct(exist['accuracy'])}."]
    return "\n".join(lines) + "\n"


def _pct(v: float | None) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.1f} %"


def _grounding_section(g: dict[str, Any] | None) -> list[str]:
    """Prompt accuracy, hedging and the per-target confusion, when grounding was measured."""
    if not g or not g["n"]:
        return []
    return [
        "## Grounding: does the prediction follow the prompt?",
        "",
        "For each present target, the image's annotated target that the prediction overlaps "
        "most (\"none\": it overlaps none). Hedging: mean Dice between an image's predictions "
        "for different prompts (0: each prompt its own object, 100 %: the same mask for all); "
        "the ground truth's own figure is what a perfect model scores.",
        "",
        f"- prompt accuracy: **{_pct(g['prompt_accuracy'])}** of {g['n']} present targets",
        f"- hedging: **{_pct(g['hedging'])}** over {g['hedging_pairs']} pairs of prompts "
        f"(ground truth: {_pct(g['hedging_gt'])})",
        "",
        *_table(["prompted target", "n", "prompt accuracy", "most common other match"],
                [[t, v["n"], _pct(v["accuracy"]), v["most_common_wrong"] or "–"]
                 for t, v in g["by_target"].items()]),
        "",
        "![prompted target against best-matching target](confusion.png)",
        "",
    ]


_OBJECT_HEADER = ["TP", "FP", "FN", "precision", "recall", "F1 (DQ)", "SQ", "PQ"]


def _object_row(name: str, s: dict[str, Any]) -> list[Any]:
    return [name, s["tp"], s["fp"], s["fn"],
            *(_pct(s[k]) for k in ("precision", "recall", "f1", "sq", "pq"))]


def _objects_section(o: dict[str, Any] | None) -> list[str]:
    """Detection and panoptic quality: overall by object size, per target, per data set."""
    if not o or not o["n_images"]:
        return []
    where = {"original": "at each mask's original size",
             "model": "at the model's input size", "mixed": "at the mask's original size where "
             "the data set gives its file, else at the model's input size"}[o["scored_at"]]
    size_rows = [_object_row(f"objects {name} of the image", s)
                 for name, s in o["overall"]["by_size"].items()]
    lines = [
        "## Objects",
        "",
        "Objects are the ground truth's instances (its instance map where the data set has "
        "one, else its connected components, 8-connectivity) and the prediction's connected "
        f"components, {where}. A predicted object matches a true one at IoU ≥ "
        f"{o['iou_threshold']:g}, one to one. TP, FP, FN and the IoUs are summed over all "
        "images of a row (data-set level): F1 = DQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU "
        "of the matches, PQ = DQ × SQ. By size: true objects (TP, FN) by their own area, "
        "unmatched predictions (FP) by theirs.",
        "",
        *_table(["", *_OBJECT_HEADER], [_object_row("all objects", o["overall"]), *size_rows]),
        "",
        *_table(["target", *_OBJECT_HEADER],
                [_object_row(k, v) for k, v in o["by_target"].items()]),
        "",
    ]
    if len(o["by_dataset"]) > 1:
        lines += [*_table(["data set", *_OBJECT_HEADER],
                          [_object_row(k, v) for k, v in o["by_dataset"].items()]), ""]
    return lines


def _volumes_section(v: dict[str, Any] | None) -> list[str]:
    """3D Dice per target (over cases) and per case and target."""
    if not v:
        return []
    return [
        "## Volumes (3D Dice)",
        "",
        f"{v['n_cases']} cases cut from volumes: Dice of the stacked slices (counts summed "
        "over a case's slices in this split, at the slices' original size). Per target: mean "
        "(std) over the cases where it is present.",
        "",
        *_table(["target", "cases", "3D Dice"],
                [[t, s["n"], f"{100 * s['dice_mean']:.1f} ({100 * s['dice_std']:.1f})"]
                 for t, s in v["by_target"].items()]),
        "",
        *_table(["data set", "case", "target", "slices", "true voxels", "predicted voxels",
                 "3D Dice"],
                [[c["dataset"], c["case"], c["target"], c["slices"], c["gt_voxels"],
                  c["pred_voxels"], f"{100 * c['dice']:.1f}"] for c in v["cases"]]),
        "",
    ]


def _stat_row(name: str, s: dict[str, Any]) -> list[Any]:
    if not s["n"]:
        return [name, 0, "–", "–"]
    return [name, s["n"], f"{100 * s['dice_mean']:.1f} ({100 * s['dice_std']:.1f})",
            f"{s['failure_rate']:.1%}"]


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def json_safe(value: Any) -> Any:
    """NaN (an empty group) becomes null so metrics.json is standard JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
