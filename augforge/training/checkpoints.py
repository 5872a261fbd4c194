"""Writing a run's checkpoints: ``last.pt`` (periodic, on a signal, at the end) and ``best.pt``.

A checkpoint holds the config, weights, optimisers, every RNG state and the run state
(``state.checkpoint_state``), is written atomically (``augforge.checkpoint.save_checkpoint``),
and is never written over with non-finite weights.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from augforge import checkpoint as checkpoint_io  # looked up per call: fault-injection tests wrap save_checkpoint
from augforge.errors import TrainingError
from augforge.grid import loss_curve_png
from augforge.training.distributed import sync_buffers
from augforge.training.rng import rng_state
from augforge.training.state import checkpoint_state


class Checkpointer:
    def __init__(self, cfg, class_names, nets, s, dist, device, run_dir: Path, budget, saved_step: int | None):
        self.cfg, self.class_names, self.nets, self.s, self.dist, self.device = cfg, class_names, nets, s, dist, device
        self.run_dir, self.budget = run_dir, budget
        self.last, self.best = run_dir / "checkpoints" / "last.pt", run_dir / "checkpoints" / "best.pt"
        self.saved_step = saved_step  # step of the last good last.pt (None: none yet)
        self.run_id: str | None = None
        self._curve_at = time.monotonic()

    def write(self, path: Path | None = None) -> Path:
        """Write ``path`` (default ``last.pt``); collective under torchrun: every rank calls it."""
        path = path or self.last
        s, nets, dist = self.s, self.nets, self.dist
        if "dev" in s.window:  # CUDA: fold the on-device window sums in before saving
            s.add_losses(s.window.pop("dev").tolist())
        sync_buffers(dist, nets.G, nets.D, nets.ema)
        rng = rng_state(self.device)
        per_rank = None
        if dist.enabled:
            per_rank = [None] * dist.world
            torch.distributed.all_gather_object(per_rank, rng)
        state = checkpoint_state(self.cfg, self.class_names, nets, s, run_id=self.run_id, run_dir=self.run_dir,
                                 seconds=self.budget.seconds(), rng=rng, rng_per_rank=per_rank)
        if dist.main:
            bad = [n for n, p in nets.G.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise TrainingError(f"generator weights are not finite ({bad[0]}, ...); refusing to overwrite {path}")
            checkpoint_io.save_checkpoint(path, state)
            if path == self.last:
                self.saved_step = s.step
                if time.monotonic() - self._curve_at > 300:  # matplotlib costs ~0.5 s: not every checkpoint
                    self._curve_at = time.monotonic()
                    self.loss_curve()
        dist.barrier()
        return path

    def loss_curve(self) -> Path:
        path = self.run_dir / "loss_curve.png"
        loss_curve_png(self.s.history, path, title=f"{self.run_dir.name} (step {self.s.step})")
        return path
