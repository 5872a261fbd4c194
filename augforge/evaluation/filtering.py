"""Scored, filtered sampling: keep the best share of generated images per class.

Every generated image can carry up to three scores, each "higher is better":

- ``realism``: the discriminator's logit (discriminator rejection sampling, Azadi et al. 2019);
- ``label``: the detector's probability of the intended class (is it recognisably a ``bcc``?);
- ``novelty``: the RMS pixel distance to the nearest training image (a far image is a new
  lesion, not a memorised one), from the near-copy machinery of the ``memorization`` evaluator.

``select`` (``augforge_runtime.selection``, numpy only, shared with the torch-free runtime)
ranks images within their class by each score, averages the ranks and keeps the best ones;
near-copies of a training image are always dropped, and ties are broken by an order seeded by
``(seed, class)``, so a selection is reproducible. The scorers below import torch only when called.
"""

from __future__ import annotations

import numpy as np

from augforge.errors import AugforgeError
from augforge.interfaces import ImageSet
from augforge_runtime.selection import EPS, Selection, SelectionError, percentile_ranks  # noqa: F401  (re-exported)
from augforge_runtime.selection import kept_count as _kept_count, select as _select

SCORES = ("realism", "label", "novelty")


class FilterError(AugforgeError, ValueError):
    """Scores, a share or a filter name cannot be used as given."""


def parse_filters(text: str | None) -> tuple[str, ...]:
    """``"realism,label"`` -> ``("realism", "label")``; checks the names."""
    names = tuple(dict.fromkeys(x.strip().lower() for x in (text or "").split(",") if x.strip()))
    bad = [n for n in names if n not in SCORES]
    if bad or not names:
        raise FilterError(f"--filter {text!r}: unknown or empty; valid: {', '.join(SCORES)} (comma-separated)")
    return names


def kept_count(n: int, keep: float) -> int:
    """Images kept of ``n`` at share ``keep`` (``augforge_runtime.selection.kept_count``); FilterError when invalid."""
    try:
        return _kept_count(n, keep)
    except SelectionError as exc:
        raise FilterError(str(exc)) from None


def select(labels, scores: dict[str, np.ndarray], **kwargs) -> Selection:
    """``augforge_runtime.selection.select`` (keep / counts / near_copy / seed); FilterError when invalid."""
    try:
        return _select(labels, scores, **kwargs)
    except SelectionError as exc:
        raise FilterError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Scorers (torch and the metrics plugin are imported only here)


def privacy_function(name: str):
    """A pure function of the module that registers the ``memorization`` evaluator (the near-copy
    test lives with it); the core finds it through the registry, never by a plugin module's name."""
    import sys

    from augforge import registry

    cls = registry.get("evaluator", "memorization")
    return getattr(sys.modules[cls.__module__], name)


def novelty(generated: np.ndarray, train: np.ndarray, *, threshold: float | None = None, baseline: np.ndarray | None = None,
            baseline_groups=None, train_groups=None, quantile: float = 0.01, size: int = 32):
    """``(distance float[N], near_copy bool[N], threshold)`` for ``uint8[N, H, W, 3]`` images.

    The distance is the RMS pixel difference to the nearest training image at ``size`` px; the
    near-copy threshold is given or, as in ``augforge generate --drop-near-copies``, the
    ``quantile`` of real held-out (``baseline``) lesions' distances to the training set.
    """
    if threshold is None and baseline is None:
        raise FilterError("novelty needs a near-copy threshold or real held-out baseline images")
    d, threshold = privacy_function("near_copy_distances")(
        generated, train, threshold, baseline=baseline, baseline_groups=baseline_groups, train_groups=train_groups,
        quantile=quantile, size=size)
    return d, d < threshold, threshold


