"""The training loop on the fake components: run folder, checkpoints, NaN guard, signals, report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from augforge.checkpoint import load_checkpoint, load_generator
from augforge.config import resolve
from augforge.errors import ConfigError, TrainingError
from augforge.plugins import hookimpl
from augforge.tracking import NullTracker

FAKE = {
    "data.name": "fake-blobs", "model.generator": "fake", "data.image_size": 16, "model.latent_dim": 8,
    "train.batch_size": 8, "train.steps": 12, "train.checkpoint_every": 4, "train.log_every": 2,
}


def fake_cfg(tmp_path, **over):
    return resolve("", {**FAKE, "train.out_dir": str(tmp_path / "runs"), **{k.replace("__", "."): v for k, v in over.items()}})


def run(cfg, **kw):
    from augforge.training import train

    kw.setdefault("tracker", NullTracker())
    return train(cfg, **kw)


def tensors_equal(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            tensors_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b)):
            tensors_equal(x, y, f"{path}[{i}]")


class Observer:
    """A plugin that records lifecycle hook calls and checks config.json exists at run start."""

    def __init__(self):
        self.calls = []

    @hookimpl
    def augforge_run_start(self, run):
        assert (run.run_dir / "config.json").is_file(), "config.json must exist before step 1"
        assert not (run.run_dir / "checkpoints" / "last.pt").exists()
        self.calls.append(("start", json.loads((run.run_dir / "config.json").read_text())))

    @hookimpl
    def augforge_epoch_end(self, run, epoch, metrics):
        self.calls.append(("epoch", epoch, dict(metrics)))

    @hookimpl
    def augforge_run_end(self, run, result):
        self.calls.append(("end", result.status, result.step))


@pytest.fixture
def observer(fakes):
    from augforge import plugins

    obs = Observer()
    plugins.register(obs, name="test-observer")
    yield obs
    plugins.get_plugin_manager().unregister(name="test-observer")


def test_run_folder_checkpoint_and_hooks(tmp_path, observer):
    cfg = fake_cfg(tmp_path, train__ema_decay=0.9, train__diffaug="color,translation,cutout", data__balance=True)
    result = run(cfg)
    assert result.status == "FINISHED" and result.step == 12
    d = result.run_dir
    assert d.parent == tmp_path / "runs"
    saved = json.loads((d / "config.json").read_text())
    assert saved["train"]["steps"] == 12 and saved["tracking"]["run_name"] == d.name
    assert (d / "splits.csv").is_file() and (d / "loss_curve.png").is_file()
    assert sorted(p.name for p in (d / "samples").glob("step_*.png"))
    assert result.checkpoint == d / "checkpoints" / "last.pt"
    # loads with weights_only=True (load_checkpoint uses it) and rebuilds the generator from the file alone
    state = torch.load(result.checkpoint, weights_only=True)
    assert state["step"] == 12 and state["g_ema"] is not None and state["class_names"] == ["nv", "mel"]
    gen, _ = load_generator(result.checkpoint)
    z, y = gen.example_inputs(3)
    assert gen(z, y).shape == (3, 3, 16, 16)
    # hooks: start (config.json already there), one epoch_end per epoch, end
    kinds = [c[0] for c in observer.calls]
    assert kinds[0] == "start" and kinds[-1] == "end" and observer.calls[-1] == ("end", "FINISHED", 12)
    epochs = [c[1] for c in observer.calls if c[0] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 2
    assert {"epoch_loss_d", "epoch_loss_g"} <= set(observer.calls[1][2])
    for key in ("loss_d", "loss_g", "d_real", "d_fake", "grad_norm_d", "grad_norm_g", "images_per_s", "data_wait_share"):
        assert np.isfinite(result.metrics[key]), key


def test_resume_in_process_is_bitwise_exact(tmp_path, fakes):
    over = dict(train__ema_decay=0.9, train__diffaug="color,translation,cutout", data__balance=True,
                train__r1_gamma=1.0, train__n_critic=2, data__augment="flip")
    full = run(fake_cfg(tmp_path, **over))
    part = run(fake_cfg(tmp_path, train__steps=5, **over))
    assert load_checkpoint(part.checkpoint)["step"] == 5
    resumed = run(fake_cfg(tmp_path, **over), resume=part.run_dir)
    assert resumed.run_dir == part.run_dir and resumed.step == 12
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("generator", "discriminator", "g_ema", "opt_g", "opt_d", "rng"):
        tensors_equal(a[key], b[key], key)
    assert a["extra"]["history"] == b["extra"]["history"]


def test_resume_refuses_a_changed_config(tmp_path, fakes):
    part = run(fake_cfg(tmp_path, train__steps=2))
    with pytest.raises(ConfigError, match="train.lr_g"):
        run(fake_cfg(tmp_path, train__lr_g=1e-3), resume=part.run_dir)


class NanDiscriminator:
    """Registers a discriminator whose logits turn NaN in step 7 (3 D calls a step)."""

    @hookimpl
    def augforge_register_discriminators(self):
        from augforge.testing import FakeDiscriminator

        class Nan(FakeDiscriminator):
            name = "nan-after"
            calls = 0

            def forward(self, images, labels=None):
                type(self).calls += self.training  # not the model check's eval-mode call before step 1
                out = super().forward(images, labels)
                return out * float("nan") if type(self).calls > 6 * 3 else out

        return [Nan]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, fakes):
    from augforge import plugins

    plugins.register(NanDiscriminator(), name="nan-plugin")
    try:
        cfg = fake_cfg(tmp_path, model__discriminator="nan-after", train__checkpoint_every=3)
        with pytest.raises(TrainingError, match=r"diverged at step 7.*last good checkpoint .*step 6"):
            run(cfg)
    finally:
        plugins.get_plugin_manager().unregister(name="nan-plugin")
        plugins.reset()
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["step"] == 6
    assert all(torch.isfinite(v).all() for v in state["generator"]["state"].values())


def test_sigint_writes_checkpoint_and_returns_killed(tmp_path, fakes, sigint_at_epoch):
    before = signal.getsignal(signal.SIGINT)
    with sigint_at_epoch(2):
        result = run(fake_cfg(tmp_path, train__steps=50, train__checkpoint_every=100))
    assert result.status == "KILLED" and 0 < result.step < 50
    assert load_checkpoint(result.checkpoint)["step"] == result.step
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


class Pruned(Exception):
    pass


def test_report_can_stop_the_run_and_best_checkpoint_is_kept(tmp_path, fakes, monkeypatch):
    import augforge.evaluation

    values = iter([5.0, 3.0, 4.0, 9.0])

    def fake_evaluator(cfg, real, device):
        def evaluate(generator):
            assert not generator.training
            torch.randn(100)  # consuming RNG here must not change training (checked by resume tests)
            return {"kid": next(values)}

        evaluate.direction = "minimize"
        return evaluate

    monkeypatch.setattr(augforge.evaluation, "make_training_evaluator", fake_evaluator)
    seen = []

    def report(step, metrics):
        seen.append((step, metrics["kid"]))
        if step == 8:
            raise Pruned()

    with pytest.raises(Pruned):
        run(fake_cfg(tmp_path, train__eval_every=2, train__checkpoint_every=100), report=report)
    assert seen == [(2, 5.0), (4, 3.0), (6, 4.0), (8, 9.0)]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["step"] == 4
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == 8  # written when report raised


def test_epoch_order_is_seeded_balanced_and_sharded():
    from augforge.training.batches import EpochOrder

    labels = np.array([0] * 90 + [1] * 10)
    a = EpochOrder(labels, 8, seed=3, balance=False)
    assert a.batches_per_epoch == 12 and np.array_equal(a.epoch(0), EpochOrder(labels, 8, 3, False).epoch(0))
    assert not np.array_equal(a.epoch(0), a.epoch(1))
    assert len(np.unique(a.epoch(0))) == 96  # a permutation, tail dropped
    bal = EpochOrder(labels, 10, seed=0, balance=True).epoch(0)
    share = (labels[bal] == 1).mean()
    assert 0.35 < share < 0.65  # rare class drawn about as often as the common one
    r0, r1 = EpochOrder(labels, 8, 0, False, rank=0, world=2).epoch(0), EpochOrder(labels, 8, 0, False, rank=1, world=2).epoch(0)
    assert r0.shape == r1.shape == (6, 8) and not set(r0.ravel()) & set(r1.ravel())
    tiny = EpochOrder(np.array([0, 1, 0]), 8, 0, False)
    assert tiny.epoch(0).shape == (1, 8)  # a dataset smaller than a batch is repeated


def test_amp_on_cpu_fails_loudly(tmp_path, fakes):
    with pytest.raises(ConfigError, match="needs CUDA"):
        run(fake_cfg(tmp_path, train__amp="fp16", train__device="cpu"))


def test_cli_dry_run_and_aliases(tmp_path):
    from augforge.training.cli import build_config

    cfg = build_config("smoke", ("train.lr_g=1e-3",), {"steps": 7, "image_size": 32, "classes": "mel,nv"})
    assert cfg.train.steps == 7 and cfg.train.lr_g == 1e-3 and cfg.dataset["classes"] == ["mel", "nv"]
    with pytest.raises(ConfigError, match="disagree"):
        build_config("", ("train.steps=5",), {"steps": 7})
    out = subprocess.run(
        [sys.executable, "-m", "augforge.cli", "train", "--preset", "smoke", "--steps", "9", "--set", "train.seed=4", "--dry-run"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["train"]["steps"] == 9 and cfg["train"]["seed"] == 4 and cfg["preset"] == "smoke"
