"""Evaluators: is a generated lesion realistic, faithful to its class, private and useful?

The math lives in small pure functions (arrays in, numbers out) that the tests check against
closed forms; the ``Evaluator`` classes at the bottom only choose the sets, call them and
hand numbers, tables and figures back to the core (``augforge.evaluation``), which logs and
writes everything. Feature-space metrics use the detector's penultimate embedding
(``context.features``), never a downloaded network.

Class handling: a conditional generator is asked for the same number of images per class,
while the real data are imbalanced (HAM10000 is two thirds ``nv``), so metrics compare
like with like: FID uses class-balanced real statistics, the others are computed per class
and macro-averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import linalg, stats

from augforge.interfaces import EvalResult, Evaluator, ImageSet
from augforge.plugins import hookimpl

# ============================================================================================
# Pure functions


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


def copy_threshold(baseline_distances: np.ndarray, quantile: float = 0.01) -> float:
    """The distance below which a generated image counts as a near-copy: the ``quantile`` of
    real held-out images' nearest-training-image distances."""
    d = np.asarray(baseline_distances)
    return float(np.quantile(d[np.isfinite(d)], quantile))


def near_copy_mask(
    generated: np.ndarray,
    train: np.ndarray,
    threshold: float | None = None,
    *,
    baseline: np.ndarray | None = None,
    baseline_groups=None,
    train_groups=None,
    quantile: float = 0.01,
    size: int = 32,
) -> np.ndarray:
    """True for each generated image (``uint8[N, H, W, 3]``) that is a near-copy of a training
    image in pixel space.

    The threshold is either given (an RMS pixel distance in [0, 1]) or taken from real
    held-out images (``baseline``): the ``quantile`` of their nearest-training-image
    distances, so a generated image is flagged when it is closer to the training set than
    99% (by default) of genuinely new lesions are. ``augforge generate --drop-near-copies``
    uses this.
    """
    d, threshold = near_copy_distances(generated, train, threshold, baseline=baseline, baseline_groups=baseline_groups,
                                       train_groups=train_groups, quantile=quantile, size=size)
    return d < threshold


def near_copy_distances(generated, train, threshold=None, *, baseline=None, baseline_groups=None, train_groups=None,
                        quantile: float = 0.01, size: int = 32) -> tuple[np.ndarray, float]:
    """``(distance float[N], threshold)``: each generated image's RMS pixel distance to its
    nearest training image, and the near-copy threshold (given, or from ``baseline`` as
    ``near_copy_mask`` explains). ``near_copy_mask`` and the novelty filter share it."""
    tr = pixel_vectors(train, size)
    if threshold is None:
        if baseline is None:
            raise ValueError("a near-copy check needs a threshold or real held-out baseline images")
        base_d, _ = nearest_neighbours(pixel_vectors(baseline, size), tr, query_groups=baseline_groups, ref_groups=train_groups)
        threshold = copy_threshold(base_d, quantile)
    d, _ = nearest_neighbours(pixel_vectors(generated, size), tr)
    return d, float(threshold)


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
# Evaluators (the core passes real_train, generated, real_test and an EvalContext)


def _per_class(real: ImageSet, fake: ImageSet, min_size: int = 2):
    """Yield ``(class_index, name, real_mask, fake_mask)`` for classes with enough images in both."""
    for c, name in enumerate(fake.class_names):
        mr, mf = np.asarray(real.labels) == c, np.asarray(fake.labels) == c
        if mr.sum() >= min_size and mf.sum() >= min_size:
            yield c, name, mr, mf


def _equal_size(a: np.ndarray, b: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]


class DetectionRate(Evaluator):
    name = "detection-rate"
    description = "paper B's Table III: share of generated images the detector assigns to the intended class"
    objective = "detection_rate"
    direction = "maximize"

    def evaluate(self, real_train, generated, real_test, context):
        names = generated.class_names
        gen = detection_table(context.probs(generated), generated.labels, names)
        real = detection_table(context.probs(real_test), real_test.labels, names)
        metrics = {"detection_rate": float(gen["detection_rate"].mean())}
        real_by = real.set_index("class")
        rows = []
        for row in gen.to_dict("records"):
            name = row["class"]
            metrics[f"detection_rate_{name}"] = row["detection_rate"]
            metrics[f"confidence_{name}"] = row["confidence"]
            real_recall = float(real_by.loc[name, "detection_rate"]) if name in real_by.index else float("nan")
            metrics[f"real_recall_{name}"] = real_recall
            rows.append({**row, "real_test_n": int(real_by.loc[name, "n"]) if name in real_by.index else 0,
                         "real_test_recall": real_recall,
                         "real_test_confidence": float(real_by.loc[name, "confidence"]) if name in real_by.index else float("nan")})
        if len(real):
            metrics["real_recall_macro"] = float(real["detection_rate"].mean())
        return EvalResult(metrics, tables={"detection_rate": pd.DataFrame(rows)})


