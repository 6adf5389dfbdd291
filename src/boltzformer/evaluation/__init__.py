"""Evaluation: `evaluate` (Dice by size and target, objects, grounding, absent targets) and
its report (`write_report`); `evaluate_checkpoint` (the `evaluate` verb as a function),
`objects`, `grounding`, `report`, `plots` and `calibrate` (the size floor) beside it."""

from boltzformer.evaluation.evaluate import EvalResult, evaluate, write_report

__all__ = ["EvalResult", "evaluate", "write_report"]
