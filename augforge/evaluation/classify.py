"""Training and scoring image classifiers: the detector, c2st's judge, augmentation-gain's runs.

Classifier plugins say *what* the network is (``augforge_register_classifiers``) and may
declare their training recipe as a ``recipe`` class attribute (a dict of ``fit_classifier``
keyword arguments); this module is the one loop that trains any of them, so the detector,
the c2st judge and augmentation-gain's detectors are all trained the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from augforge.interfaces import Classifier, ImageSet

#: fit_classifier defaults; a classifier's ``recipe`` class attribute overrides them
DEFAULT_RECIPE = {
    "epochs": 20,  # passes over an epoch of len(train) draws
    "batch_size": 64,
    "lr": 1e-3,  # Adam
    "weight_decay": 1e-4,
    "oversample": True,  # draw each class equally often (paper B's answer to class imbalance)
    "augment": True,  # random flips and 90-degree rotations: dermoscopy has no "up"
    "patience": 5,  # epochs without a better validation score before stopping
    "epoch_size": 0,  # training images drawn per epoch (0 = the training set's size)
}
BN_IMAGES = 1024  # training images that re-estimate batch-norm statistics after each epoch


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8[N, H, W, 3]`` -> ``float[N, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def resolve_device(device=None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def recipe_for(model: Classifier, **overrides) -> dict:
    """The training recipe: defaults, then the classifier's ``recipe``, then ``overrides``."""
    recipe = {**DEFAULT_RECIPE, **getattr(type(model), "recipe", {})}
    unknown = set(overrides) - set(DEFAULT_RECIPE)
    if unknown:
        raise TypeError(f"unknown training option(s) {sorted(unknown)}; valid: {', '.join(DEFAULT_RECIPE)}")
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    return recipe


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
    k = torch.randint(0, 4, (n,), generator=gen)
    out = x.clone()
    for r in (1, 2, 3):
        m = (k == r).to(x.device)
        if m.any():
            out[m] = torch.rot90(x[m], r, dims=(2, 3))
    return out


def balanced_accuracy(labels: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``labels``."""
    recalls = [np.mean(pred[labels == c] == c) for c in range(num_classes) if np.any(labels == c)]
    return float(np.mean(recalls)) if recalls else float("nan")


@dataclass
class FitResult:
    model: Classifier
    best_epoch: int
    best_score: float  # validation balanced accuracy at best_epoch (nan without validation)
    history: list[dict] = field(default_factory=list)
    recipe: dict = field(default_factory=dict)


def fit_classifier(
    model: Classifier,
    train: ImageSet,
    val: ImageSet | None = None,
    *,
    seed: int = 0,
    device=None,
    progress=None,
    sample_weights=None,
    **overrides,
) -> FitResult:
    """Train ``model`` on ``train``; keep the epoch with the best validation balanced accuracy.

    Without ``val`` the last epoch is kept. ``progress(epoch, row)`` is called after each epoch.
    ``sample_weights``: one loss weight per training item (e.g. an augmentation policy's
    ``:weight=W`` for synthetic items, 1 for real ones); the batch loss is the mean of the
    weighted per-item losses. Returns the model (in eval mode, on ``device``) with its best weights.
    """
    recipe = recipe_for(model, **overrides)
    device = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    labels = np.asarray(train.labels)
    num_classes = int(getattr(model, "num_classes", labels.max() + 1))
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    weights = (1.0 / counts[labels]) if recipe["oversample"] else np.ones(len(labels))
    weights /= weights.sum()
    item_w = None
    if sample_weights is not None:
        item_w = np.asarray(sample_weights, np.float32)
        if item_w.shape != labels.shape or not np.isfinite(item_w).all() or (item_w < 0).any():
            raise ValueError(f"sample_weights: expected {len(labels)} finite weights >= 0 (one per training item), "
                             f"got shape {item_w.shape}")
    bs = int(recipe["batch_size"])
    best = (-np.inf, 0, copy.deepcopy(model.state_dict()))
    history, stale = [], 0
    for epoch in range(1, int(recipe["epochs"]) + 1):
        model.train()
        draws = int(recipe["epoch_size"]) or len(labels)
        if recipe["oversample"]:
            order = rng.choice(len(labels), size=draws, replace=True, p=weights)
        else:
            order = rng.permutation(len(labels))[:draws]
        total, n = 0.0, 0
        for i in range(0, len(order), bs):
            idx = np.sort(order[i : i + bs])  # sorted: faster gathers from a memory map
            if len(idx) < 2:
                continue  # batch norm needs two samples
            x = to_tensor(train.images[idx]).to(device)
            y = torch.from_numpy(labels[idx]).to(device)
            if recipe["augment"]:
                x = _augment(x, gen)
            if item_w is None:
                loss = F.cross_entropy(model(x), y)
            else:
                loss = (F.cross_entropy(model(x), y, reduction="none") * torch.from_numpy(item_w[idx]).to(device)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        recalibrate_batchnorm(model, train.images[np.sort(order[:BN_IMAGES])], device)
        row = {"epoch": epoch, "train_loss": total / max(n, 1)}
        if val is not None and len(val):
            pred = predict_proba(model, val.images, device).argmax(1)
            row["val_balanced_accuracy"] = balanced_accuracy(np.asarray(val.labels), pred, num_classes)
            score = row["val_balanced_accuracy"]
        else:
            score = float(epoch)  # no validation: keep the last epoch
        history.append(row)
        if progress is not None:
            progress(epoch, row)
        if score > best[0]:
            best, stale = (score, epoch, copy.deepcopy(model.state_dict())), 0
            if val is not None and score >= 1.0:
                break  # perfect on validation: nothing left to choose between
        else:
            stale += 1
            if stale >= recipe["patience"]:
                break
    model.load_state_dict(best[2])
    model.eval()
    best_score = best[0] if val is not None and len(val) else float("nan")
    return FitResult(model, best[1], float(best_score), history, recipe)


@torch.no_grad()
def recalibrate_batchnorm(model: Classifier, images: np.ndarray, device, batch_size: int = 128) -> None:
    """Re-estimate batch-norm running statistics as plain averages over ``images``.

    The default running averages (momentum 0.1) still remember the first steps after a short
    epoch; a few hundred images of the current weights fix that, so validation and the
    features used for FID/KID see the statistics of the final network.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) < 2:
        return
    was_training = model.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for i in range(0, len(images), batch_size):
        chunk = images[i : i + batch_size]
        if len(chunk) >= 2:
            model(to_tensor(chunk).to(device))
    for m, mom in zip(norms, saved):
        m.momentum = mom
    model.train(was_training)


