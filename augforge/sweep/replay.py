"""Replaying a trial: its config from the study, as ``augforge train --from-trial STUDY:NUMBER`` or a ``--set`` command line."""

from __future__ import annotations

import json
import shlex
from typing import Any


from augforge.errors import ConfigError
from augforge.sweep.space import BASE_ATTR, DEFAULT_STORAGE
from augforge.sweep.storage import redact_url


def trial_config(study_name: str, number: int, storage: str = DEFAULT_STORAGE) -> tuple[str, dict[str, Any]]:
    """(preset, overrides) that reproduce trial ``number`` of ``study_name`` exactly."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {study_name!r} in {redact_url(storage)}; studies there: {', '.join(names) or '(none)'}") from None
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise ConfigError(f"study {study_name!r} has no trial {number}; trials 0..{max(trials, default=-1)}")
    base = json.loads(study.user_attrs.get(BASE_ATTR, "{}"))
    return base.get("preset", ""), {**base.get("overrides", {}), **trials[number].params}


def parse_trial_ref(ref: str) -> tuple[str, int]:
    """``STUDY:NUMBER`` -> (study, number)."""
    study, sep, number = ref.rpartition(":")
    if not sep or not study or not number.isdigit():
        raise ConfigError(f"--from-trial {ref!r}: expected STUDY:NUMBER, e.g. synthetic-lesions-sngan-kid:7")
    return study, int(number)


def from_trial_args(ref: str, storage: str | None, preset: str, sets: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """``augforge train --from-trial STUDY:NUMBER``: the trial's preset and ``--set`` items,
    followed by the user's own ``--set`` items (which win)."""
    study, number = parse_trial_ref(ref)
    trial_preset, overrides = trial_config(study, number, storage or DEFAULT_STORAGE)
    if preset and preset != trial_preset:
        raise ConfigError(f"--preset {preset} disagrees with trial {ref}'s preset {trial_preset or '(none)'}; drop --preset")
    return trial_preset, tuple(f"{k}={_set_value(v)}" for k, v in overrides.items()) + tuple(sets)


def replay_command(preset: str, overrides: dict[str, Any], skip: tuple[str, ...] = ("train.device",)) -> str:
    """The ``augforge train`` command line that reproduces a configuration."""
    parts = ["augforge", "train"]
    if preset:
        parts += ["--preset", preset]
    for key, value in overrides.items():
        if key in skip:
            continue
        parts += ["--set", f"{key}={_set_value(value)}"]
    return " ".join(shlex.quote(p) for p in parts)


def _set_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else str(value)
