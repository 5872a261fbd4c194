"""Run state: what a checkpoint holds besides weights, the config checks, and what may change on resume.

``RunState`` is the loop's mutable bookkeeping (position in the data, loss windows, history,
best evaluation, LeCam's anchors). ``checkpoint_state`` writes it with the weights, optimisers
and every RNG state; ``RunState.restore`` reads it back, so a resumed run continues bitwise.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


import torch

from augforge import __version__
from augforge.config import RunConfig
from augforge.errors import AugforgeError, ConfigError
from augforge.training.schedules import check_schedule

#: config keys that may change when a run is resumed (anything else must match the checkpoint)
RESUME_MUTABLE = (
    "train.steps", "train.device", "train.num_workers", "train.checkpoint_every", "train.log_every",
    "train.sample_every", "train.eval_every", "train.out_dir", "train.compile", "tracking.",
    "train.threads", "train.max_minutes", "train.eval_every_minutes", "train.eval_extra",
)
LOSS_KEYS = ("loss_d", "loss_g", "d_real", "d_fake")


def new_window() -> dict[str, Any]:
    """Sums of the loss values (``LOSS_KEYS`` order) and penalties since the last log step."""
    return {"sums": [0.0] * 4, "count": 0, "gp": 0.0, "r1": 0.0}


@dataclass
class RunState:
    step: int = 0
    epoch: int = 0
    pos: int = 0  # batches of the current epoch already consumed
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("step", *LOSS_KEYS)})
    best: dict[str, Any] = field(default_factory=dict)  # metric, value, step of best.pt
    epoch_acc: dict[str, Any] = field(default_factory=lambda: {"sums": [0.0] * 4, "count": 0})
    window: dict[str, Any] = field(default_factory=new_window)
    lecam: dict[str, float] = field(default_factory=lambda: {"real": 0.0, "fake": 0.0, "updates": 0})  # moving means of D's logits
    stop_reason: str | None = None
    # not checkpointed: the current log window's timing, epochs ended but not yet reported, the last grid
    win_time: dict[str, float] = field(default_factory=lambda: {"start": time.perf_counter(), "data": 0.0, "steps": 0})
    ended_epochs: list[int] = field(default_factory=list)
    last_sample: int = -10**9

    @classmethod
    def new(cls, eval_metric: str) -> "RunState":
        return cls(best={"metric": eval_metric, "value": None, "step": None})

    def restore(self, state: dict[str, Any]) -> None:
        """Position and bookkeeping from a checkpoint written by ``checkpoint_state``."""
        extra = state.get("extra", {})
        self.step, self.epoch, self.pos = int(state["step"]), int(state["epoch"]), int(extra.get("pos", 0))
        self.history = {k: list(v) for k, v in extra.get("history", self.history).items()}
        self.best = dict(extra.get("best", self.best))
        self.epoch_acc = extra.get("epoch_acc", self.epoch_acc)
        self.window = extra.get("window", self.window)
        self.lecam = dict(extra.get("lecam", self.lecam))

    def track(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """Add a penalty's value to the log window (its mean per G step is logged as ``name``)."""
        self.window[name] = self.window.get(name, 0.0) + float(value.detach())
        return value

    def add_losses(self, values: list[float]) -> None:
        """Add one step's (or a device window's) loss_d, loss_g, d_real, d_fake to the window and epoch sums."""
        self.window["sums"] = [a + b for a, b in zip(self.window["sums"], values)]
        self.epoch_acc["sums"] = [a + b for a, b in zip(self.epoch_acc["sums"], values)]

    def count_step(self, data_wait: float) -> None:
        self.window["count"] += 1
        self.epoch_acc["count"] += 1
        self.win_time["data"] += data_wait
        self.win_time["steps"] += 1

    def window_metrics(self, t, *, images_per_step: int, epoch_float: float) -> dict[str, float]:
        """Means over the log window (losses, enabled penalties, throughput); appends the loss history."""
        n = max(self.window["count"], 1)
        elapsed = max(time.perf_counter() - self.win_time["start"], 1e-9)
        m = dict(zip(LOSS_KEYS, (v / n for v in self.window["sums"])))
        m.update(images_per_s=self.win_time["steps"] * images_per_step / elapsed,
                 data_wait_share=self.win_time["data"] / elapsed, epoch=epoch_float)
        for key, weight in (("gp", t.gp_weight), ("r1", t.r1_gamma), ("lecam", t.lecam_weight), ("cr", t.cr_weight),
                            ("ssl", t.ssl_weight), ("ms", t.ms_weight), ("ac_d", t.ac_weight),
                            ("ac_g", t.ac_weight)):
            if weight > 0:
                m[key] = self.window.get(key, 0.0) / n
        for key in LOSS_KEYS:
            self.history[key].append(m[key])
        self.history["step"].append(self.step)
        self.win_time = {"start": time.perf_counter(), "data": 0.0, "steps": 0}
        return m

    def close_epoch(self) -> tuple[int, dict[str, float]]:
        """The oldest ended epoch (1-based) and its mean losses; resets the epoch sums."""
        done = self.ended_epochs.pop(0) + 1
        n = max(self.epoch_acc["count"], 1)
        em = {f"epoch_{k}": v / n for k, v in zip(LOSS_KEYS, self.epoch_acc["sums"])}
        self.epoch_acc = {"sums": [0.0] * 4, "count": 0}
        return done, em

    def improves(self, value: float | None, metric: str, direction: str) -> bool:
        """Record ``value`` as the best so far if it beats it (``direction``: minimize | maximize)."""
        if value is None or not math.isfinite(value):
            return False
        old = self.best.get("value")
        if old is not None and not (value < old if direction == "minimize" else value > old):
            return False
        self.best = {"metric": metric, "value": value, "step": self.step}
        return True


