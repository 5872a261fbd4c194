"""``train.reuse_fake``: G's step learns from the fakes D just saw, so a step runs G forward
once instead of twice; it refuses the mode-seeking term (which needs its own pairs of z) and
resumes bitwise."""

from __future__ import annotations

import pytest

from augforge.checkpoint import load_checkpoint
from augforge.errors import ConfigError
from augforge.training.state import check_train_config

from _training import assert_same_weights, fake_cfg, run

QUIET = dict(train__sample_every=10**9, train__eval_every=0, train__diffaug="color,translation")


def test_reuse_fake_runs_one_generator_forward_per_step_fewer(tmp_path, fakes, monkeypatch):
    from augforge.testing import FakeGenerator

    calls = []
    forward = FakeGenerator.forward
    monkeypatch.setattr(FakeGenerator, "forward", lambda self, z, labels=None: calls.append(z.requires_grad) or forward(self, z, labels))
    counts = {}
    for reuse in (False, True):
        calls.clear()
        run(fake_cfg(tmp_path / str(reuse), train__reuse_fake=reuse, train__steps=5, train__n_critic=2, **QUIET))
        counts[reuse] = len(calls)
    # n_critic=2: 2 G forwards for D and 1 for G per step, one of D's kept for G with reuse_fake
    assert counts[False] - counts[True] == 5
    assert counts[False] >= 15


def test_reuse_fake_resumes_bitwise_and_differs_from_fresh_fakes(tmp_path, fakes):
    full = run(fake_cfg(tmp_path / "full", train__reuse_fake=True, **QUIET))
    part = run(fake_cfg(tmp_path / "r", train__reuse_fake=True, train__steps=4, **QUIET))
    resumed = run(fake_cfg(tmp_path / "r", train__reuse_fake=True, **QUIET), resume=part.run_dir)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert_same_weights(a, b)
    assert a["config"]["train"]["reuse_fake"] is True  # the checkpoint carries it
    fresh = load_checkpoint(run(fake_cfg(tmp_path / "fresh", **QUIET)).checkpoint)
    with pytest.raises(AssertionError):  # fresh z in G's step is a different training
        assert_same_weights(a, fresh, keys=("generator",))


def test_reuse_fake_refuses_the_mode_seeking_term(tmp_path):
    with pytest.raises(ConfigError, match="train.reuse_fake needs fresh pairs of z"):
        check_train_config(fake_cfg(tmp_path, train__reuse_fake=True, train__ms_weight=1.0).train)
