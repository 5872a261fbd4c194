"""Policy study: which augmentation policy (``augforge_runtime.policies``) helps a classifier, measured.

For one generator, every policy of a small grid mixes synthetic images into the real training
split (``augforge_runtime.policies.mix``: the same set a downstream trainer gets for that policy and
seed), trains augmentation-gain's classifier recipe on it for each seed, and scores it on the
lesion-grouped val and test splits, paired with a real-only run from the same initial weights.
The best policy is chosen on **val** only; its **test** gain is reported with mean +- std over
seeds, the paired per-seed delta with a 95 % t-interval, and per-class recall deltas. Real-only
training is a candidate too: when no policy's mean val gain exceeds ``min_val_gain``, the study
recommends ``none`` (its gain is 0 by construction) and still reports the best mixing policy's test
gain (``policy_study_best_mixing_*``), so a user is never told to mix in images that did not help.

Filtered policies rank the synthetic pool by the detector's probability of the intended class
(``label``), the distance to the nearest training image (``novelty``) and, when the evaluation
has the generator's discriminator (a checkpoint, or an ONNX file exported with
``--with-discriminator``), its ``realism`` logit, with near-copies of training images last
(``augforge.evaluation.filtering``). ``pretrain-synthetic`` fine-tunes on real only at a tenth of the
learning rate. ``:weight=W`` trains with per-item loss weights (W for synthetic items, 1 for real
ones; ``fit_classifier(sample_weights=...)``), as ``augforge_runtime.Mixed.weight`` gives them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from augforge.interfaces import EvalResult, Evaluator, ImageSet
from augforge.plugins import hookimpl

#: the reference first: augmentation-gain's unfiltered top-up to the second-largest class
DEFAULT_POLICIES = ("top-up", "top-up:filtered", "ratio:0.5", "ratio:0.5:filtered", "balanced:filtered",
                    "pretrain-synthetic:ratio:1:filtered")
FINE_TUNE_LR = 0.1  # pretrain-synthetic: the real-only stage's learning rate, relative to the recipe's


def t_interval(deltas, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t interval for the mean of paired deltas (nan with fewer than 2)."""
    d = np.asarray(deltas, np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def gain_chart(table: pd.DataFrame, chosen: str) -> np.ndarray:
    """uint8[H, W, 3]: test gain per policy (mean +- std over seeds), the chosen one highlighted."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 * len(table) + 2, 3.6))
    colours = ["tab:orange" if p == chosen else "tab:blue" for p in table.policy]
    ax.bar(range(len(table)), table.test_gain_mean, yerr=table.test_gain_std, color=colours, capsize=4)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(table)), table.policy, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test balanced-accuracy gain vs real only")
    title = f"orange: chosen on val, {chosen}" if chosen in set(table.policy) else "none chosen: no policy beat real only on val"
    ax.set_title(f"policy study ({title})", fontsize=9)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


class PolicyStudy(Evaluator):
    name = "policy-study"
    description = "augmentation policies compared: choose on val, report the test gain with a paired 95% interval"
    objective = "policy_study_gain"
    direction = "maximize"
    cheap = False

    def __init__(self, *, policies: list[str] = DEFAULT_POLICIES, seeds: int = 3, epochs: int = 0, filter_pool: float = 2.0,
                 min_val_gain: float = 0.0):
        """``filter_pool``: synthetic draws per needed image, so filtered policies have a choice.
        ``min_val_gain``: the mean val balanced-accuracy gain over real only a policy must exceed to
        be recommended; below it the study recommends ``none`` (real images only)."""
        from augforge_runtime.policies import parse_policy

        self.policies = [parse_policy(p) for p in policies]
        if any(p.kind == "none" for p in self.policies):
            raise ValueError("policy-study always compares against real only (`none`); list only mixing policies")
        if len(self.policies) < 2 or len({str(p) for p in self.policies}) != len(self.policies):
            raise ValueError(f"policy-study needs at least 2 distinct policies, got {list(policies)}")
        if seeds < 1 or epochs < 0 or filter_pool < 1:
            raise ValueError(f"policy-study needs seeds >= 1, epochs >= 0, filter_pool >= 1; got {seeds}, {epochs}, {filter_pool}")
        self.seeds, self.epochs, self.filter_pool, self.min_val_gain = seeds, epochs, filter_pool, min_val_gain

    def _pool(self, real_train, context):
        """The synthetic pool every policy draws from, and its filter score (higher = better)."""
        from augforge.evaluation.filtering import label_probability, novelty, select

        counts = np.bincount(real_train.labels, minlength=len(real_train.class_names))
        need = np.max([p.synthetic_counts(counts) for p in self.policies], axis=0)
        filtered = any(p.filtered for p in self.policies)
        pool = context.sample(np.ceil(need * (self.filter_pool if filtered else 1.0)).astype(int))
        if not filtered or len(pool) == 0:
            return pool, None
        scores = {"label": label_probability(context.detector, pool.images, pool.labels, context.device)}
        val = context.real_val
        dist, copies, _ = novelty(pool.images, real_train.images, baseline=val.images, baseline_groups=val.groups,
                                  train_groups=real_train.groups)
        scores["novelty"] = dist
        if context.realism is not None:  # the generator's discriminator, when the evaluation has it
            scores["realism"] = context.realism(pool)
        combined = select(pool.labels, scores, keep=1.0, near_copy=copies).combined
        return pool, np.where(copies, -np.inf, combined)  # near-copies only when nothing else is left

    def _fit_score(self, train, policy, seed, real_train, real_test, context):
        from augforge.evaluation.classify import classification_metrics, fit_classifier, predict_proba

        extra = {"epochs": self.epochs} if self.epochs else {}
        model = context.new_classifier(seed=seed)  # the same start for every policy: paired
        weights = None
        if policy is not None and policy.synthetic_weight != 1.0:  # real items first, then the synthetic ones
            n_real = len(real_train)
            weights = np.r_[np.ones(n_real), np.full(len(train) - n_real, policy.synthetic_weight)]
        fit = fit_classifier(model, train, context.real_val, seed=seed, device=context.device, sample_weights=weights, **extra)
        if policy is not None and policy.two_stage:
            lr = fit.recipe["lr"] * FINE_TUNE_LR
            fit = fit_classifier(fit.model, real_train, context.real_val, seed=seed, device=context.device, lr=lr, **extra)
        names = real_train.class_names
        val, _ = classification_metrics(predict_proba(fit.model, context.real_val.images, context.device), context.real_val.labels, names)
        test, _ = classification_metrics(predict_proba(fit.model, real_test.images, context.device), real_test.labels, names)
        return {"val_bacc": val["balanced_accuracy"], "test_bacc": test["balanced_accuracy"],
                **{f"recall_{n}": test[f"recall_{n}"] for n in names}}

    def evaluate(self, real_train, generated, real_test, context):
        from augforge_runtime.policies import mix

        if context.real_val is None:
            raise ValueError("policy-study chooses a policy on the val split: the evaluation context has no real_val")
        names = real_train.class_names
        pool, scores = self._pool(real_train, context)
        rows = []
        for s in range(self.seeds):
            seed = context.seed + s
            rows.append({"policy": "real", "seed": s, "synthetic": 0,
                         **self._fit_score(real_train, None, seed, real_train, real_test, context)})
            for p in self.policies:
                idx = mix(real_train.labels, pool.labels, p, seed=seed, scores=scores if p.filtered else None,
                          num_classes=len(names))
                syn = pool.subset(idx)
                train = ImageSet(np.concatenate([real_train.images, syn.images]), np.concatenate([real_train.labels, syn.labels]), names)
                rows.append({"policy": str(p), "seed": s, "synthetic": len(idx), **self._fit_score(train, p, seed, real_train, real_test, context)})
        runs = pd.DataFrame(rows)
        base = runs[runs.policy == "real"].set_index("seed")
        deltas = runs[runs.policy != "real"].copy()
        for col in ["val_bacc", "test_bacc"] + [f"recall_{n}" for n in names]:
            deltas[col] = deltas[col].to_numpy() - base.loc[deltas.seed, col].to_numpy()
        order = [str(p) for p in self.policies]
        table = deltas.groupby("policy", sort=False).agg(
            val_gain_mean=("val_bacc", "mean"), test_gain_mean=("test_bacc", "mean"),
            test_gain_std=("test_bacc", lambda x: float(np.std(x, ddof=1)) if len(x) > 1 else 0.0),
            synthetic=("synthetic", "mean")).reindex(order).reset_index()
        best = str(table.loc[table.val_gain_mean.idxmax(), "policy"])  # val only: test stays untouched
        chosen = best if table.val_gain_mean.max() > self.min_val_gain else "none"
        table["chosen"] = table.policy == chosen
        best_seed = deltas[deltas.policy == best]
        # "none" trains on real only: its paired deltas are zero by construction
        per_seed = best_seed if chosen == best else best_seed.assign(**{c: 0.0 for c in ["test_bacc"] + [f"recall_{n}" for n in names]})
        low, high = t_interval(per_seed.test_bacc)
        best_low, best_high = t_interval(best_seed.test_bacc)
        ref = deltas[deltas.policy == order[0]]
        metrics = {
            "policy_study_gain": float(per_seed.test_bacc.mean()),
            "policy_study_gain_std": float(per_seed.test_bacc.std(ddof=1)) if self.seeds > 1 else 0.0,
            "policy_study_gain_ci_low": low, "policy_study_gain_ci_high": high,
            "policy_study_chosen_index": float(order.index(chosen)) if chosen in order else -1.0,
            "policy_study_seeds": float(self.seeds),
            "policy_study_best_mixing_index": float(order.index(best)),
            "policy_study_best_mixing_gain": float(best_seed.test_bacc.mean()),
            "policy_study_best_mixing_gain_ci_low": best_low, "policy_study_best_mixing_gain_ci_high": best_high,
            "policy_study_reference_gain": float(ref.test_bacc.mean()),
            "policy_study_real_bacc": float(base.test_bacc.mean()),
        }
        for n in names:
            metrics[f"policy_study_gain_recall_{n}"] = float(per_seed[f"recall_{n}"].mean())
            lo, hi = t_interval(per_seed[f"recall_{n}"])
            metrics[f"policy_study_gain_recall_{n}_ci_low"], metrics[f"policy_study_gain_recall_{n}_ci_high"] = lo, hi
            metrics[f"policy_study_best_mixing_gain_recall_{n}"] = float(best_seed[f"recall_{n}"].mean())
        for i, row in table.iterrows():
            metrics[f"policy_study_{i}_val_gain"] = float(row.val_gain_mean)
            metrics[f"policy_study_{i}_test_gain"] = float(row.test_gain_mean)
        recall = per_seed[[f"recall_{n}" for n in names]].mean().rename(lambda c: c[7:]).rename("recall_delta")
        gain = (f"test balanced-accuracy gain {metrics['policy_study_gain']:+.3f} +- {metrics['policy_study_gain_std']:.3f} "
                f"over {self.seeds} seeds, paired 95% CI [{low:+.3f}, {high:+.3f}]; chosen on val among none, {', '.join(order)}")
        if chosen == "none":
            gain += (f"; no policy beat real only on val (best {best}: val {table.val_gain_mean.max():+.3f}, "
                     f"test {metrics['policy_study_best_mixing_gain']:+.3f} [{best_low:+.3f}, {best_high:+.3f}])")
        return EvalResult(metrics, figures={"policy_study_gain": gain_chart(table, chosen)},
                          tags={"recommended_policy": chosen, "recommended_policy_evidence": gain},
                          tables={"policy_study": table, "policy_study_runs": runs,
                                  "policy_study_recall_delta": recall.rename_axis("class").reset_index()})


@hookimpl
def augforge_register_evaluators():
    return [PolicyStudy]
