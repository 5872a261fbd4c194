"""Every RNG the loop touches, as checkpointable state: seeding, save/restore, a preserving context.

Exact resume rests on this: z, DiffAugment, dropout and the penalties draw from the global
torch/numpy/python (and CUDA) generators, whose states go into every checkpoint; side work
(sample grids, evaluation, the DDP probe) runs inside ``preserved_rng`` so it moves no stream.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch



def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] % 2**63)


def rng_state(device: torch.device) -> dict[str, Any]:
    """All global RNG states as tensors / plain lists, so the checkpoint loads with weights_only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
        "cuda": torch.cuda.getrng_state(device) if device.type == "cuda" else None,
    }
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@contextlib.contextmanager
def preserved_rng(device: torch.device):
    """Side work (sample grids, evaluation) must not move the training RNG streams."""
    saved = rng_state(device)
    try:
        yield
    finally:
        set_rng_state(saved, device)

