"""Atomic, self-describing checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts, so it loads with ``weights_only=True`` (no pickled code runs on load). It carries
its run config and every component's constructor config, so a generator can be rebuilt
from the file alone (``load_generator``)::

    {"format": FORMAT, "augforge_version": str, "config": RunConfig.to_dict(),
     "class_names": [...], "image_size": int, "latent_dim": int, "run_id": str | None,
     "step": int, "epoch": int,
     "generator": {"name": str, "config": dict, "state": state_dict},
     "discriminator": {...}, "g_ema": state_dict | None,
     "opt_g": ..., "opt_d": ..., "rng": {...}, "extra": {...}}

``rng`` is this process's RNG states as plain data: ``{"torch": ByteTensor, "cuda": ByteTensor |
None, "numpy": [name, keys list, pos, has_gauss, cached], "python": [version, state list,
gauss]}``. ``extra`` (written by ``augforge.train``) holds what an exact resume needs beyond
that: ``pos`` (batches consumed in ``epoch``), ``rng_per_rank`` (every rank's ``rng`` under
torchrun), ``scaler_g``/``scaler_d`` (fp16 GradScalers), ``history`` (the logged loss
curves), ``best`` (in-training evaluation: metric, value, step), the open metric windows
(``window``, ``epoch_acc``), ``world_size`` and ``run_dir``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from augforge.errors import AugforgeError

FORMAT = "augforge-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: temp file in the same folder, fsync, rename.

    A crash (even SIGKILL) mid-write leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AugforgeError(f"checkpoint {path} does not exist; pass the .pt file written by `augforge train`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, unsafe pickle
        raise AugforgeError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AugforgeError(f"{path} is not an augforge checkpoint (format {FORMAT!r} expected)")
    return state


def load_generator(path_or_state, ema: bool = True, map_location="cpu"):
    """Rebuild the generator from a checkpoint; returns ``(generator in eval mode, state)``.

    Uses the EMA weights when present and ``ema`` is true.
    """
    from augforge import registry

    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state, map_location)
    g = state["generator"]
    gen = registry.build("generator", g["name"], **g["config"])
    weights = state.get("g_ema") if ema and state.get("g_ema") is not None else g["state"]
    gen.load_state_dict(weights)
    return gen.eval(), state
