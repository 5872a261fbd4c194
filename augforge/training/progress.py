"""What the console shows: a tqdm bar on a terminal, a log line every 30 s otherwise, and the
message of a diverged run."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """tqdm bar on a terminal (step, images/s, losses, ETA); a log line every 30 s otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, images_per_step: int, budget=None):
        """``budget``: the run's ``Budget``; with ``train.max_minutes`` set, the ETA is whichever ends first."""
        self.enabled, self.total, self.start, self.ips, self.budget = enabled, total, start, images_per_step, budget
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.losses = ""
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, step_time: float, vals) -> None:
        if not self.enabled:
            return
        if vals is not None:
            d, g = vals[0].item(), vals[1].item()
            self.losses = f"loss_d={d:.3f} loss_g={g:.3f}"
        now = time.perf_counter()
        rate = (step - self.start) / max(now - self.t0, 1e-9)  # steps/s since start (or resume)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if vals is not None:
                self.bar.set_postfix_str(f"{rate * self.ips:.1f} img/s {self.losses}", refresh=False)
            return
        if now - self.last_line >= 30 or step == self.total:
            self.last_line = now
            print(f"step {step}/{self.total} {rate * self.ips:.1f} img/s ({rate:.3f} steps/s) {self.losses} "
                  f"ETA {self.eta(step, rate, now) / 60:.1f} min", file=sys.stderr, flush=True)

    def eta(self, step: int, rate: float, now: float) -> float:
        """Wall seconds left: to the last step, or to the end of the minutes budget if that comes first.

        The budget may count CPU seconds (``train.budget_clock=cpu``), so its remainder is turned
        into wall seconds at the ratio measured since the loop started.
        """
        left = (self.total - step) / max(rate, 1e-9)
        budget_left = self.budget.left() if self.budget is not None else None
        if budget_left is not None:
            used = self.budget.seconds() - self.budget.before  # budget seconds of this session, same span as now - t0
            left = min(left, budget_left * (now - self.t0) / max(used, 1e-9))
        return left

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()



def nan_message(step, vals, saved_step, last_path, t, exact: bool) -> str:
    names = ("loss_d", "loss_g", "d_real", "d_fake")
    bad = ", ".join(f"{n}={v}" for n, v in zip(names, vals) if not math.isfinite(v))
    when = f"at step {step}" if exact else f"by step {step} (checked every train.log_every={t.log_every} steps)"
    kept = (f"the last good checkpoint is {last_path} (step {saved_step})" if saved_step is not None
            else "no checkpoint had been written yet")
    return (f"training diverged {when}: {bad}; {kept} and was not overwritten. "
            f"Try a lower train.lr_d/lr_g, train.amp=off, a gradient penalty (train.gp_weight) or R1 (train.r1_gamma).")