class FID(Evaluator):
    name = "fid"
    description = "Fréchet distance in the detector's feature space (class-balanced real statistics); + Inception when given"
    objective = "fid"
    direction = "minimize"

    @staticmethod
    def _fid(feats, real_train, generated, real_test, baselines: bool, prefix: str) -> dict[str, float]:
        ref = gaussian_stats(feats(real_train), class_balanced_weights(real_train.labels))
        gen_w = class_balanced_weights(generated.labels)
        metrics = {prefix: frechet_distance(*ref, *gaussian_stats(feats(generated), gen_w))}
        if baselines and len(real_test) > 2:
            # the same distance for real held-out lesions: what a perfect generator would score
            test = gaussian_stats(feats(real_test), class_balanced_weights(real_test.labels))
            metrics[f"{prefix}_real_baseline"] = frechet_distance(*ref, *test)
        return metrics

    def evaluate(self, real_train, generated, real_test, context):
        metrics = self._fid(context.features, real_train, generated, real_test, context.baselines, "fid")
        if context.inception is not None:  # the user pointed to a local Inception file
            metrics |= self._fid(context.inception_features, real_train, generated, real_test, context.baselines, "fid_inception")
        return EvalResult(metrics)


class KID(Evaluator):
    name = "kid"
    description = "kernel inception distance in the detector's feature space, per class (macro mean); + Inception when given"
    objective = "kid"
    direction = "minimize"

    def __init__(self, *, n_subsets: int = 50, subset_size: int = 1000):
        self.n_subsets, self.subset_size = n_subsets, subset_size

    def _macro(self, real, fake, feats, seed: int, prefix: str) -> dict[str, float]:
        fr, ff = feats(real), feats(fake)
        metrics, vals = {}, []
        for c, name, mr, mf in _per_class(real, fake):
            mean, std = kid(fr[mr], ff[mf], n_subsets=self.n_subsets, subset_size=self.subset_size, seed=seed + c)
            metrics[f"{prefix}_{name}"] = mean
            vals.append((mean, std))
        if vals:
            metrics[prefix] = float(np.mean([v[0] for v in vals]))
            metrics[f"{prefix}_std"] = float(np.mean([v[1] for v in vals]))
        return metrics

    def _space(self, feats, real_train, generated, real_test, context, prefix: str) -> dict[str, float]:
        metrics = self._macro(real_train, generated, feats, context.seed, prefix)
        if context.baselines:
            # real held-out lesions scored the same way: what a perfect generator would get
            base = self._macro(real_train, real_test, feats, context.seed, f"{prefix}_real_baseline")
            metrics |= {k: v for k, v in base.items() if k in (f"{prefix}_real_baseline", f"{prefix}_real_baseline_std")}
        return metrics

    def evaluate(self, real_train, generated, real_test, context):
        metrics = self._space(context.features, real_train, generated, real_test, context, "kid")
        if context.inception is not None:
            metrics |= self._space(context.inception_features, real_train, generated, real_test, context, "kid_inception")
        return EvalResult(metrics)


