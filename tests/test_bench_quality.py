"""The race's recipes stay runnable: every one resolves to a valid config and builds its G and D
(a renamed option would otherwise surface only after an hour of someone else's benchmark)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from augforge import registry
from augforge.config import resolve
from augforge.training.state import check_train_config

spec = importlib.util.spec_from_file_location("bench_quality", Path(__file__).parents[1] / "benchmarks" / "bench_quality.py")
bench_quality = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_quality)


@pytest.mark.parametrize("name", list(bench_quality.RECIPES))
def test_every_recipe_resolves_and_builds(name):
    preset, overrides, what = bench_quality.RECIPES[name]
    cfg = resolve(preset, {**overrides, "data.image_size": 64})
    check_train_config(cfg.train)
    G = registry.build("generator", cfg.model.generator, image_size=64, num_classes=7, latent_dim=cfg.model.latent_dim, **cfg.generator)
    D = registry.build("discriminator", cfg.discriminator_name, image_size=64, num_classes=7, **cfg.discriminator)
    with torch.no_grad():
        x = G(torch.randn(2, cfg.model.latent_dim), torch.tensor([0, 6]))
        assert x.shape == (2, 3, 64, 64) and D(x, torch.tensor([0, 6])).shape == (2,)
    if cfg.train.ac_weight > 0:  # the loop would refuse a D without a class head
        assert D.forward_with_classes(x, torch.tensor([0, 6]))[1].shape == (2, 7)
    assert what


def test_race_table_renders_missing_metrics_as_dashes():
    keys = ["kid", "fid", "precision", "recall", "c2st_accuracy", "memorization", "blockiness_4", "blockiness_8", "blockiness_16"]
    row = {"recipe": "r", "steps": 10, "images_seen": 3200, "images_per_s": 80.0, "chosen_by": "fid", "val_best": 3.0,
           "best_minute": 5.0, "val_fid_at_best": 3.0, "val_recall_at_best": 0.5, **{f"test_{k}": 0.5 for k in keys},
           **{f"test_detection_rate_{c}": 0.6 for c in ("nv", "mel", "bkl", "bcc")},
           "test_spectral_peak": 1.7, "test_spectral_peak_period_px": 4.2}
    table = bench_quality._table([row])
    assert "| 1.70 (4.2) |" in table and "60 / 60 / 60 / 60" in table
    assert "| — (—) |" in bench_quality._table([{**row, "test_spectral_peak": None, "test_spectral_peak_period_px": None}])
