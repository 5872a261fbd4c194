"""Classification Accuracy Score: synthetic-only training, real test, per class (toy size)."""

import numpy as np
import pytest
import torch

from augforge import config, registry

from augforge import evaluation as evaluate
from augforge.interfaces import ImageSet

FAKE = {
    "data.name": "fake-blobs", "dataset.n_per_class": "40", "dataset.size": "32", "data.image_size": "16",
    "data.val_fraction": "0.2", "data.test_fraction": "0.25", "model.generator": "fake", "model.latent_dim": "8",
}


@pytest.fixture
def sets(fakes, monkeypatch):
    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 4, "batch_size": 16, "patience": 4, "epoch_size": 0})
    return evaluate.split_sets(*evaluate.load_data(config.resolve(overrides=FAKE)))


def _context(sets, sampler):
    train = sets["train"]
    det = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2, widths=[8, 8, 8], feature_dim=8).eval()
    return evaluate.EvalContext(det, torch.device("cpu"), train.class_names, seed=0, image_size=16, real_val=sets["val"],
                                sampler=sampler)


def _resampler(train: ImageSet, swap: bool):
    """A stand-in generator that returns real training images of each class (labels swapped: useless)."""
    def sample(counts, seed):
        rng = np.random.default_rng(seed)
        idx = np.concatenate([rng.choice(np.flatnonzero(train.labels == c), n) for c, n in enumerate(counts)])
        labels = train.labels[idx]
        return ImageSet(train.images[idx], (1 - labels) if swap else labels, train.class_names)
    return sample


@pytest.mark.slow
def test_cas_is_per_class_and_tells_a_useful_generator_from_a_useless_one(sets):
    ev = registry.build("evaluator", "cas", seeds=2, synthetic_per_class=30, epochs=3)
    assert ev.cheap is False
    good = ev.evaluate(sets["train"], None, sets["test"], _context(sets, _resampler(sets["train"], swap=False)))
    bad = ev.evaluate(sets["train"], None, sets["test"], _context(sets, _resampler(sets["train"], swap=True)))
    names = sets["train"].class_names
    for res in (good, bad):
        m = res.metrics
        runs = res.tables["cas_runs"]
        assert len(runs) == 4 and set(runs.setting) == {"synthetic", "real"}
        syn = runs[runs.setting == "synthetic"]
        assert m["cas"] == pytest.approx(syn.balanced_accuracy.mean())
        assert m["cas_std"] == pytest.approx(syn.balanced_accuracy.std(ddof=1))
        assert m["cas_gap"] == pytest.approx(m["cas"] - m["cas_real"])
        for c in names:
            assert m[f"cas_gap_recall_{c}"] == pytest.approx(m[f"cas_recall_{c}"] - m[f"cas_real_recall_{c}"])
        assert list(res.tables["cas_per_class"]["class"]) == names
    # real images with their labels stand in for real data; with swapped labels they teach the opposite
    assert good.metrics["cas"] > 0.8 and bad.metrics["cas"] < 0.2
    assert good.metrics["cas_real"] == pytest.approx(bad.metrics["cas_real"])  # the same paired real-only runs


def test_cas_options_fail_loudly(fakes):
    with pytest.raises(ValueError, match="seeds >= 1"):
        registry.build("evaluator", "cas", seeds=0)
    assert "cas" in registry.tables()["evaluator"]
