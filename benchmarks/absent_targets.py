"""The tables of absent_targets.md from run folders: a demo's output folder (metrics.json,
per_sample.csv, report.md) or a `boltzformer train` run folder with its test report in
eval/ (`boltzformer evaluate --out RUN/eval`), or such an evaluation folder itself (RUN/NAME,
for a run scored on another test split).

    python benchmarks/absent_targets.py RUN [RUN ...]
    python benchmarks/absent_targets.py --gate RUN    # a stricter existence threshold
    python benchmarks/absent_targets.py --mask-gate RUN  # a threshold on the mask score
    python benchmarks/absent_targets.py --per-target RUN [RUN ...]  # own-site absences
    python benchmarks/absent_targets.py --mean RUN [RUN ...]    # the rows and their mean
    python benchmarks/absent_targets.py --gated RUN [RUN ...]   # present prompts gated out
    python benchmarks/absent_targets.py --operating-points TARGET RUN [RUN ...]  # RUNs
        # scored with --existence-threshold 0: lower existence thresholds and score gates

A foreign prompt names a target of the other site (FOREIGN_CANDIDATES), e.g. a lung on an
abdomen slice; an own-site one a target of the image's site that it left out (a nodule, an
adrenal gland).
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import sys
from pathlib import Path

from boltzformer.data.phantoms import FOREIGN_CANDIDATES
from boltzformer.evaluation.evaluate import auroc, in_stratum
from boltzformer.modeling.existence import EXISTENCE_THRESHOLD


def _steps(run: Path) -> str:
    """The training steps: from a demo's report, else the last metrics.jsonl record of the run
    (or, for an evaluation folder given as RUN, of the run folder holding it; for a demo's
    expert/, of its U-Net's model/)."""
    report = run / "report.md"
    found = re.search(r"for (\d+) steps", report.read_text()) if report.is_file() else None
    if found:
        return found.group(1)
    logs = [p / "metrics.jsonl" for p in (run, run.parent, run / "model")
            if (p / "metrics.jsonl").is_file()]
    records = logs[0].read_text().splitlines() if logs else []
    last = json.loads(records[-1]) if records else {}
    return str(last.get("step", last.get("steps", "?")))


def _label(run: Path) -> str:
    """A row's name: the run folder's, with the evaluation folder's or the demo's expert/
    when one is given."""
    inner = (run / "metrics.json").is_file() and (
        (run.parent / "metrics.jsonl").is_file() or (run / "model" / "metrics.jsonl").is_file())
    return f"{run.parent.name}/{run.name}" if inner else run.name


def _scores_dir(run: Path) -> Path:
    """Where a run's test report lies: the run folder itself (a demo) or its eval/."""
    return run if (run / "metrics.json").is_file() else run / "eval"


def _rows(run: Path) -> list[dict[str, str]]:
    """A run's per_sample.csv rows."""
    with (_scores_dir(run) / "per_sample.csv").open() as f:
        return list(csv.DictReader(f))


def _foreign(row: dict[str, str]) -> bool:
    """Whether a row's target belongs to the other site (a lung asked on an abdomen slice)."""
    return row["target"] in FOREIGN_CANDIDATES[row["site"]]


def scores(run: Path) -> dict[str, float]:
    """A run's absent-prompt and Dice figures (shares in [0, 1]; NaN where it has none)."""
    m = json.loads((_scores_dir(run) / "metrics.json").read_text())
    absent, strata = m["absent"], m["size_strata"]["weighted"]
    exist = absent["existence"] or {}
    rows = [r for r in _rows(run) if r["size"] == "absent"]
    foreign = [r["false_positive"] == "True" for r in rows if _foreign(r)]
    own = [r["false_positive"] == "True" for r in rows if not _foreign(r)]
    nan = float("nan")
    def share(x: float | None) -> float:
        return nan if x is None else x

    return {"fp": share(absent["false_positive_rate"]), "foreign": sum(foreign),
            "foreign_n": len(foreign), "own": sum(own), "own_n": len(own),
            "area": share(absent["mean_pred_area"]), "auroc": share(exist.get("auroc")),
            "accuracy": share(exist.get("accuracy")), "tiny": strata["tiny"]["dice_mean"],
            "small": strata["small"]["dice_mean"], "large": strata["large"]["dice_mean"],
            "all": m["overall"]["dice_mean"], "prompt": m["grounding"]["prompt_accuracy"]}


def row(name: str, steps: str, v: dict[str, float]) -> str:
    """One Markdown table row of `scores` (or their mean over runs)."""
    def pct(x: float, digits: int = 1) -> str:
        return "–" if x != x else f"{100 * x:.{digits}f}"

    def fp(n: float, total: float) -> str:
        return f"{pct(n / max(1, total))} % ({n:g}/{total:g})" if total else "–"

    auroc = v["auroc"]
    return (f"| {name} | {steps} | {pct(v['fp'])} % | {fp(v['foreign'], v['foreign_n'])} | "
            f"{fp(v['own'], v['own_n'])} | {pct(v['area'], 2)} % | "
            f"{'–' if auroc != auroc else f'{auroc:.3f}'} | {pct(v['accuracy'])} | "
            f"{pct(v['tiny'])} | {pct(v['small'])} | {pct(v['large'])} | {pct(v['all'])} | "
            f"{pct(v['prompt'])} |")


def mean_row(runs: list[Path]) -> str:
    """The runs' mean as one row: each figure averaged over the runs, the foreign and
    own-site counts summed (so their share is over all the runs' absent prompts)."""
    each = [scores(run) for run in runs]
    summed = ("foreign", "foreign_n", "own", "own_n")
    v = {k: (sum(e[k] for e in each) if k in summed else sum(e[k] for e in each) / len(each))
         for k in each[0]}
    return row(f"mean of {len(runs)}", "/".join(_steps(run) for run in runs), v)


def gated(runs: list[Path]) -> None:
    """Present prompts per site that the existence head answered "absent" (probability
    below EXISTENCE_THRESHOLD): a head that gates out a whole site shows here."""
    print(f"| run | site | present prompts | gated out (existence < {EXISTENCE_THRESHOLD}) |")
    print("|---|---|---:|---:|")
    for run in runs:
        present = [r for r in _rows(run) if r["size"] != "absent"]
        for site in sorted({r["site"] for r in present}):
            here = [r for r in present if r["site"] == site]
            out = sum(float(r["existence"]) < EXISTENCE_THRESHOLD for r in here)
            print(f"| {run.name} | {site} | {len(here)} | {out} |")


def _figures(rows: list[dict[str, str]], kept: list[bool],
             target: str | None = None) -> dict[str, float]:
    """Shares in [0, 1] if only the `kept` answers of `rows` (per_sample.csv) stood and the
    others were empty masks: the absent prompts painted ("fp"), the mean score over every
    prompt ("score": evaluate's Dice, an absent one 1 when empty, what `boltzformer
    calibrate` maximises), the Dice of present tiny / small / all targets, and, with
    `target`, its Dice ("target") and the share of its present prompts left empty ("empty")."""
    present = [r["size"] != "absent" for r in rows]
    dice = [float(r["dice"]) if k else float(not p) for k, p, r in zip(kept, present, rows)]
    groups = {"tiny": [p and in_stratum({"area": float(r["area"]), "size": r["size"]}, "tiny")
                       for p, r in zip(present, rows)],
              "small": [r["size"] == "small" for r in rows], "all": present}
    if target is not None:
        groups["target"] = [p and r["target"] == target for p, r in zip(present, rows)]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    out = {name: mean([d for d, w in zip(dice, which) if w]) for name, which in groups.items()}
    out["fp"] = mean([float(k) for k, p in zip(kept, present) if not p])
    out["score"] = mean(dice)
    if target is not None:
        out["empty"] = mean([float(not k) for k, w in zip(kept, groups["target"]) if w])
    return out


def gate(run: Path, key: str = "existence",
         thresholds: tuple[float, ...] = (0.5, 0.8, 0.85, 0.9, 0.95)) -> None:
    """What a threshold on `key` would give, from `per_sample.csv`: a stricter existence
    threshold ("existence"), or one on each answer's own confidence ("mask_score", its mean
    probability where it paints). A present target below it loses its Dice, an absent one
    its false positive; the answers are the folder's (its gate and size floor applied)."""
    rows = _rows(run)
    for t in thresholds:
        v = _figures(rows, [float(r["pred_pixels"]) > 0 and float(r[key]) >= t for r in rows])
        print(f"{key} threshold {t}: absent FP {100 * v['fp']:.1f} %, tiny Dice "
              f"{100 * v['tiny']:.1f}, small {100 * v['small']:.1f}, all {100 * v['all']:.1f}")


def operating_points(runs: list[Path], target: str,
                     thresholds: tuple[float, ...] = (0.5, 0.4, 0.35, 0.3, 0.2, 0.1, 0.0),
                     min_scores: tuple[float, ...] = (0.0, 0.85, 0.9)) -> None:
    """Each pair of an existence threshold (also below 0.5) and a score gate, from folders
    scored with `--existence-threshold 0` (every answer before the head, size floor applied):
    an answer is kept when its existence and its mask score reach both (`_figures` says
    what is printed; "left empty": `target`'s present prompts answered with an empty mask,
    where evaluate's "missed" also counts a mask that misses the object). One table per
    run and, with several, one of their means."""
    points = [(t, g) for g in min_scores for t in thresholds]
    tables = []
    for run in runs:
        rows = _rows(run)
        tables.append([_figures(rows, [float(r["pred_pixels"]) > 0 and float(r["existence"]) >= t
                                       and float(r["mask_score"]) >= g for r in rows], target)
                       for t, g in points])
    if len(runs) > 1:
        tables.append([{k: sum(table[i][k] for table in tables) / len(tables) for k in tables[0][i]}
                       for i in range(len(points))])
    names = [str(run) for run in runs] + ([f"mean of {len(runs)}"] if len(runs) > 1 else [])
    for name, table in zip(names, tables):
        print(f"\n{name}\n\n| existence threshold | min score | absent FP | score, all prompts | "
              f"tiny | small | all | {target} | {target} left empty |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (t, g), v in zip(points, table):
            cells = " | ".join(f"{100 * v[k]:.1f}" for k in ("score", "tiny", "small", "all",
                                                              "target"))
            print(f"| {t:g} | {g:g} | {100 * v['fp']:.1f} % | {cells} | {100 * v['empty']:.1f} % |")


def per_target(runs: list[Path]) -> None:
    """Own-site absent prompts per target: how many, how many answered with a mask (summed
    over the runs), the mean existence probability on them against that on the same
    target's present prompts (equal: the head answers the target's base rate, not the
    image), how well the existence, the answer's mask score (evaluate's `mask_score`, its
    mean probability where it paints, before the head and floor; a dash for folders scored
    before it existed) and the predicted area separate the target's present prompts from its
    absent ones (AUROC pooled over the runs; 0.5: not at all), and the
    pixels painted on the false positives (median, range) beside those of the target on its
    present prompts (median of the ground truth); then the target's mean Dice on its present
    prompts, and its score over all its prompts (evaluate's per-item Dice: an absent one
    scores 1 when left empty, else 0), in %: a model that never paints the target scores
    its absent share."""
    print("| site | target | absent prompts | false positives | existence, absent | "
          "existence, present | existence AUROC | mask-score AUROC | area AUROC | "
          "painted pixels | true pixels | Dice, present | score, all prompts |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    absent: dict[tuple[str, str], list[dict]] = {}
    present: dict[tuple[str, str], list[dict]] = {}
    for r in (r for run in runs for r in _rows(run)):
        key = (r["site"], r["target"])
        (absent if r["size"] == "absent" else present).setdefault(key, []).append(r)
    for (site, target), rows in sorted(absent.items()):
        if _foreign(rows[0]):
            continue
        seen = present.get((site, target), [])
        fp = [r for r in rows if r["false_positive"] == "True"]
        painted = sorted(_values(fp, "pred_pixels"))
        painted_cell = (f"{statistics.median(painted):g} ({painted[0]:g}-{painted[-1]:g})"
                        if painted else "–")
        true_cell = f"{statistics.median(_values(seen, 'gt_pixels')):g}" if seen else "–"
        print(f"| {site} | {target} | {len(rows)} | {len(fp)} | "
              f"{_mean(_values(rows, 'existence'))} | {_mean(_values(seen, 'existence'))} | "
              f"{_separation(seen, rows, 'existence')} | "
              f"{_separation(seen, rows, 'mask_score')} | "
              f"{_separation(seen, rows, 'pred_pixels')} | {painted_cell} | {true_cell} | "
              f"{_percent(_values(seen, 'dice'))} | {_percent(_values(seen + rows, 'dice'))} |")


def _values(rows: list[dict], key: str) -> list[float]:
    """The rows' `key` as numbers; NaN where a row has none (an older per_sample.csv)."""
    return [float(r.get(key) or "nan") for r in rows]


def _mean(xs: list[float]) -> str:
    """The mean to two decimals; a dash for none, or for NaN (a model without the head)."""
    return f"{sum(xs) / len(xs):.2f}" if xs and xs[0] == xs[0] else "–"


def _percent(xs: list[float]) -> str:
    """The mean in % to one decimal; a dash for none."""
    return f"{100 * sum(xs) / len(xs):.1f}" if xs else "–"


def _separation(present: list[dict], absent: list[dict], key: str) -> str:
    """AUROC of `key` between present and absent rows; a dash where it cannot be scored."""
    score = auroc(_values(present, key) + _values(absent, key),
                  [True] * len(present) + [False] * len(absent))
    if score != score or _mean(_values(absent, key)) == "–":
        return "–"
    return f"{score:.2f}"


if __name__ == "__main__":
    if sys.argv[1] == "--gate":
        gate(Path(sys.argv[2]))
        sys.exit()
    if sys.argv[1] == "--mask-gate":
        gate(Path(sys.argv[2]), "mask_score", (0.0, 0.7, 0.75, 0.8, 0.85, 0.9))
        sys.exit()
    if sys.argv[1] == "--operating-points":
        operating_points([Path(name) for name in sys.argv[3:]], sys.argv[2])
        sys.exit()
    if sys.argv[1] == "--per-target":
        per_target([Path(name) for name in sys.argv[2:]])
        sys.exit()
    if sys.argv[1] == "--gated":
        gated([Path(name) for name in sys.argv[2:]])
        sys.exit()
    average = sys.argv[1] == "--mean"
    names = sys.argv[2:] if average else sys.argv[1:]
    print("| run | steps | absent FP | foreign FP | own-site FP | mean area (absent) | "
          "existence AUROC | existence acc. | tiny | small | large | all | prompt acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        print(row(_label(Path(name)), _steps(Path(name)), scores(Path(name))))
    if average:
        print(mean_row([Path(name) for name in names]))
