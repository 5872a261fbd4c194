"""Helpers for tests that train the fake components for a few steps (register them with the
``fakes`` fixture): a tiny config, a run without tracking, a tracker that keeps what is logged,
and the bitwise weight comparison of a resumed run."""

from __future__ import annotations

import torch

from augforge.config import resolve
from augforge.tracking import NullTracker

FAKE = {
    "data.name": "fake-blobs", "model.generator": "fake", "data.image_size": 16, "model.latent_dim": 8,
    "train.batch_size": 8, "train.steps": 12, "train.checkpoint_every": 4, "train.log_every": 2,
}


def fake_cfg(tmp_path, preset: str = "", **over):
    """``FAKE`` (under ``preset``, if any) writing to ``tmp_path/runs``; ``a__b=v`` sets ``a.b``."""
    return resolve(preset, {**FAKE, "train.out_dir": str(tmp_path / "runs"), **{k.replace("__", "."): v for k, v in over.items()}})


def run(cfg, **kw):
    from augforge.training import train

    kw.setdefault("tracker", NullTracker())
    return train(cfg, **kw)


class Keep(NullTracker):
    """Keeps the last value of every metric logged."""

    def __init__(self):
        super().__init__()
        self.logged = {}

    def log_metrics(self, metrics, step=None):
        self.logged.update(metrics)


def assert_same_weights(a: dict, b: dict, keys=("generator", "discriminator")) -> None:
    """Every tensor of ``a[key]["state"]`` equals ``b``'s bitwise (two loaded checkpoints)."""
    for key in keys:
        for name, x in a[key]["state"].items():
            assert torch.equal(x, b[key]["state"][name]), f"{key}/{name}"