def checkpoint_state(cfg: RunConfig, class_names, nets, s: RunState, *, run_id, run_dir: Path, seconds: float,
                     rng: dict, rng_per_rank) -> dict[str, Any]:
    """Everything a checkpoint holds: config, weights, optimisers, RNG states, run state."""
    G, D, ema = nets.G, nets.D, nets.ema
    return {
        "augforge_version": __version__, "config": cfg.to_dict(), "class_names": class_names,
        "image_size": cfg.data.image_size, "latent_dim": nets.latent_dim, "run_id": run_id,
        "step": s.step, "epoch": s.epoch,
        "generator": {"name": cfg.model.generator, "config": dict(G.config), "state": G.state_dict()},
        "discriminator": {"name": cfg.discriminator_name, "config": dict(D.config), "state": D.state_dict()},
        "g_ema": ema.state_dict() if ema is not None else None,
        "opt_g": nets.opt_g.state_dict(), "opt_d": nets.opt_d.state_dict(), "rng": rng,
        "extra": {
            "pos": s.pos, "history": s.history, "best": s.best, "epoch_acc": s.epoch_acc, "window": s.window,
            "lecam": s.lecam, "train_seconds": seconds, "stop_reason": s.stop_reason,
            "scaler_g": nets.scaler_g.state_dict() if nets.fp16 else None,
            "scaler_d": nets.scaler_d.state_dict() if nets.fp16 else None,
            "rng_per_rank": rng_per_rank, "world_size": len(rng_per_rank) if rng_per_rank else 1, "run_dir": str(run_dir),
        },
    }


def check_train_config(t) -> None:
    """Refuse out-of-range ``train.*`` values before anything is built, naming the key."""
    for key in ("steps", "batch_size", "n_critic", "checkpoint_every", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 1")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay={t.ema_decay} must be in [0, 1)")
    if not (0.0 < t.topk_min <= 1.0 and 0.0 < t.topk_decay <= 1.0):
        raise ConfigError(f"train.topk_min={t.topk_min} and train.topk_decay={t.topk_decay} must be in (0, 1] (topk_min=1: off)")
    if t.cr_weight > 0 and not t.diffaug:
        raise ConfigError("train.cr_weight > 0 compares two augmentations of each image: set train.diffaug too, "
                          "e.g. --set train.diffaug=color,translation,cutout")
    if t.reuse_fake and t.ms_weight > 0:
        raise ConfigError("train.reuse_fake needs fresh pairs of z per class for train.ms_weight > 0; set one of them off")
    if t.budget_clock not in ("wall", "cpu"):
        raise ConfigError(f"train.budget_clock={t.budget_clock!r}: expected wall or cpu")
    try:
        check_schedule(t.lr_decay, t.lr_decay_start)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in ("lecam_weight", "cr_weight", "ssl_weight", "ac_weight", "ms_weight", "max_minutes", "eval_every_minutes", "threads"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 0")


def resolve_resume(resume: str | os.PathLike) -> Path:
    """``--resume`` accepts a checkpoint file or a run folder (then ``checkpoints/last.pt``).

    Load it with ``augforge.checkpoint.load_latest``, which falls back to ``last.prev.pt``.
    """
    from augforge.checkpoint import previous_path

    p = Path(resume)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file() and not previous_path(p).is_file():
        raise AugforgeError(f"--resume {resume}: no checkpoint there; pass a run folder with checkpoints/last.pt or a .pt file")
    return p


def check_resume_config(cfg: RunConfig, saved: RunConfig, run_dir: Path | None = None) -> None:
    new, old = cfg.flat(), saved.flat()
    if run_dir is not None:  # a hand-edited config.json would otherwise be overwritten without a word
        from augforge.runs import check_config_json

        check_config_json(run_dir, old, new, RESUME_MUTABLE)
    changed = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k) and not k.startswith(RESUME_MUTABLE))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume with a changed config ({detail}); only {', '.join(RESUME_MUTABLE)} may change. "
            f"Start a new run instead."
        )