@torch.no_grad()
def _batched(fn, images: np.ndarray, device, batch_size: int = 256) -> np.ndarray:
    device = resolve_device(device)
    out = []
    for i in range(0, len(images), batch_size):
        out.append(fn(to_tensor(images[i : i + batch_size]).to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_proba(model: Classifier, images: np.ndarray, device=None, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities ``float[N, C]`` for ``uint8[N, H, W, 3]`` images."""
    was_training = model.training
    model.eval()
    try:
        return _batched(lambda x: F.softmax(model(x), dim=1), images, device or _device_of(model), batch_size)
    finally:
        model.train(was_training)


def extract_features(model: Classifier, images: np.ndarray, device=None, batch_size: int = 256) -> np.ndarray:
    """The classifier's penultimate embedding ``float64[N, F]`` for ``uint8[N, H, W, 3]`` images."""
    was_training = model.training
    model.eval()
    try:
        return _batched(model.features, images, device or _device_of(model), batch_size).astype(np.float64)
    finally:
        model.train(was_training)


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> tuple[dict[str, float], np.ndarray]:
    """Accuracy, balanced accuracy, per-class recall/precision and macro one-vs-rest AUC.

    Returns ``(metrics, confusion)`` with ``confusion[true, predicted]`` counts.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score

    labels = np.asarray(labels)
    c = len(class_names)
    pred = probs.argmax(1)
    cm = confusion_matrix(labels, pred, labels=list(range(c)))
    out = {"accuracy": float(np.mean(pred == labels)), "balanced_accuracy": balanced_accuracy(labels, pred, c)}
    for k, name in enumerate(class_names):
        support, predicted = cm[k].sum(), cm[:, k].sum()
        out[f"recall_{name}"] = float(cm[k, k] / support) if support else float("nan")
        out[f"precision_{name}"] = float(cm[k, k] / predicted) if predicted else float("nan")
        out[f"support_{name}"] = float(support)
    present = [k for k in range(c) if np.any(labels == k)]
    if len(present) >= 2:
        aucs = [roc_auc_score(labels == k, probs[:, k]) for k in present]
        out["macro_auc"] = float(np.mean(aucs))
    else:
        out["macro_auc"] = float("nan")
    return out, cm
