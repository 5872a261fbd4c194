"""Augmentation gain: a detector trained on real, real + synthetic (rare classes topped up) and synthetic only, paired by seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from augforge.interfaces import EvalResult, Evaluator, ImageSet
from augforge_plugins.measures import mean_std, top_up_counts


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