def realism(discriminator, images: np.ndarray, labels=None, device="cpu", batch_size: int = 256) -> np.ndarray:
    """The discriminator's logit per image (higher = judged more real): a torch discriminator or
    the ONNX one exported beside a generator (``augforge_runtime.OnnxDiscriminator``)."""
    from augforge_runtime.realism import OnnxDiscriminator

    if isinstance(discriminator, OnnxDiscriminator):
        return discriminator.score(images, labels)
    import torch

    from augforge.evaluation.classify import to_tensor

    discriminator = discriminator.to(device).eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = to_tensor(images[i : i + batch_size]).to(device)
            y = None
            if getattr(discriminator, "conditional", False):
                y = torch.as_tensor(np.asarray(labels)[i : i + batch_size], dtype=torch.long, device=device)
            out.append(discriminator(x, y).float().reshape(len(x)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def label_probability(detector, images: np.ndarray, detector_labels, device="cpu") -> np.ndarray:
    """The detector's probability of each image's intended class."""
    from augforge.evaluation.classify import predict_proba

    probs = predict_proba(detector, images, device)
    return probs[np.arange(len(images)), np.asarray(detector_labels, int)]


def near_copy_threshold(train: ImageSet, baseline: ImageSet, quantile: float = 0.01) -> float:
    """The near-copy distance: ``quantile`` of real held-out (``baseline``) lesions' distance to ``train``."""
    _, _, threshold = novelty(baseline.images[:1], train.images, baseline=baseline.images, baseline_groups=baseline.groups,
                              train_groups=train.groups, quantile=quantile)
    return threshold


def score_images(images: np.ndarray, filters: tuple[str, ...], *, device, model_labels=None, detector_labels=None,
                 discriminator=None, detector=None, train: ImageSet | None = None, threshold: float | None = None,
                 near_copies: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """``(scores, near-copy mask or None)`` of ``images`` for each of ``filters``.

    realism: ``discriminator``'s logit for ``model_labels``; label: ``detector``'s probability of
    ``detector_labels``; novelty: distance to the nearest ``train`` image. The near-copy mask (at
    ``threshold``) comes with novelty, or alone with ``near_copies=True``.
    """
    scores, copies = {}, None
    if "realism" in filters:
        scores["realism"] = realism(discriminator, images, model_labels, device)
    if "label" in filters:
        scores["label"] = label_probability(detector, images, detector_labels, device)
    if "novelty" in filters or near_copies:
        dist, copies, _ = novelty(images, train.images, threshold=threshold)
        if "novelty" in filters:
            scores["novelty"] = dist
    return scores, copies


def filter_pool(pool: ImageSet, counts, filters: tuple[str, ...], *, seed: int, device, detector=None,
                discriminator=None, train: ImageSet | None = None, baseline: ImageSet | None = None) -> tuple[ImageSet, dict]:
    """Score an oversampled ``pool`` by ``filters`` and keep the best ``counts[k]`` of class k.

    What ``augforge evaluate --filter`` measures and ``augforge generate --filter`` writes:
    realism (``discriminator``), label (``detector``), novelty (nearest ``train`` image, with the
    near-copy threshold from real held-out ``baseline`` lesions); near-copies are always dropped
    when novelty is scored. Returns the kept set and a summary (near-copies dropped, shortfall).
    """
    if "realism" in filters and discriminator is None:
        raise FilterError("realism filtering needs the discriminator: evaluate a training checkpoint (--checkpoint), "
                          "or an ONNX file exported with --with-discriminator, or drop realism from --filter")
    threshold = near_copy_threshold(train, baseline) if "novelty" in filters else None
    scores, copies = score_images(pool.images, filters, device=device, model_labels=pool.labels, detector_labels=pool.labels,
                                  discriminator=discriminator, detector=detector, train=train, threshold=threshold)
    sel = select(pool.labels, scores, counts={k: int(c) for k, c in enumerate(np.asarray(counts, int))}, near_copy=copies, seed=seed)
    kept = pool.subset(sel.indices)
    return kept, {"near_copies_dropped": int(sum(sel.dropped_near_copies.values())), "shortfall": int(sum(sel.shortfall.values()))}
