"""Evaluators: is a generated lesion realistic, faithful to its class, private and useful?

The math lives in small pure functions (``measures.py``, arrays in, numbers out) that the tests
check against closed forms; the ``Evaluator`` classes here, in ``privacy.py`` (memorisation) and
``augmentation.py`` (augmentation gain) only choose the sets, call them and hand numbers, tables
and figures back to the core (``augforge.evaluation``), which logs and writes everything. Feature-space metrics use the detector's penultimate embedding
(``context.features``), never a downloaded network.

Class handling: a conditional generator is asked for the same number of images per class,
while the real data are imbalanced (HAM10000 is two thirds ``nv``), so metrics compare
like with like: FID uses class-balanced real statistics, the others are computed per class
and macro-averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from augforge.interfaces import EvalResult, Evaluator, ImageSet
from augforge.plugins import hookimpl
from augforge_plugins.augmentation import AugmentationGain
from augforge_plugins.measures import (c2st, class_balanced_weights, density_coverage, detection_table, frechet_distance,
                                       gaussian_stats, kid, logistic_fit_predict, mean_std, precision_recall)
from augforge_plugins.privacy import Memorization

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


@hookimpl
def augforge_register_evaluators():
    return [DetectionRate, FID, KID, PrecisionRecall, DensityCoverage, C2ST, Memorization, AugmentationGain]
