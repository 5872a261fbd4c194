"""Classification Accuracy Score (Ravuri & Vinyals 2019): train on synthetic, test on real.

A classifier trained only on generated images and scored on the real, lesion-grouped test
split says, class by class, which lesions the generator can already stand in for: a class
whose CAS recall is close to the real-trained recall is usable as synthetic data; one near
zero is not. The classifier and its recipe are augmentation-gain's (``context.new_classifier``
with the same per-seed start, ``augforge.evaluation.classify.fit_classifier`` with the best epoch chosen
on the real val split), so CAS and the real-only reference are paired by seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from augforge.interfaces import EvalResult, Evaluator
from augforge.plugins import hookimpl


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, np.float64)
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


class ClassificationAccuracyScore(Evaluator):
    name = "cas"
    description = "classification accuracy score: a classifier trained on synthetic only, tested on real (per class)"
    objective = "cas"
    direction = "maximize"
    cheap = False

    def __init__(self, *, seeds: int = 3, synthetic_per_class: int = 0, epochs: int = 0, reference: bool = True):
        """``synthetic_per_class``: 0 = the second-largest real class's count (augmentation-gain's
        synthetic-only size); ``reference``: also train on real only, for per-class gaps."""
        if seeds < 1:
            raise ValueError(f"cas needs seeds >= 1 (3 or more for a spread), got {seeds}")
        if synthetic_per_class < 0 or epochs < 0:
            raise ValueError(f"cas synthetic_per_class and epochs must be >= 0, got {synthetic_per_class}, {epochs}")
        self.seeds, self.synthetic_per_class, self.epochs, self.reference = seeds, synthetic_per_class, epochs, reference

    def evaluate(self, real_train, generated, real_test, context):
        from augforge_plugins.augmentation import paired_fits

        names = real_train.class_names
        counts = np.bincount(real_train.labels, minlength=len(names))
        n = self.synthetic_per_class or int(np.sort(counts)[-2] if len(counts) > 1 else counts[0])
        settings = {"synthetic": context.sample(np.full(len(names), n))}
        if self.reference:
            settings["real"] = real_train
        runs = paired_fits(settings, self.seeds, self.epochs, context, real_test, names)
        metrics = {"cas_synthetic_per_class": float(n)}
        per_class = []
        for setting, key in (("synthetic", "cas"), ("real", "cas_real")):
            sub = runs[runs.setting == setting]
            if sub.empty:
                continue
            metrics[key], metrics[f"{key}_std"] = _mean_std(sub.balanced_accuracy)
            for c in names:
                metrics[f"{key}_recall_{c}"], metrics[f"{key}_recall_{c}_std"] = _mean_std(sub[f"recall_{c}"])
        for c in names:
            row = {"class": c, "real_train_images": int(counts[names.index(c)]), "cas_recall": metrics[f"cas_recall_{c}"],
                   "cas_recall_std": metrics[f"cas_recall_{c}_std"]}
            if self.reference:
                row["real_recall"] = metrics[f"cas_real_recall_{c}"]
                metrics[f"cas_gap_recall_{c}"] = row["cas_gap"] = metrics[f"cas_recall_{c}"] - metrics[f"cas_real_recall_{c}"]
            per_class.append(row)
        if self.reference:
            metrics["cas_gap"] = metrics["cas"] - metrics["cas_real"]
        return EvalResult(metrics, tables={"cas_runs": runs, "cas_per_class": pd.DataFrame(per_class)})


@hookimpl
def augforge_register_evaluators():
    return [ClassificationAccuracyScore]
