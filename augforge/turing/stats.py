"""Small pure statistics for the Turing test: binomial intervals, confusion rates, Fleiss' kappa.

Conventions used throughout the results:

* The *positive* class is **generated**: a rater "detects" a generated image. So
  sensitivity = P(answer generated | image generated), specificity = P(answer real | image real),
  and paper A's headline figure "share of generated images judged real" is 1 - sensitivity.
* Every interval is two-sided at ``confidence`` (default 0.95).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n; (nan, nan) when n == 0.

    Good coverage for small n and proportions near 0 or 1 (Newcombe 1998, method 3).
    """
    _check_counts(k, n)
    if n == 0:
        return (math.nan, math.nan)
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # clamp rounding noise at the ends (k = 0 gives exactly 0, k = n exactly 1)
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def clopper_pearson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval from beta quantiles; conservative. (nan, nan) if n == 0."""
    from scipy.stats import beta

    _check_counts(k, n)
    if n == 0:
        return (math.nan, math.nan)
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return (lo, hi)


@dataclass(frozen=True)
class Confusion:
    """Counts with *generated* as the positive class."""

    tp: int  # generated, answered generated
    fn: int  # generated, answered real (the rater was fooled)
    tn: int  # real, answered real
    fp: int  # real, answered generated

    @property
    def n(self) -> int:
        return self.tp + self.fn + self.tn + self.fp

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def confusion(is_generated, said_generated) -> Confusion:
    """Confusion counts from two equal-length boolean sequences (truth, answer)."""
    t = np.asarray(is_generated, dtype=bool)
    s = np.asarray(said_generated, dtype=bool)
    if t.shape != s.shape or t.ndim != 1:
        raise ValueError(f"need two 1-d sequences of equal length, got {t.shape} and {s.shape}")
    return Confusion(tp=int(np.sum(t & s)), fn=int(np.sum(t & ~s)), tn=int(np.sum(~t & ~s)), fp=int(np.sum(~t & s)))


def _ratio(a: int, b: int) -> float:
    return a / b if b else math.nan


def sensitivity(c: Confusion) -> float:
    """P(answer generated | generated); nan without generated images."""
    return _ratio(c.tp, c.tp + c.fn)


def specificity(c: Confusion) -> float:
    """P(answer real | real); nan without real images."""
    return _ratio(c.tn, c.tn + c.fp)


def accuracy(c: Confusion) -> float:
    return _ratio(c.tp + c.tn, c.n)


def fleiss_kappa(table) -> float:
    """Fleiss' kappa for ``table[subject, category]`` = number of raters who chose it.

    Subjects may have different numbers of ratings (raters who stopped early): each subject's
    agreement is averaged with its own count n_i, and category shares are pooled over all
    ratings. With equal n_i this is exactly Fleiss (1971). Subjects with fewer than two ratings
    carry no agreement information and are dropped. Returns nan when nothing is left, or when
    every rating falls in one category (chance agreement 1: kappa undefined).
    """
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or (t < 0).any():
        raise ValueError("table must be a 2-d array of non-negative counts [subject, category]")
    n_i = t.sum(axis=1)
    t, n_i = t[n_i >= 2], n_i[n_i >= 2]
    if len(t) == 0:
        return math.nan
    p_j = t.sum(axis=0) / n_i.sum()
    p_i = ((t * t).sum(axis=1) - n_i) / (n_i * (n_i - 1))
    p_bar, p_e = float(p_i.mean()), float((p_j**2).sum())
    if math.isclose(p_e, 1.0):
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def kappa_label(kappa: float) -> str:
    """Landis & Koch (1977) wording for a kappa value."""
    if math.isnan(kappa):
        return "undefined"
    if kappa < 0:
        return "poor"
    for bound, label in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= bound:
            return label
    return "almost perfect"


def cluster_bootstrap_interval(
    k_per_cluster, n_per_cluster, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval for sum(k)/sum(n), resampling whole clusters (raters) with replacement.

    Answers by the same rater are correlated, so the plain binomial interval, which treats
    every answer as independent, is too narrow when raters differ; this one is not.
    (nan, nan) with fewer than two clusters.
    """
    k = np.asarray(k_per_cluster, dtype=float)
    n = np.asarray(n_per_cluster, dtype=float)
    if k.shape != n.shape or k.ndim != 1:
        raise ValueError("k_per_cluster and n_per_cluster must be 1-d and of equal length")
    keep = n > 0
    k, n = k[keep], n[keep]
    if len(k) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(k), size=(resamples, len(k)))
    shares = k[idx].sum(axis=1) / n[idx].sum(axis=1)
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(shares, [a, 1 - a])
    return (float(lo), float(hi))
