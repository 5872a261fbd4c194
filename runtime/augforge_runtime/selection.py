"""Ranking generated images within their class and keeping the best: numpy only.

``augforge generate --filter``, ``augforge evaluate --filter`` and the torch-free runtime
(``SyntheticLesions(..., filter="realism")``) all keep images with ``select``, so the same scores
and seed give the same set everywhere. ``select`` ranks images within their class by each score
(percentile ranks, ties averaged), averages the ranks, and keeps the best ones; images flagged
as near-copies of a training image are always dropped. Ties in the combined rank are broken by
an order seeded by ``(seed, class)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

EPS = 1e-9  # keep * n is floored after adding EPS, so 0.29 * 100 keeps 29, not 28 (float error)


class SelectionError(ValueError):
    """Scores or a share cannot be used as given."""


def kept_count(n: int, keep: float) -> int:
    """Images kept of ``n`` at share ``keep``: ``floor(keep * n)``, never more than the share."""
    if not 0 < keep <= 1:
        raise SelectionError(f"keep must be in (0, 1], got {keep!r}; e.g. --keep 0.5 keeps the best half per class")
    return int(np.floor(keep * n + EPS))


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """``x`` -> ranks in [0, 1] (0 = lowest, 1 = highest), tied values sharing their mean rank."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return np.ones(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return (first + (counts - 1) / 2.0)[inv] / (len(x) - 1)


@dataclass
class Selection:
    indices: np.ndarray  # kept images, sorted
    combined: np.ndarray  # float[N]: mean within-class percentile rank (nan for near-copies)
    dropped_near_copies: dict[int, int] = field(default_factory=dict)  # class -> near-copies dropped
    shortfall: dict[int, int] = field(default_factory=dict)  # class -> images missing to reach the request


def select(labels, scores: dict[str, np.ndarray], *, keep: float | None = None, counts: dict[int, int] | None = None,
           near_copy=None, seed: int = 0) -> Selection:
    """Keep the best-ranked images per class.

    ``keep``: share of each class's images to keep (``kept_count``); ``counts``: exactly this
    many of class k instead (``augforge generate`` oversamples by 1/keep and asks for its
    target). ``near_copy``: bool[N], always dropped; when too few others remain, ``shortfall``
    says how many are missing (the caller draws more). Without scores only near-copies are
    dropped and the seeded order decides.
    """
    labels = np.asarray(labels, int)
    if (keep is None) == (counts is None):
        raise SelectionError("give exactly one of keep (a share per class) or counts (images per class)")
    cols = {}
    for name, s in scores.items():
        s = np.asarray(s, np.float64)
        if s.shape != labels.shape:
            raise SelectionError(f"score {name!r} has shape {s.shape}, labels {labels.shape}: one score per image")
        if not np.isfinite(s).all():
            raise SelectionError(f"score {name!r} has {int((~np.isfinite(s)).sum())} non-finite values")
        cols[name] = s
    copies = np.zeros(len(labels), bool) if near_copy is None else np.asarray(near_copy, bool)
    combined = np.full(len(labels), np.nan)
    kept, dropped, short = [], {}, {}
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        want = kept_count(len(members), keep) if counts is None else int(counts.get(int(k), 0))
        pool = members[~copies[members]]
        dropped[int(k)] = int(len(members) - len(pool))
        rank = np.mean([percentile_ranks(s[pool]) for s in cols.values()], axis=0) if cols else np.zeros(len(pool))
        combined[pool] = rank
        order = np.random.default_rng([int(seed), int(k)]).permutation(len(pool))  # tie-break
        order = order[np.argsort(-rank[order], kind="stable")]
        kept.append(pool[order[:want]])
        if len(pool) < want:
            short[int(k)] = int(want - len(pool))
    idx = np.sort(np.concatenate(kept)) if kept else np.zeros(0, int)
    return Selection(idx, combined, dropped, short)
