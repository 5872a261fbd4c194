"""Filtered evaluation: `augforge evaluate --filter` scores what `augforge generate --filter` would write."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from augforge import config, registry
from augforge.checkpoint import save_checkpoint
from augforge.errors import AugforgeError
from augforge.evaluation.filtering import filter_pool
from augforge.interfaces import ImageSet

FAKE = {
    "data.name": "fake-blobs", "dataset.n_per_class": "40", "dataset.size": "32", "data.image_size": "16",
    "data.val_fraction": "0.2", "data.test_fraction": "0.25", "model.generator": "fake", "model.latent_dim": "8",
}


class Brightness(torch.nn.Module):
    """A stand-in discriminator: the brighter the image, the more 'real'."""

    conditional = False

    def forward(self, x, y=None):
        return x.mean(dim=(1, 2, 3))


def test_filter_pool_keeps_exactly_the_best_scored_share_per_class():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = np.repeat([0, 1], 10)
    pool = ImageSet(images, labels, ["nv", "mel"])
    kept, notes = filter_pool(pool, [4, 3], ("realism",), seed=0, device="cpu", discriminator=Brightness())
    brightness = images.reshape(20, -1).mean(1)
    want = np.concatenate([np.argsort(-brightness[:10])[:4], 10 + np.argsort(-brightness[10:])[:3]])
    assert sorted(map(tuple, kept.images.reshape(len(kept.images), -1)[:, :4])) == sorted(
        map(tuple, images[want].reshape(len(want), -1)[:, :4]))
    assert list(np.bincount(kept.labels)) == [4, 3] and notes == {"near_copies_dropped": 0, "shortfall": 0}
    again, _ = filter_pool(pool, [4, 3], ("realism",), seed=0, device="cpu", discriminator=Brightness())
    assert np.array_equal(again.images, kept.images)  # deterministic


def test_realism_filter_without_a_discriminator_is_refused_with_the_fix():
    pool = ImageSet(np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), ["nv", "mel"])
    with pytest.raises(AugforgeError, match="realism filtering needs the discriminator"):
        filter_pool(pool, [1, 1], ("realism",), seed=0, device="cpu")


def test_cli_evaluate_filtered_samples_keeps_n_per_class_and_says_so(fakes, tmp_path, monkeypatch, capsys):
    from augforge.cli import main

    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 3, "batch_size": 16, "patience": 2, "epoch_size": 0})
    cfg = config.resolve(overrides=FAKE)
    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    d = registry.build("discriminator", "fake", image_size=16, num_classes=2)
    ckpt = save_checkpoint(tmp_path / "last.pt", {
        "config": cfg.to_dict(), "class_names": ["nv", "mel"], "image_size": 16, "latent_dim": 8, "run_id": None, "step": 1,
        "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": None,
        "discriminator": {"name": "fake", "config": d.config, "state": d.state_dict()}})
    out = tmp_path / "report"
    main(["evaluate", "--checkpoint", str(ckpt), "--metrics", "detection-rate", "--n-per-class", "6", "--out", str(out),
          "--no-track", "--filter", "realism,label,novelty", "--keep", "0.5"])
    assert "detection_rate" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["filters"] == ["realism", "label", "novelty"] and summary["keep"] == 0.5
    assert "filtered: every draw oversampled by 1/0.5" in (out / "report.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["filter_shortfall"] == 0.0  # 6 per class kept out of 12 drawn
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--checkpoint", str(ckpt), "--filter", "sharpness", "--no-track"])
    assert exc.value.code != 0


def test_evaluator_tags_reach_the_tracked_run(fakes, tmp_path, monkeypatch):
    """EvalResult.tags (e.g. the policy study's recommended policy) are tagged augforge.eval.<name> on the run."""
    import mlflow

    from augforge import plugins
    from augforge.evaluation import evaluate_checkpoint
    from augforge.interfaces import EvalResult, Evaluator
    from augforge.plugins import hookimpl
    from augforge.tracking import MlflowTracker

    class Recommends(Evaluator):
        name = "recommends"
        objective = "recommends_score"

        def evaluate(self, real_train, generated, real_test, context):
            return EvalResult({"recommends_score": 1.0}, tags={"recommended_policy": "balanced:filtered"})

    class Plugin:
        @hookimpl
        def augforge_register_evaluators(self):
            return [Recommends]

    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 1, "batch_size": 16, "patience": 1, "epoch_size": 0})
    cfg = config.resolve(overrides=FAKE)
    tracker = MlflowTracker("", "augforge").start(run_name="training")
    run_id = tracker.run_id
    tracker.end("FINISHED")
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    ckpt = save_checkpoint(tmp_path / "last.pt", {
        "config": cfg.to_dict(), "class_names": ["nv", "mel"], "image_size": 16, "latent_dim": 8, "run_id": run_id, "step": 1,
        "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": None})
    plugins.register(Plugin(), name="recommends")
    try:
        evaluate_checkpoint(ckpt, metrics=["recommends"], n_per_class=4)
    finally:
        plugins.get_plugin_manager().unregister(name="recommends")
    assert mlflow.MlflowClient().get_run(run_id).data.tags["augforge.eval.recommended_policy"] == "balanced:filtered"


def test_evaluate_on_the_val_split_to_choose_among_generators(fakes, tmp_path, monkeypatch):
    from augforge.evaluation import evaluate_checkpoint_full

    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 1, "batch_size": 16, "patience": 1, "epoch_size": 0})
    cfg = config.resolve(overrides=FAKE)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    ckpt = save_checkpoint(tmp_path / "last.pt", {
        "config": cfg.to_dict(), "class_names": ["nv", "mel"], "image_size": 16, "latent_dim": 8, "run_id": None, "step": 1,
        "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": None})
    ev = evaluate_checkpoint_full(ckpt, metrics=["kid"], n_per_class=4, out_dir=tmp_path / "val", track=False, split="val")
    summary = json.loads((tmp_path / "val" / "summary.json").read_text())
    assert summary["split"] == "val" and summary["split_sizes"]["val"] > 0 and "kid" in ev.metrics
    assert "compared against the real **val** split" in (tmp_path / "val" / "report.md").read_text()
    with pytest.raises(AugforgeError, match="policy-study already chooses on val"):
        evaluate_checkpoint_full(ckpt, metrics=["policy-study"], out_dir=tmp_path / "x", track=False, split="val")