class _ManifoldEvaluator(Evaluator):
    """Shared per-class, equal-size k-NN manifold computation."""

    keys: tuple[str, str]

    def __init__(self, *, k: int = 3):
        self.k = k

    def pair(self, real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
        raise NotImplementedError

    def _macro(self, real, fake, context):
        fr, ff = context.features(real), context.features(fake)
        rng = np.random.default_rng(context.seed)
        per = {}
        for _, name, mr, mf in _per_class(real, fake, min_size=self.k + 2):
            per[name] = self.pair(*_equal_size(fr[mr], ff[mf], rng))
        return per

    def evaluate(self, real_train, generated, real_test, context):
        metrics, per = {}, self._macro(real_train, generated, context)
        for name, vals in per.items():
            for key, v in zip(self.keys, vals):
                metrics[f"{key}_{name}"] = v
        for i, key in enumerate(self.keys):
            if per:
                metrics[key] = float(np.mean([v[i] for v in per.values()]))
        base = self._macro(real_train, real_test, context) if context.baselines else {}
        for i, key in enumerate(self.keys):
            if base:
                metrics[f"{key}_real_baseline"] = float(np.mean([v[i] for v in base.values()]))
        return EvalResult(metrics)


class PrecisionRecall(_ManifoldEvaluator):
    name = "precision-recall"
    description = "k-NN precision (realism) and recall (diversity), Kynkäänniemi 2019, per class"
    objective = "recall"
    direction = "maximize"
    keys = ("precision", "recall")

    def pair(self, real, fake):
        return precision_recall(real, fake, self.k)


class DensityCoverage(_ManifoldEvaluator):
    name = "density-coverage"
    description = "density and coverage, Naeem 2020, per class"
    objective = "coverage"
    direction = "maximize"
    keys = ("density", "coverage")

    def __init__(self, *, k: int = 5):
        super().__init__(k=k)

    def pair(self, real, fake):
        return density_coverage(real, fake, self.k)


def _class_matched(ref: ImageSet, gen: ImageSet, rng) -> tuple[ImageSet, ImageSet]:
    """Equal numbers of reference and generated images in every class, so a judge cannot
    win by learning the class mix instead of realism."""
    ri, gi = [], []
    for c in range(len(gen.class_names)):
        r, g = np.flatnonzero(np.asarray(ref.labels) == c), np.flatnonzero(np.asarray(gen.labels) == c)
        n = min(len(r), len(g))
        ri.append(rng.choice(r, n, replace=False))
        gi.append(rng.choice(g, n, replace=False))
    return ref.subset(np.sort(np.concatenate(ri))), gen.subset(np.sort(np.concatenate(gi)))


class C2ST(Evaluator):
    name = "c2st"
    description = "classifier two-sample test: held-out accuracy of a fresh real-vs-generated judge"
    objective = "c2st_accuracy"
    direction = "minimize"

    def __init__(self, *, judge: str = "paper-b-cnn", widths: list[int] = (16, 32, 64), epochs: int = 15, reference: str = "test",
                 repeats: int = 3):
        if reference not in ("test", "train"):
            raise ValueError(f"c2st reference must be 'test' or 'train', got {reference!r}")
        if repeats < 1:
            raise ValueError(f"c2st repeats must be >= 1, got {repeats}")
        self.judge, self.widths, self.epochs, self.reference = judge, list(widths), epochs, reference
        # one judge's accuracy moves by ~0.05 with its split and initial weights (measured on
        # HAM10000 64 px), more than the binomial noise of ~450 test images: average several
        self.repeats = repeats

    def _pixel_judge(self, context, image_size, seed: int):
        from augforge.evaluation.classify import fit_classifier, predict_proba

        def fit_predict(train_x, train_y, test_x):
            model = context.new_classifier(2, seed=seed, classifier=self.judge, image_size=image_size, widths=self.widths)
            rng = np.random.default_rng(seed)
            # a fifth of the training half picks the epoch; the held-out half stays untouched
            val = rng.random(len(train_y)) < 0.2
            fit = fit_classifier(
                model, ImageSet(train_x[~val], train_y[~val], ["real", "generated"]),
                ImageSet(train_x[val], train_y[val], ["real", "generated"]),
                seed=seed, device=context.device, epochs=self.epochs, oversample=False, patience=self.epochs,
                batch_size=int(np.clip((~val).sum() // 8, 8, 64)),  # at least ~8 steps an epoch on small sets
            )
            return predict_proba(fit.model, test_x, context.device).argmax(1)

        return fit_predict

    def evaluate(self, real_train, generated, real_test, context):
        rng = np.random.default_rng(context.seed)
        ref = real_test if self.reference == "test" else real_train
        ref, gen = _class_matched(ref, generated, rng)
        if len(ref) < 8:
            return EvalResult({"c2st_accuracy": float("nan")})
        runs = []
        for r in range(self.repeats):  # a new half/half split and a new judge each time
            seed = context.seed + r
            runs.append(c2st(ref.images, gen.images, self._pixel_judge(context, ref.images.shape[1], seed), groups_a=ref.groups, seed=seed))
        accs = [run["accuracy"] for run in runs]
        feat = c2st(context.features(ref), context.features(gen), logistic_fit_predict, groups_a=ref.groups, seed=context.seed)
        mean, std = mean_std(accs)
        return EvalResult({
            "c2st_accuracy": mean, "c2st_accuracy_std": std, "c2st_accuracy_min": float(min(accs)),
            "c2st_accuracy_max": float(max(accs)), "c2st_repeats": float(self.repeats),
            "c2st_p_value": float(max(run["p_value"] for run in runs)),  # the least significant repeat
            "c2st_n_test": runs[0]["n_test"],
            "c2st_feature_accuracy": feat["accuracy"], "c2st_feature_p_value": feat["p_value"],
        })


def _pairs_sheet(gen_images, train_images, order, gen_idx_nn, dists, n_pairs: int = 24) -> np.ndarray:
    """A sheet of (generated | nearest training image) pairs, closest first, two pairs per row;
    captions give the distance and both indices (``tables/nearest_training_images.csv``)."""
    from PIL import Image, ImageDraw

    order = order[:n_pairs]
    h = max(96, 2 * gen_images.shape[1])  # upscaled (nearest) so small images stay inspectable
    cell_w, cell_h = 2 * h + 12, h + 14
    cols = 2
    rows = max(1, int(np.ceil(len(order) / cols)))
    sheet = Image.new("RGB", (cols * cell_w + 8, rows * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(order):
        x0, y0 = 4 + (n % cols) * cell_w, 2 + (n // cols) * cell_h
        g = Image.fromarray(gen_images[i]).resize((h, h), Image.Resampling.NEAREST)
        t = Image.fromarray(train_images[gen_idx_nn[i]]).resize((h, h), Image.Resampling.NEAREST)
        sheet.paste(g, (x0, y0))
        sheet.paste(t, (x0 + h + 2, y0))
        draw.text((x0, y0 + h), f"d={dists[i]:.3f} g{i} t{gen_idx_nn[i]}", fill=(0, 0, 0))
    return np.asarray(sheet)


class Memorization(Evaluator):
    name = "memorization"
    description = "share of generated images closer to a training image than real held-out lesions are"
    objective = "memorization"
    direction = "minimize"

    def __init__(self, *, quantile: float = 0.01, pixel_size: int = 32, pairs: int = 24):
        self.quantile, self.pixel_size, self.pairs = quantile, pixel_size, pairs

    def evaluate(self, real_train, generated, real_test, context):
        spaces = {
            "feature": (context.features(generated), context.features(real_train), context.features(real_test)),
            "pixel": tuple(pixel_vectors(s.images, self.pixel_size) for s in (generated, real_train, real_test)),
        }
        metrics, nn = {}, {}
        rows = {"generated_index": np.arange(len(generated)), "label": [generated.class_names[i] for i in generated.labels]}
        for space, (g, tr, te) in spaces.items():
            gd, gi = nearest_neighbours(g, tr)
            # held-out real lesions: never matched with another photo of themselves
            bd, _ = nearest_neighbours(te, tr, query_groups=real_test.groups, ref_groups=real_train.groups)
            thr = copy_threshold(bd, self.quantile)
            metrics[f"memorization_{space}"] = float(np.mean(gd < thr))
            metrics[f"nn_distance_ratio_{space}"] = float(np.median(gd) / np.median(bd[np.isfinite(bd)]))
            metrics[f"copy_threshold_{space}"] = thr
            nn[space] = (gd, gi)
            rows[f"{space}_distance"], rows[f"{space}_train_index"] = gd, gi
            if real_train.groups is not None:
                rows[f"{space}_train_group"] = np.asarray(real_train.groups)[gi]
        metrics["memorization"] = max(metrics["memorization_feature"], metrics["memorization_pixel"])
        figures = {}
        for space in spaces:
            gd, gi = nn[space]
            figures[f"closest_pairs_{space}"] = _pairs_sheet(generated.images, real_train.images, np.argsort(gd), gi, gd, self.pairs)
        table = pd.DataFrame(rows).sort_values("pixel_distance")
        return EvalResult(metrics, figures, {"nearest_training_images": table})


class AugmentationGain(Evaluator):
    name = "augmentation-gain"
    description = "detector trained on real, real+synthetic, synthetic only; scored on the real test split"
    objective = "augmentation_gain"
    direction = "maximize"
    cheap = False

    def __init__(self, *, seeds: int = 3, target_count: int = 0, synthetic_per_class: int = 0, epochs: int = 0):
        if seeds < 1:
            raise ValueError("augmentation-gain needs seeds >= 1 (3 or more for a spread)")
        self.seeds, self.target_count, self.synthetic_per_class, self.epochs = seeds, target_count, synthetic_per_class, epochs

    def evaluate(self, real_train, generated, real_test, context):
        names = real_train.class_names
        counts = np.bincount(real_train.labels, minlength=len(names))
        # default target: the second-largest class, so rare classes are topped up to it
        target = self.target_count or int(np.sort(counts)[-2] if len(counts) > 1 else counts[0])
        extra = top_up_counts(counts, target)
        n_synth = self.synthetic_per_class or target
        synth_top = context.sample(extra)
        synth_only = context.sample(np.full(len(names), n_synth))
        settings = {
            "real": real_train,
            "real+synthetic": _concat(real_train, synth_top),
            "synthetic": synth_only,
        }
        table = paired_fits(settings, self.seeds, self.epochs, context, real_test, names)
        metrics = {"augmentation_target_count": float(target), "augmentation_synthetic_added": float(extra.sum())}
        keys = {"real": "aug_real", "real+synthetic": "aug_mixed", "synthetic": "aug_synthetic"}
        for setting, key in keys.items():
            sub = table[table.setting == setting]
            metrics[f"{key}_bacc_mean"], metrics[f"{key}_bacc_std"] = mean_std(sub.balanced_accuracy)
            for n in names:
                metrics[f"{key}_recall_{n}_mean"], metrics[f"{key}_recall_{n}_std"] = mean_std(sub[f"recall_{n}"])
        metrics["augmentation_gain"] = metrics["aug_mixed_bacc_mean"] - metrics["aug_real_bacc_mean"]
        metrics["synthetic_only_gap"] = metrics["aug_synthetic_bacc_mean"] - metrics["aug_real_bacc_mean"]
        for n in names:
            metrics[f"augmentation_gain_recall_{n}"] = metrics[f"aug_mixed_recall_{n}_mean"] - metrics[f"aug_real_recall_{n}_mean"]
        summary = table.groupby("setting").agg(["mean", "std"]).drop(columns=["seed", "best_epoch"], level=0)
        summary.columns = [f"{a}_{b}" for a, b in summary.columns]
        return EvalResult(metrics, tables={"augmentation_gain_runs": table, "augmentation_gain": summary.reset_index()})


def paired_fits(settings: dict[str, ImageSet], seeds: int, epochs: int, context, real_test: ImageSet, names) -> pd.DataFrame:
    """Train one detector per (training set, seed) and score it on ``real_test``: a row per fit
    with balanced accuracy and per-class recall. Every setting of a seed starts from the same
    initial weights (``context.new_classifier(seed=)``), so settings compare paired."""
    from augforge.evaluation.classify import classification_metrics, fit_classifier, predict_proba  # torch: only when fitting

    rows = []
    for seed in range(seeds):
        for setting, train in settings.items():
            model = context.new_classifier(seed=context.seed + seed)
            fit = fit_classifier(model, train, context.real_val, seed=context.seed + seed, device=context.device,
                                 **({"epochs": epochs} if epochs else {}))
            m, _ = classification_metrics(predict_proba(fit.model, real_test.images, context.device), real_test.labels, names)
            rows.append({"setting": setting, "seed": seed, "best_epoch": fit.best_epoch,
                         "balanced_accuracy": m["balanced_accuracy"], **{f"recall_{n}": m[f"recall_{n}"] for n in names}})
    return pd.DataFrame(rows)


def _concat(a: ImageSet, b: ImageSet) -> ImageSet:
    return ImageSet(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]), a.class_names)


@hookimpl
def augforge_register_evaluators():
    return [DetectionRate, FID, KID, PrecisionRecall, DensityCoverage, C2ST, Memorization, AugmentationGain]
