"""The run's clock: the minutes budget (``train.max_minutes``), timed evaluations, run progress.

``train.budget_clock=wall`` counts wall seconds; ``cpu`` counts this process's CPU seconds (all
threads), which is fair when several runs share the cores. Either way the budget counts the
loop only (not decoding or building the detector) and carries over resumes.
"""

from __future__ import annotations

import time

#: the wall clock of the budget, in seconds (tests substitute it)
wall_clock = time.monotonic


class Budget:
    def __init__(self, t, before: float = 0.0):
        """``t``: the run's ``TrainConfig``; ``before``: seconds trained by earlier sessions (resume)."""
        self.t = t
        self.tick = time.process_time if t.budget_clock == "cpu" else wall_clock
        self.before = before
        self.start = self.tick()
        self.next_eval = 0.0

    def begin(self) -> None:
        """Start counting (the loop starts now) and schedule the first timed evaluation."""
        self.start = self.tick()
        self.next_eval = self.seconds() + 60.0 * self.t.eval_every_minutes

    def seconds(self) -> float:
        """Seconds (wall or CPU) this run has trained, earlier sessions included."""
        return self.before + self.tick() - self.start

    def left(self) -> float | None:
        """Seconds (wall or CPU) left of ``train.max_minutes``; ``None`` when the run has no budget."""
        return max(60.0 * self.t.max_minutes - self.seconds(), 0.0) if self.t.max_minutes > 0 else None

    def spent(self) -> bool:
        return self.t.max_minutes > 0 and self.seconds() >= 60.0 * self.t.max_minutes

    def eval_due(self) -> bool:
        return self.t.eval_every_minutes > 0 and self.seconds() >= self.next_eval

    def evaluated(self) -> None:
        self.next_eval = self.seconds() + 60.0 * self.t.eval_every_minutes

    def progress(self, step: int) -> float:
        """Share of the run done: steps, or the minutes budget if that ends first (the LR schedule's x)."""
        by_time = self.seconds() / (60.0 * self.t.max_minutes) if self.t.max_minutes > 0 else 0.0
        return max(step / self.t.steps, by_time)


def stop_detail(reason: str | None, step: int, t, seconds: float, best: dict) -> str:
    """One sentence for the run's ``stop_detail`` tag: why it ended, when, what was kept."""
    kept = f"; best.pt is step {best['step']} ({best['metric']} {best['value']:.4g})" if best.get("value") is not None else ""
    why = {"budget": f"{t.budget_clock} budget of {t.max_minutes:g} min reached", "steps": f"all {t.steps} steps done"}.get(str(reason), str(reason))
    return f"{why} at step {step} after {seconds / 60.0:.1f} min of training{kept}"
