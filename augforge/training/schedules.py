"""Learning-rate schedules of the training loop: a factor on Adam's base rate by training progress.

Progress is the larger of the share of ``train.steps`` done and the share of the
``train.max_minutes`` budget spent, so a run stopped by its clock still anneals to its end.
Measured motivation (benchmarks/README.md, the recipe race): at a constant rate the LeCam +
top-k recipe's val KID was best at minute 20 of 42 and then jumped (0.63 at 25, 0.96 at 40);
a warm-down keeps the late steps from undoing the early ones.
"""

from __future__ import annotations

import math

#: name -> factor(u) for u in [0, 1], the position inside the decay phase
SCHEDULES = {
    "none": lambda u: 1.0,
    "linear": lambda u: 1.0 - u,
    "cosine": lambda u: 0.5 * (1.0 + math.cos(math.pi * u)),
}


def check_schedule(kind: str, start: float) -> None:
    """Fail loudly on an unknown schedule or a decay start outside [0, 1)."""
    if kind not in SCHEDULES:
        raise ValueError(f"train.lr_decay={kind!r}: expected one of {', '.join(SCHEDULES)}")
    if not 0.0 <= start < 1.0:
        raise ValueError(f"train.lr_decay_start={start} must be in [0, 1): the share of the run before the decay starts")


def lr_factor(progress: float, kind: str, start: float) -> float:
    """Factor (0..1) on the base learning rate at ``progress`` (0 = first step, 1 = budget spent)."""
    p = min(max(progress, 0.0), 1.0)
    if p <= start:
        return 1.0
    return SCHEDULES[kind]((p - start) / (1.0 - start))
