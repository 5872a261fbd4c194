"""Augmentation policies: how many synthetic images join a real training set, and which ones.

A policy is a named, parsed object, so the evaluator that measures it and a downstream
trainer that uses it mix exactly the same set for the same seed. numpy only (no torch): it
belongs with the torch-free runtime.

Forms (``parse_policy``)::

    top-up:N              bring every class below N real images up to N (augmentation-gain's
                          historical behaviour); ``top-up`` alone: N = the second-largest class
    ratio:R               add round(R x the class's real count) synthetic images, capped so no
                          class ends above the largest class's real count (RATIO_CAP)
    balanced              bring every class to the largest class's real count
    ...:filtered          choose the best-scored synthetic images (``augforge.evaluation.filtering``)
                          instead of a seeded random choice
    ...:weight=W          loss weight of a synthetic sample (real samples weigh 1)
    pretrain-synthetic:…  two stages: train on real + synthetic, then fine-tune on real only
    none                  real images only: what the policy study recommends when no policy
                          beat real-only training on the val split

e.g. ``top-up:669``, ``ratio:0.5``, ``balanced:filtered``, ``ratio:1:filtered:weight=0.5``,
``pretrain-synthetic:ratio:1``. Rounding is half up (``floor(x + 0.5)``), never Python's
half-to-even, so counts do not depend on parity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from augforge_runtime.errors import RuntimeModelError

KINDS = ("top-up", "ratio", "balanced", "none")
#: ``ratio:R`` never lifts a class above the largest class's real count: synthetic images for
#: the majority class would only deepen the imbalance the classifier is fighting
RATIO_CAP = "largest real class"
FORMS = (
    "top-up[:N]", "ratio:R", "balanced", "none", "<form>:filtered", "<form>:weight=W", "pretrain-synthetic:<form>",
)


class PolicyError(RuntimeModelError):
    """A policy string or its inputs cannot be used as given."""


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(np.asarray(x, np.float64) + 0.5).astype(int)


@dataclass(frozen=True)
class Policy:
    """One augmentation policy; ``str(policy)`` is its canonical form (``parse_policy`` reads it)."""

    kind: str  # one of KINDS
    value: float | None = None  # N for top-up (None: second-largest class), R for ratio
    filtered: bool = False  # best-scored synthetic images first, not a seeded random choice
    two_stage: bool = False  # pretrain-synthetic: real + synthetic, then real only
    synthetic_weight: float = 1.0  # loss weight of a synthetic sample

    def __post_init__(self):
        if self.kind not in KINDS:
            raise PolicyError(f"unknown policy kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.kind == "ratio" and (self.value is None or self.value < 0):
            raise PolicyError(f"ratio needs R >= 0, got {self.value!r}; e.g. ratio:0.5")
        if self.kind == "top-up" and self.value is not None and (self.value < 0 or self.value != int(self.value)):
            raise PolicyError(f"top-up needs a whole N >= 0, got {self.value!r}; e.g. top-up:669")
        if self.kind == "none" and (self.value is not None or self.filtered or self.two_stage or self.synthetic_weight != 1.0):
            raise PolicyError("none (real images only) takes no number, filtered, weight= or pretrain-synthetic")
        if not self.synthetic_weight > 0:
            raise PolicyError(f"synthetic weight must be > 0, got {self.synthetic_weight!r}")

    def __str__(self) -> str:
        base = self.kind
        if self.value is not None:
            base += f":{int(self.value)}" if self.kind == "top-up" else f":{self.value:g}"
        parts = (["pretrain-synthetic"] if self.two_stage else []) + [base]
        parts += ["filtered"] if self.filtered else []
        parts += [f"weight={self.synthetic_weight:g}"] if self.synthetic_weight != 1.0 else []
        return ":".join(parts)

    def synthetic_counts(self, real_counts) -> np.ndarray:
        """Synthetic images per class (``int[C]``) for ``real_counts[C]`` real training images."""
        n = np.asarray(real_counts, int)
        if n.ndim != 1 or len(n) == 0 or (n < 0).any():
            raise PolicyError(f"real_counts must be a non-empty 1-d array of counts >= 0, got {real_counts!r}")
        if self.kind == "top-up":
            target = int(self.value) if self.value is not None else int(np.sort(n)[-2] if len(n) > 1 else n[0])
            return np.maximum(0, target - n)
        if self.kind == "balanced":
            return n.max() - n
        if self.kind == "none":
            return np.zeros_like(n)
        return np.minimum(_round_half_up(self.value * n), n.max() - n)  # ratio, capped (RATIO_CAP)


def parse_policy(text: str | Policy) -> Policy:
    """``"ratio:1:filtered"`` -> ``Policy``; see the module docstring for the forms."""
    if isinstance(text, Policy):
        return text
    valid = "valid forms: " + ", ".join(FORMS) + " (e.g. top-up:669, ratio:0.5, balanced:filtered, pretrain-synthetic:ratio:1)"
    parts = [p.strip() for p in str(text).strip().lower().split(":")]
    two_stage = parts[0] == "pretrain-synthetic"
    if two_stage:
        parts = parts[1:]
    if not parts or parts[0] not in KINDS:
        raise PolicyError(f"policy {text!r}: expected top-up, ratio, balanced or none; {valid}")
    kind, rest = parts[0], parts[1:]
    value = None
    if kind in ("top-up", "ratio") and rest and rest[0] not in ("filtered",) and not rest[0].startswith("weight="):
        try:
            value = float(rest[0])
        except ValueError:
            raise PolicyError(f"policy {text!r}: {rest[0]!r} is not a number; {valid}") from None
        rest = rest[1:]
    if kind == "ratio" and value is None:
        raise PolicyError(f"policy {text!r}: ratio needs R, e.g. ratio:0.5; {valid}")
    filtered, weight = False, 1.0
    for p in rest:
        if p == "filtered" and not filtered:
            filtered = True
        elif p.startswith("weight="):
            try:
                weight = float(p.partition("=")[2])
            except ValueError:
                raise PolicyError(f"policy {text!r}: {p!r} needs a number, e.g. weight=0.5") from None
        else:
            raise PolicyError(f"policy {text!r}: unexpected {p!r}; {valid}")
    try:
        return Policy(kind, value, filtered, two_stage, weight)
    except PolicyError as exc:
        raise PolicyError(f"policy {text!r}: {exc}; {valid}") from None


def mix(real_labels, synth_labels, policy: str | Policy, seed: int = 0, scores=None, num_classes: int | None = None) -> np.ndarray:
    """Indices into the synthetic set that join the real one under ``policy``, sorted.

    Per class, ``policy.synthetic_counts`` images are needed; when more are available, an
    unfiltered policy takes a choice seeded by ``(seed, class)``, a filtered one the highest
    ``scores`` first (ties in a seeded order). Fewer available than needed is an error: draw
    more synthetic images. The same inputs and seed always give the same indices.
    """
    policy = parse_policy(policy)
    real_labels, synth_labels = np.asarray(real_labels, int), np.asarray(synth_labels, int)
    c = int(num_classes or max(real_labels.max(initial=-1), synth_labels.max(initial=-1)) + 1)
    need = policy.synthetic_counts(np.bincount(real_labels, minlength=c))
    if policy.filtered:
        if scores is None:
            raise PolicyError(f"policy {policy} is filtered: pass the synthetic images' scores (augforge.evaluation.filtering)")
        scores = np.asarray(scores, np.float64)
        if scores.shape != synth_labels.shape:
            raise PolicyError(f"scores has shape {scores.shape}, synth_labels {synth_labels.shape}: one score per synthetic image")
    chosen = []
    for k in range(c):
        pool = np.flatnonzero(synth_labels == k)
        if len(pool) < need[k]:
            raise PolicyError(f"policy {policy} needs {need[k]} synthetic images of class {k}, only {len(pool)} given; "
                              f"generate at least {need[k]} per class")
        rng = np.random.default_rng([int(seed), k])
        order = rng.permutation(len(pool))  # the seeded order: the choice, or the tie-break
        if policy.filtered:
            order = order[np.argsort(-scores[pool][order], kind="stable")]
        chosen.append(pool[order[: need[k]]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, int)


def sample_weights(n_real: int, n_synthetic: int, policy: str | Policy) -> np.ndarray:
    """Per-sample loss weights for a mixed set laid out as [real..., synthetic...]."""
    policy = parse_policy(policy)
    return np.concatenate([np.ones(int(n_real)), np.full(int(n_synthetic), policy.synthetic_weight)])


def describe(policy: str | Policy, real_counts, class_names=None) -> str:
    """One line per class: real count, synthetic added, total -- for logs and reports."""
    policy = parse_policy(policy)
    n = np.asarray(real_counts, int)
    add = policy.synthetic_counts(n)
    names = class_names or [str(i) for i in range(len(n))]
    width = max(map(len, names))
    lines = [f"policy {policy}" + (" (two stages: real+synthetic, then real)" if policy.two_stage else "")]
    lines += [f"  {nm:<{width}} real {r:6d} + synthetic {a:6d} = {r + a:6d}" for nm, r, a in zip(names, n, add)]
    return "\n".join(lines)

