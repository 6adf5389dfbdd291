"""`Eta`: the line a training run prints once its first steps are timed."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm


class Eta:
    """One line, printed once the first steps of this invocation have been timed: the steps
    left of a step budget and the minutes they will take at the rate measured (the first
    `skip` steps, data loader start-up and kernel warm-up, are left out of the rate)."""

    def __init__(self, start: int, total: int | None, minutes: float | None,
                 elapsed: Callable[[], float], *, quiet: bool, skip: int = 5,
                 measure: int = 20):
        self.start, self.total, self.minutes, self.elapsed = start, total, minutes, elapsed
        self.quiet, self.skip, self.measure = quiet, skip, measure
        self.t0: float | None = None
        self.line: str | None = None  # what was printed

    def step(self, step: int) -> None:
        """Called after optimiser step `step` (counted over the whole run)."""
        done = step - self.start
        if self.line is not None or done < self.skip:
            return
        if self.t0 is None:
            self.t0 = self.elapsed()
            return
        if done < self.skip + self.measure:
            return
        now = self.elapsed()
        per_step = (now - self.t0) / (done - self.skip)
        if self.total is not None:
            left = (self.total - step) * per_step
            if self.minutes is not None:
                left = min(left, 60 * self.minutes - now)
            self.line = (f"step {step} of {self.total}, {per_step:.2f} s a step: training "
                         f"ends in about {max(left, 0) / 60:.1f} min")
        elif self.minutes is not None:
            self.line = (f"step {step}, {per_step:.2f} s a step: about "
                         f"{60 * self.minutes / per_step:.0f} steps in the {self.minutes:g}-"
                         f"minute budget")
        else:
            self.line = f"step {step}, {per_step:.2f} s a step"
        if not self.quiet:
            tqdm.write(self.line)
