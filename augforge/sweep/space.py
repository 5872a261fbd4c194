"""The search space and the objective: the core's training keys plus each plugin's ``search_space(trial)``, prefixed so a trial replays as ``--set`` keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


from augforge.config import RunConfig
from augforge.errors import ConfigError


DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
PARENT_ATTR = "mlflow_parent_run_id"
BASE_ATTR = "augforge_base"

#: the core's search space: dotted key -> suggest(trial, key)
CORE_SPACE: dict[str, Callable] = {
    "train.lr_g": lambda t, k: t.suggest_float(k, 5e-5, 1e-3, log=True),
    "train.lr_d": lambda t, k: t.suggest_float(k, 5e-5, 2e-3, log=True),
    "train.beta1": lambda t, k: t.suggest_categorical(k, [0.0, 0.5]),
    "train.loss": lambda t, k: t.suggest_categorical(k, ["bce", "hinge", "lsgan"]),
    "train.diffaug": lambda t, k: t.suggest_categorical(k, ["", "color,translation", "color,translation,cutout"]),
    "train.ema_decay": lambda t, k: t.suggest_categorical(k, [0.0, 0.99, 0.999]),
}


class PrefixedTrial:
    """A view of an Optuna trial for a plugin's ``search_space``: parameter names get ``prefix``
    (``width`` -> ``generator.width``), and a key in ``fixed`` answers with its fixed value
    (``values[name]``) instead of being searched."""

    def __init__(self, trial, prefix: str, fixed: frozenset[str] = frozenset(), values: dict | None = None):
        self._trial, self._prefix, self._fixed, self._values = trial, prefix, fixed, values or {}

    def __getattr__(self, name):
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr

        def suggest(pname, *args, **kwargs):
            if self._prefix + pname in self._fixed:
                return self._values[pname]
            return attr(self._prefix + pname, *args, **kwargs)

        return suggest


def suggest(trial, cfg: RunConfig, fixed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Sample one configuration: dotted ``--set`` key -> value (keys in ``fixed`` are skipped)."""
    from augforge import registry

    params: dict[str, Any] = {}
    for key, fn in CORE_SPACE.items():
        if key not in fixed:
            params[key] = fn(trial, key)
    for section, name in (("generator", cfg.model.generator), ("discriminator", cfg.discriminator_name)):
        view = PrefixedTrial(trial, f"{section}.", fixed, getattr(cfg, section))
        for key, value in (registry.get(section, name).search_space(view) or {}).items():
            if f"{section}.{key}" not in fixed:
                params[f"{section}.{key}"] = value
    return params


def objective_spec(objective: str) -> tuple[str, str, str]:
    """``--objective`` (an evaluator name or its metric key) -> (evaluator, metric key, direction)."""
    from augforge import registry

    entries = registry.tables()["evaluator"]
    for name, entry in sorted(entries.items()):
        key = getattr(entry.cls, "objective", None)
        if objective == name or objective == key:
            return name, key or name, getattr(entry.cls, "direction", "minimize")
    valid = sorted({*entries, *(getattr(e.cls, "objective", "") for e in entries.values())} - {""})
    raise ConfigError(f"unknown --objective {objective!r}; valid: {', '.join(valid) or '(no evaluators registered)'}")
