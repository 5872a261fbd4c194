"""The math of the evaluators: small pure functions (arrays in, numbers out) that the tests check
against closed forms: Gaussian statistics and the Frechet distance, KID's unbiased MMD, k-NN
precision/recall and density/coverage, the two-sample classifier test, nearest neighbours and
near-copies, detection tables, top-up counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg, stats



def gaussian_stats(feats: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``feats[N, F]``; with ``weights`` the weighted (reliability) estimate."""
    x = np.asarray(feats, np.float64)
    if weights is None:
        return x.mean(0), np.cov(x, rowvar=False)
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    mu = w @ x
    d = x - mu
    cov = (d * w[:, None]).T @ d / (1.0 - np.sum(w**2))
    return mu, cov


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights that give every class the same total weight."""
    labels = np.asarray(labels)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / counts[inv]


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``|mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # singular product (fewer samples than dimensions): regularise as pytorch-fid does
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # numerical noise; the true root of a PSD product is real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """``(gamma <x, y> + coef0) ** degree``; ``gamma`` defaults to 1 / dim (KID's kernel)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel) -> float:
    """Unbiased estimate of the squared MMD (Gretton et al. 2012, eq. 3): the diagonal terms
    of the within-set kernel sums are left out, so its expectation is the population MMD^2
    (it can be negative)."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = polynomial_kernel(x, x, **kernel), polynomial_kernel(y, y, **kernel), polynomial_kernel(x, y, **kernel)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean()
    )


def kid(
    real: np.ndarray, fake: np.ndarray, *, n_subsets: int = 50, subset_size: int = 1000, seed: int = 0, **kernel
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018) in any feature space: the mean and
    standard deviation of ``mmd2_unbiased`` over random subsets drawn without replacement.
    The subset size is capped by the smaller set, so tiny classes still work."""
    size = min(subset_size, len(real), len(fake))
    rng = np.random.default_rng(seed)
    vals = [
        mmd2_unbiased(real[rng.choice(len(real), size, replace=False)], fake[rng.choice(len(fake), size, replace=False)], **kernel)
        for _ in range(n_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def pairwise_distances(a: np.ndarray, b: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Euclidean distances ``float64[len(a), len(b)]``, computed in row chunks."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bb = np.sum(b * b, 1)
    out = np.empty((len(a), len(b)))
    for i in range(0, len(a), chunk):
        x = a[i : i + chunk]
        d2 = np.sum(x * x, 1)[:, None] + bb[None, :] - 2.0 * x @ b.T
        out[i : i + chunk] = np.sqrt(np.maximum(d2, 0.0))
    return out


def knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance from each point of ``x`` to its k-th nearest other point of ``x``."""
    if len(x) <= k:
        raise ValueError(f"k-NN radii need more than k={k} points, got {len(x)}")
    d = pairwise_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): precision is the share of
    fake points inside the real k-NN manifold (union of balls to each real point's k-th
    neighbour), recall the share of real points inside the fake manifold."""
    d = pairwise_distances(real, fake)  # [real, fake]
    r_real, r_fake = knn_radii(real, k), knn_radii(fake, k)
    precision = np.mean(np.any(d <= r_real[:, None], axis=0))
    recall = np.mean(np.any(d <= r_fake[None, :], axis=1))
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): density counts how many real k-NN balls
    contain each fake point (divided by k; about 1 when the sets match), coverage is the
    share of real points whose ball contains at least one fake point."""
    d = pairwise_distances(real, fake)
    inside = d <= knn_radii(real, k)[:, None]
    return float(inside.sum() / (k * fake.shape[0])), float(np.mean(inside.any(axis=1)))


def binomial_pvalue(correct: int, n: int) -> float:
    """One-sided p-value that a judge with ``correct`` of ``n`` right beats a coin flip."""
    return float(stats.binomtest(int(correct), int(n), 0.5, alternative="greater").pvalue) if n else float("nan")


def split_halves(n: int, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the first half; whole groups (lesions) stay on one side."""
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    uniq = rng.permutation(np.unique(keys))
    first = set(uniq[: max(1, len(uniq) // 2)].tolist()) if len(uniq) > 1 else set()
    return np.array([k in first for k in keys])


def c2st(a: np.ndarray, b: np.ndarray, fit_predict, *, groups_a=None, groups_b=None, seed: int = 0) -> dict[str, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017).

    A judge learns "a or b" on one half of each set and is scored on the other half.
    ``fit_predict(train_x, train_y, test_x) -> predicted labels`` is the judge;
    ``groups_*`` keep images of one lesion on one side. Returns the held-out accuracy
    (0.5 = indistinguishable, 1.0 = always told apart), the number of held-out samples and
    the binomial p-value against chance.
    """
    rng = np.random.default_rng(seed)
    ha, hb = split_halves(len(a), groups_a, rng), split_halves(len(b), groups_b, rng)
    train_x = np.concatenate([a[ha], b[hb]])
    train_y = np.concatenate([np.zeros(ha.sum(), int), np.ones(hb.sum(), int)])
    test_x = np.concatenate([a[~ha], b[~hb]])
    test_y = np.concatenate([np.zeros((~ha).sum(), int), np.ones((~hb).sum(), int)])
    pred = np.asarray(fit_predict(train_x, train_y, test_x))
    correct, n = int(np.sum(pred == test_y)), len(test_y)
    # balanced accuracy: the halves need not hold equal numbers of a and b
    acc = 0.5 * (np.mean(pred[test_y == 0] == 0) + np.mean(pred[test_y == 1] == 1))
    return {"accuracy": float(acc), "n_test": float(n), "p_value": binomial_pvalue(correct, n)}


def logistic_fit_predict(train_x, train_y, test_x):
    """A standardised logistic-regression judge for ``c2st`` on feature vectors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    return clf.fit(train_x, train_y).predict(test_x)


def pixel_vectors(images: np.ndarray, size: int = 32) -> np.ndarray:
    """``uint8[N, H, W, 3]`` -> ``float32[N, D]`` in [0, 1], area-downscaled to at most ``size`` px
    (so a one-pixel shift or JPEG noise does not hide a copy)."""
    x = np.asarray(images, np.float32) / 255.0
    f = max(1, x.shape[1] // size)
    if f > 1:
        n, h, w, c = x.shape
        x = x[:, : h - h % f, : w - w % f].reshape(n, h // f, f, w // f, f, c).mean((2, 4))
    return x.reshape(len(x), -1)


def nearest_neighbours(query: np.ndarray, ref: np.ndarray, *, query_groups=None, ref_groups=None, chunk: int = 1024):
    """For each query row, the distance to and index of its nearest ``ref`` row.

    With groups, a reference row of the query's own group (another photo of the same lesion)
    is not a neighbour. Distances are Euclidean divided by sqrt(dim) (an RMS difference).
    """
    query, ref = np.asarray(query, np.float64), np.asarray(ref, np.float64)
    scale = np.sqrt(query.shape[1])
    dist, idx = np.empty(len(query)), np.empty(len(query), int)
    for i in range(0, len(query), chunk):
        d = pairwise_distances(query[i : i + chunk], ref)
        if query_groups is not None and ref_groups is not None:
            same = np.asarray(query_groups)[i : i + chunk, None] == np.asarray(ref_groups)[None, :]
            d[same] = np.inf
        j = d.argmin(1)
        idx[i : i + chunk], dist[i : i + chunk] = j, d[np.arange(len(j)), j] / scale
    return dist, idx


def detection_table(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    """Paper B's Table III from detector probabilities: per class, the number of images, the
    share assigned to the intended class, the mean probability of the intended class and the
    mean confidence among the correctly assigned ones (paper B's "average accuracy")."""
    labels = np.asarray(labels)
    pred = probs.argmax(1)
    rows = []
    for c, name in enumerate(class_names):
        m = labels == c
        if not m.any():
            continue
        hit = pred[m] == c
        rows.append({
            "class": name,
            "n": int(m.sum()),
            "detection_rate": float(hit.mean()),
            "confidence": float(probs[m, c].mean()),
            "confidence_detected": float(probs[m][hit, c].mean()) if hit.any() else float("nan"),
        })
    return pd.DataFrame(rows)


def top_up_counts(train_counts: np.ndarray, target: int) -> np.ndarray:
    """Synthetic images per class that bring every class below ``target`` up to it."""
    return np.maximum(0, int(target) - np.asarray(train_counts, int))


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


# ============================================================================================
