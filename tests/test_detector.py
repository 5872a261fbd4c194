"""Detector plugins and the shared classifier training loop."""

import json

import numpy as np
import pytest
import torch

from augforge import registry
from augforge.evaluation.classify import balanced_accuracy, classification_metrics, fit_classifier, predict_proba, recipe_for, to_tensor
from augforge.interfaces import Classifier, ImageSet


@pytest.mark.parametrize("name", ["paper-b-cnn", "cnn-detector", "resnet"])
@pytest.mark.parametrize("size", [16, 64])
def test_classifier_contract(name, size):
    model = registry.build("classifier", name, image_size=size, num_classes=5).eval()
    assert isinstance(model, Classifier)
    x = torch.rand(3, 3, size, size) * 2 - 1
    logits, feats = model(x), model.features(x)
    assert logits.shape == (3, 5)
    assert feats.ndim == 2 and feats.shape[0] == 3
    rebuilt = registry.build("classifier", name, **json.loads(json.dumps(model.config)))
    rebuilt.load_state_dict(model.state_dict())
    assert torch.allclose(rebuilt.eval()(x), logits, atol=1e-5)


def blobs(n_per_class, sizes=(60, 12), size=16, seed=0):
    """Two classes told apart by colour, with a class imbalance."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for c, n in enumerate(sizes[:2] if n_per_class is None else (n_per_class, n_per_class)):
        base = np.array([[200, 80, 80], [80, 80, 200]][c])
        img = np.clip(base + rng.normal(0, 25, (n, size, size, 3)), 0, 255).astype(np.uint8)
        images.append(img)
        labels.append(np.full(n, c))
    return ImageSet(np.concatenate(images), np.concatenate(labels), ["nv", "mel"])


def test_fit_classifier_learns_an_imbalanced_problem():
    train, val = blobs(None, (60, 8), seed=1), blobs(10, seed=2)
    model = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2, widths=[8, 16, 16], feature_dim=16)
    fit = fit_classifier(model, train, val, seed=0, epochs=4, batch_size=16, epoch_size=0)
    assert fit.best_score == pytest.approx(1.0)
    assert not fit.model.training
    test = blobs(20, seed=3)
    pred = predict_proba(fit.model, test.images).argmax(1)
    assert balanced_accuracy(test.labels, pred, 2) > 0.95


def test_fit_classifier_keeps_the_best_epoch():
    train, val = blobs(30, seed=4), blobs(10, seed=5)
    model = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2, widths=[8, 8, 8], feature_dim=8)
    fit = fit_classifier(model, train, val, seed=0, epochs=3, batch_size=16, patience=10, epoch_size=0)
    scores = [row["val_balanced_accuracy"] for row in fit.history]
    assert fit.best_score == max(scores) and fit.best_epoch == 1 + scores.index(max(scores))


def test_recipe_overrides_are_checked():
    model = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2)
    assert recipe_for(model)["oversample"] is True
    assert recipe_for(model, epochs=2)["epochs"] == 2
    with pytest.raises(TypeError, match="unknown training option"):
        recipe_for(model, epocs=2)


def test_classification_metrics_on_a_constructed_case():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2, 2])
    m, cm = classification_metrics(probs, labels, ["nv", "mel", "bkl"])
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["recall_mel"] == pytest.approx(0.5) and m["precision_nv"] == pytest.approx(0.5)
    assert 0.5 < m["macro_auc"] <= 1.0


def test_to_tensor_range():
    x = to_tensor(np.array([[[[0, 255, 128]]]], np.uint8))
    assert x.shape == (1, 3, 1, 1)
    assert x.min() == -1 and x.max() == 1
