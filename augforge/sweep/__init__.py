"""Optuna hyperparameter sweeps: every trial is one ``augforge.training.train`` call.

- Search space: the core's training keys (``CORE_SPACE``) plus each plugin's
  ``search_space(trial)``, prefixed ``generator.`` / ``discriminator.``. Trial parameter names
  are exactly the dotted ``--set`` keys, so any trial replays as ``augforge train --set ...``
  or ``augforge train --from-trial STUDY:NUMBER``. Keys given with ``--set`` are fixed, not searched.
- TPE sampler (seeded) and a median pruner (optionally patience-wrapped) on the objective that
  ``train`` reports every ``train.eval_every`` steps. A trial's value is the best value its
  in-training evaluations reached: the value of the checkpoint (``best.pt``) it would hand on.
- Failed trials (NaN loss, crash) are recorded as FAIL and the study goes on.
- Storage: Optuna's RDB storage (default ``sqlite:///mlruns/optuna.db``; PostgreSQL for many
  workers on many machines, all running the same command). Heartbeats fail the trials of dead
  workers after a grace period and ``RetryHeartbeatStaleTrialCallback`` queues them again.
  ``--trials N`` is the study's total: workers stop once N trials have finished (complete,
  pruned or failed) and no retry is waiting or trial running.
- Tracking: one parent MLflow run per study; each trial is a run nested under it. The parent
  holds the Optuna plots, the trials table and the champion: the best trial's generator
  exported to ONNX and registered (alias ``champion``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from augforge.config import RunConfig, apply_overrides, parse_set, resolve
from augforge.errors import AugforgeError, ConfigError
from augforge.tracking import MlflowTracker

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


def make_storage(url: str, heartbeat: int = 60, grace: int | None = None):
    """Optuna RDB storage with heartbeats; stale trials (dead worker) are failed and retried."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    import sqlalchemy.exc

    # Workers started together on an empty database race to create Optuna's schema
    # (PostgreSQL: "duplicate key ... CREATE TYPE studydirection"); the loser retries and finds it.
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=heartbeat, grace_period=grace or 2 * heartbeat,
                    heartbeat_stale_trial_callback=_StaleTrialCallback(RetryHeartbeatStaleTrialCallback(max_retry=2)),
                    engine_kwargs={"pool_pre_ping": True} if url.startswith("postgres") else None,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError):
            if attempt == 5:
                raise
            time.sleep(0.5 + attempt)


def _retry_init(make, what: str, attempts: int = 6):
    """As for the Optuna schema: workers started together on a fresh MLflow database race to
    create its tables and the losers fail; by the next try the winner has made them."""
    import random

    for attempt in range(attempts):
        try:
            return make()
        except Exception as exc:
            if attempt == attempts - 1:
                raise AugforgeError(f"cannot open {what}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from None
            time.sleep(0.5 + attempt + random.random())


class _StaleTrialCallback:
    """Retry a dead worker's trial and mark its MLflow run FAILED (nobody else will end it)."""

    def __init__(self, retry):
        self.retry = retry

    def __call__(self, study, trial) -> None:
        self.retry(study, trial)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if run_id:
            try:
                import mlflow

                client = mlflow.MlflowClient()
                client.set_tag(run_id, "optuna.state", "FAIL (worker died; retried)")
                client.set_terminated(run_id, "FAILED")
            except Exception:
                pass


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class SweepResult:
    study_name: str
    storage: str
    objective: str
    direction: str
    parent_run_id: str | None
    counts: dict[str, int]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    replay: str = ""
    champion: str | None = None  # models:/NAME@champion
    champion_version: str | None = None
    onnx: Path | None = None
    plots: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Replaying a trial


def trial_config(study_name: str, number: int, storage: str = DEFAULT_STORAGE) -> tuple[str, dict[str, Any]]:
    """(preset, overrides) that reproduce trial ``number`` of ``study_name`` exactly."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise ConfigError(f"no study {study_name!r} in {_redact(storage)}; studies there: {', '.join(names) or '(none)'}") from None
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


# --------------------------------------------------------------------------------------------
# The sweep


def run_sweep(
    *,
    dataset: str | None = None,
    model: str | None = None,
    preset: str = "",
    trials: int = 20,
    objective: str = "kid",
    storage: str = DEFAULT_STORAGE,
    study: str | None = None,
    overrides: dict[str, Any] | None = None,
    eval_every: int | None = None,
    device: str | None = None,
    seed: int = 0,
    pruner: str = "median",
    startup_trials: int | None = None,
    warmup_steps: int | None = None,
    register: bool = True,
    register_name: str | None = None,
    plots: bool = True,
    heartbeat: int = 60,
    grace: int | None = None,
    tracking_uri: str | None = None,
    out_dir: str | os.PathLike | None = None,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run (or join) a study until ``trials`` trials have finished; returns the summary.

    Several processes (or machines) calling this with the same arguments and a shared
    ``storage`` cooperate on one study. The process that finds the study finished writes the
    plots and registers the champion (``register_name``, default ``augforge-<dataset>``).
    """
    import optuna

    from augforge import registry

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    evaluator, key, direction = objective_spec(objective)
    user = dict(overrides or {})
    base: dict[str, Any] = {}
    if dataset:
        base["data.name"] = dataset
    if model:  # the discriminator follows the generator family unless --set says otherwise
        base.update({"model.generator": model, "model.discriminator": model})
    base.update(user)
    preset_cfg = resolve(preset, base)
    k = eval_every or preset_cfg.train.eval_every or max(1, preset_cfg.train.steps // 4)
    base.update({"train.eval_every": k, "train.eval_metric": key})
    if device:
        base["train.device"] = device
    if tracking_uri:
        base["tracking.uri"] = tracking_uri
    cfg = resolve(preset, base)  # fails early on a wrong key, model or dataset name
    registry.validate_config(cfg)
    fixed = frozenset(user) | {"train.eval_every", "train.eval_metric", "train.device", "tracking.uri"}
    dataset, model = cfg.data.name, cfg.model.generator
    name = study or f"{dataset}-{model}-{evaluator}"
    uri = cfg.tracking.uri or None

    optuna.logging.set_verbosity(optuna.logging.INFO)
    n_start = startup_trials if startup_trials is not None else max(2, min(10, trials // 3))
    warm = warmup_steps if warmup_steps is not None else 2 * k  # never prune on the first evaluation
    prune = _make_pruner(pruner, n_start, warm)
    store = make_storage(storage, heartbeat, grace)
    worker = _worker_id()
    replay_base = {kk: v for kk, v in base.items() if kk not in ("train.device", "tracking.uri")}
    base_attr = json.dumps({"preset": preset, "overrides": replay_base, "objective": key, "evaluator": evaluator})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            st = optuna.create_study(
                study_name=name, storage=store, direction=direction, pruner=prune,
                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_start),
            )
            creator = True
        except optuna.exceptions.DuplicatedStudyError:
            # another worker (or an earlier sweep) made it: join with a different sampler stream
            st = optuna.load_study(
                study_name=name, storage=store, pruner=prune,
                sampler=optuna.samplers.TPESampler(seed=(seed * 1_000_003 + os.getpid()) % 2**31, n_startup_trials=n_start),
            )
            creator = False
    if creator:
        st.set_user_attr(BASE_ATTR, base_attr)
        st.set_user_attr("created_by", worker)
    else:
        _check_same_sweep(st, base_attr, name)
    tracker = _parent_run(st, creator, name, cfg, evaluator, trials, storage)
    echo(f"study {name!r} on {_redact(storage)} (worker {worker}); MLflow parent run {tracker.run_id}")

    trial_out = Path(out_dir or cfg.train.out_dir) / "sweeps" / name
    objective_fn = _Objective(cfg, fixed, key, direction, evaluator, name, trial_out, uri)
    status = "FINISHED"
    try:
        _optimize(st, objective_fn, trials, heartbeat)
        result = _summarise(st, name, storage, key, direction, tracker.run_id, preset, replay_base)
        if _study_done(st, trials) and plots:
            result.plots = _log_plots(st, tracker, key)
            if register and result.best_trial is not None:
                _register_champion(st, result, register_name or f"augforge-{dataset}", uri, echo)
    except BaseException:
        status = "KILLED"
        raise
    finally:
        tracker.end(status)
    return result


def _make_pruner(kind: str, startup: int, warmup: int):
    import optuna

    median = optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup, interval_steps=1)
    if kind == "median":
        return median
    if kind == "patient":  # GAN metrics are noisy: prune only after 2 evaluations without improvement
        return optuna.pruners.PatientPruner(median, patience=2)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"unknown --pruner {kind!r}; valid: median, patient, none")


def _check_same_sweep(st, base_attr: str, name: str) -> None:
    have = st.user_attrs.get(BASE_ATTR)
    deadline = time.monotonic() + 60
    while have is None and time.monotonic() < deadline:  # the creator is still setting it up
        time.sleep(0.5)
        have = _reload(st).user_attrs.get(BASE_ATTR)
    if have is not None and json.loads(have) != json.loads(base_attr):
        raise ConfigError(
            f"study {name!r} exists with a different set-up: {have}; run the same command as its other "
            f"workers, or name a new study with --study"
        )


def _reload(st):
    import optuna

    return optuna.load_study(study_name=st.study_name, storage=st._storage)


def _parent_run(st, creator: bool, name: str, cfg: RunConfig, evaluator: str, trials: int, storage: str):
    """Start (creator) or reopen (other workers) the study's parent MLflow run."""
    tracker = _retry_init(lambda: MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment), "the MLflow tracking store")
    parent = st.user_attrs.get(PARENT_ATTR)
    deadline = time.monotonic() + 60
    while parent is None and not creator and time.monotonic() < deadline:
        time.sleep(0.5)
        parent = _reload(st).user_attrs.get(PARENT_ATTR)
    if parent:
        try:
            tracker.start(run_id=parent)
            return tracker
        except Exception as exc:  # another tracking store than the one that made it
            print(f"warning: cannot reopen sweep parent run {parent} ({type(exc).__name__}); starting a new one", file=sys.stderr)
    tags = {"augforge.kind": "sweep", "optuna.study": name, "optuna.storage": _redact(storage),
            "dataset": cfg.data.name, "model": cfg.model.generator, "objective": evaluator}
    tracker.start(run_name=f"sweep-{name}", tags=tags)
    tracker.log_params({"sweep.trials": trials, "sweep.objective": evaluator, "sweep.direction": st.direction.name.lower(),
                        "sweep.pruner": type(st.pruner).__name__, "sweep.sampler": type(st.sampler).__name__})
    st.set_user_attr(PARENT_ATTR, tracker.run_id)
    return tracker


def _redact(url: str) -> str:
    """A storage URL without its password (for tags and messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class TrialTracker(MlflowTracker):
    """The trial's MLflow tracker: records the run id on the trial as soon as the run starts
    (so a dead worker's run can be closed by whoever fails its trial) and tags the run."""

    def __init__(self, trial, study_name: str, uri: str = "", experiment: str = "augforge"):
        super().__init__(uri, experiment)
        self.trial, self.study_name = trial, study_name

    def start(self, *args, **kwargs):
        super().start(*args, **kwargs)
        self.trial.set_user_attr("mlflow_run_id", self.run_id)
        self.set_tags({"optuna.study": self.study_name, "optuna.trial_number": str(self.trial.number),
                       "augforge.kind": "trial", "optuna.worker": _worker_id()})
        return self


class _Objective:
    def __init__(self, cfg: RunConfig, fixed, key: str, direction: str, evaluator: str, study_name: str,
                 out_dir: Path, uri: str | None):
        self.cfg, self.fixed, self.key, self.direction = cfg, fixed, key, direction
        self.evaluator, self.study_name, self.out_dir, self.uri = evaluator, study_name, out_dir, uri

    def __call__(self, trial) -> float:
        import optuna

        from augforge.training import train

        trial.set_user_attr("worker", _worker_id())
        params = suggest(trial, self.cfg, self.fixed)
        cfg = apply_overrides(self.cfg, params)
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, out_dir=str(self.out_dir)),
            tracking=dataclasses.replace(cfg.tracking, run_name=f"{self.study_name}-trial-{trial.number}"),
        )
        tracker = TrialTracker(trial, self.study_name, cfg.tracking.uri, cfg.tracking.experiment)
        key = self.key

        def report(step: int, metrics: dict[str, float]) -> None:
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: {key}={value:.4g}")

        try:
            result = train(cfg, tracker=tracker, report=report, nested=True)
        except optuna.TrialPruned:
            self._tag(tracker, "PRUNED")
            raise
        except BaseException as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:500]}")
            self._tag(tracker, "FAIL")
            raise
        if result.status != "FINISHED":
            raise AugforgeError(f"trial {trial.number}: training ended {result.status}")
        trial.set_user_attr("run_dir", str(result.run_dir))
        ckpt = result.best_checkpoint or result.checkpoint
        trial.set_user_attr("checkpoint", str(ckpt) if ckpt else "")
        value = result.metrics.get(f"best_{key}", result.metrics.get(key))
        if value is None:  # no in-training evaluation ran (too few steps): evaluate the checkpoint once
            from augforge.evaluation import evaluate_checkpoint

            value = evaluate_checkpoint(ckpt, metrics=[self.evaluator]).get(key)
        if value is None or not math.isfinite(float(value)):
            raise AugforgeError(f"trial {trial.number}: objective {key} is {value}; the trial counts as failed")
        self._tag(tracker, "COMPLETE", value=float(value))
        return float(value)

    def _tag(self, tracker, state: str, value: float | None = None) -> None:
        if not tracker.run_id:
            return
        try:
            client = tracker.mlflow.MlflowClient()
            client.set_tag(tracker.run_id, "optuna.state", state)
            if value is not None:
                client.log_metric(tracker.run_id, f"trial_{self.key}", value)
        except Exception:
            pass


def _counts(st) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    for t in st.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out


def _study_done(st, n: int) -> bool:
    c = _counts(st)
    return c["COMPLETE"] + c["PRUNED"] + c["FAIL"] >= n and c["WAITING"] == 0 and c["RUNNING"] == 0


def _optimize(st, objective_fn, n: int, heartbeat: int) -> None:
    """Run trials until the study has ``n`` finished ones and nothing waiting or running.

    Another worker's running trial is waited for: if its worker died, the heartbeat makes it
    stale after the grace period, it is failed, and its retry runs here.
    """
    import optuna

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(st)
        c = _counts(st)
        finished = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
        if c["WAITING"] or finished + c["RUNNING"] < n:
            st.optimize(objective_fn, n_trials=1, catch=(Exception,), gc_after_trial=True)
        elif c["RUNNING"]:
            time.sleep(min(5.0, max(0.5, heartbeat / 2)))
        else:
            return


def _summarise(st, name, storage, key, direction, parent_id, preset, base) -> SweepResult:
    result = SweepResult(study_name=name, storage=_redact(storage), objective=key, direction=direction,
                         parent_run_id=parent_id, counts=_counts(st))
    try:
        best = st.best_trial
    except ValueError:  # no completed trial
        return result
    result.best_trial, result.best_value, result.best_params = best.number, best.value, dict(best.params)
    result.replay = replay_command(preset, {**base, **best.params})
    return result


def _log_plots(st, tracker, key: str) -> list[str]:
    """Optuna's plots (matplotlib backend) as PNGs, plus the trials table, on the parent run.

    Without matplotlib (the bare GPU machine of scripts/device-check.sh) there are no PNGs;
    the trials table (and HTML plots, with plotly) is still logged."""
    try:
        import matplotlib
    except ImportError:
        matplotlib = None

    import optuna

    if matplotlib is not None:
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

    written = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tmp = Path(tmp)
        plots = {} if matplotlib is None else {
            "optimization_history": lambda: ovm.plot_optimization_history(st, target_name=key),
            "intermediate_values": lambda: ovm.plot_intermediate_values(st),
            "param_importances": lambda: ovm.plot_param_importances(st, evaluator=_importance_evaluator(), target_name=key),
            "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(st, target_name=key),
        }
        for plot, make in plots.items():
            try:
                ax = make()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(10, 6)
                fig.tight_layout()
                fig.savefig(tmp / f"{plot}.png", dpi=100)
                plt.close(fig)
                written.append(f"optuna/{plot}.png")
            except Exception as exc:  # e.g. importances need >= 2 completed trials with varied params
                (tmp / f"{plot}.txt").write_text(f"not drawn: {type(exc).__name__}: {exc}\n")
        html = _plotly_html(st, key, tmp)
        written += html
        try:
            st.trials_dataframe().to_csv(tmp / "trials.csv", index=False)
            written.append("optuna/trials.csv")
        except Exception:
            pass
        tracker.log_artifact(tmp, "optuna")
    tracker.log_metrics({"sweep_trials_" + s.lower(): float(n) for s, n in _counts(st).items() if n})
    try:
        tracker.log_metrics({f"best_{key}": float(st.best_value)})
    except ValueError:
        pass
    return written


def _importance_evaluator():
    """fANOVA with 16 trees instead of 64: 4x faster, and seeded (the same study, the same plot)."""
    import optuna

    return optuna.importance.FanovaImportanceEvaluator(n_trees=16, seed=0)


def _plotly_html(st, key: str, tmp: Path) -> list[str]:
    """Interactive HTML versions when plotly happens to be installed (it is not a dependency)."""
    import importlib.util

    if importlib.util.find_spec("plotly") is None:
        return []
    import optuna.visualization as ov

    out = []
    plots = {"optimization_history": lambda: ov.plot_optimization_history(st, target_name=key),
             "parallel_coordinate": lambda: ov.plot_parallel_coordinate(st, target_name=key),
             "param_importances": lambda: ov.plot_param_importances(st, evaluator=_importance_evaluator(), target_name=key)}
    for plot, make in plots.items():
        try:
            make().write_html(tmp / f"{plot}.html", include_plotlyjs="cdn")
            out.append(f"optuna/{plot}.html")
        except Exception:
            pass
    return out


def _register_champion(st, result: SweepResult, model_name: str, uri: str | None, echo) -> None:
    """Export the best trial's generator to ONNX and register it with alias ``champion``."""
    from augforge.export import DEFAULT_ALIAS, checkpoint_for_run, export_checkpoint, register_onnx

    best = st.best_trial
    registered = st.user_attrs.get("champion")
    if registered and json.loads(registered).get("trial") == best.number:
        info = json.loads(registered)
        result.champion, result.champion_version = f"models:/{model_name}@{DEFAULT_ALIAS}", info.get("version")
        return
    run_id = best.user_attrs.get("mlflow_run_id")
    try:
        ckpt = checkpoint_for_run(run_id, uri, best=True) if run_id else Path(best.user_attrs["checkpoint"])
    except AugforgeError:
        ckpt = Path(best.user_attrs.get("checkpoint", ""))
    out = Path(tempfile.mkdtemp(prefix="augforge-champion-")) / "generator.onnx"
    export_checkpoint(ckpt, out, extra={"optuna_study": result.study_name, "optuna_trial": best.number})
    mv = register_onnx(out, model_name, alias=DEFAULT_ALIAS, tracking_uri=uri, tags={
        "optuna.study": result.study_name, "optuna.trial_number": str(best.number),
        f"optuna.{result.objective}": repr(best.value), "augforge.trial_run_id": run_id or "",
    })
    st.set_user_attr("champion", json.dumps({"trial": best.number, "model": model_name, "version": mv.version}))
    result.champion, result.champion_version, result.onnx = f"models:/{model_name}@{DEFAULT_ALIAS}", mv.version, out
    echo(f"registered trial {best.number}'s generator as {model_name} version {mv.version} (alias @{DEFAULT_ALIAS})")


# --------------------------------------------------------------------------------------------
# Command


@click.command("sweep")
@click.option("--dataset", default=None, help="Dataset plugin name (data.name; default: the preset's, else synthetic-lesions).")
@click.option("--model", default=None, help="Model family: generator and discriminator plugin name (default: the preset's, else sngan).")
@click.option("--preset", default="", help="Preset the trials start from (smoke, paper-a, paper-b, modern, ...).")
@click.option("--trials", default=20, show_default=True, type=int, help="Finished trials the study needs (all workers together).")
@click.option("--objective", default="kid", show_default=True, help="Evaluator (or its metric key) to optimise: kid, fid, detection-rate, ...")
@click.option("--storage", default=DEFAULT_STORAGE, show_default=True, help="Optuna storage URL; postgresql://... for many workers.")
@click.option("--study", "study_name", default="", help="Study name (default DATASET-MODEL-OBJECTIVE); workers sharing it cooperate.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Fixed config override (not searched); repeatable.")
@click.option("--eval-every", type=int, default=None, help="Steps between in-training evaluations (what the pruner sees).")
@click.option("--device", default=None, help="cpu, cuda, cuda:N (one worker per GPU).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the TPE sampler.")
@click.option("--pruner", type=click.Choice(["median", "patient", "none"]), default="median", show_default=True,
              help="median: MedianPruner; patient: the same inside PatientPruner(patience=2), for noisy metrics.")
@click.option("--startup-trials", type=int, default=None, help="Trials before TPE and the pruner act (default: trials/3, 2..10).")
@click.option("--warmup-steps", type=int, default=None, help="No pruning before this step (default: 2 x eval-every).")
@click.option("--register-name", default="", help="Registered model name for the champion (default augforge-DATASET).")
@click.option("--no-register", is_flag=True, help="Do not export/register the best trial's generator.")
@click.option("--heartbeat", default=60, show_default=True, type=int, help="Seconds between trial heartbeats.")
@click.option("--grace", default=None, type=int, help="Seconds without heartbeat before a trial counts as dead (default 2 x heartbeat).")
@click.option("--tracking-uri", default="", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or mlruns/mlflow.db).")
def sweep_command(dataset, model, preset, trials, objective, storage, study_name, sets, eval_every, device, seed, pruner,
                  startup_trials, warmup_steps, register_name, no_register, heartbeat, grace, tracking_uri):
    """Optuna sweep: TPE + pruning; each trial is an MLflow run nested under the sweep's run."""
    result = run_sweep(
        dataset=dataset, model=model, preset=preset, trials=trials, objective=objective, storage=storage,
        study=study_name or None, overrides=parse_set(sets), eval_every=eval_every, device=device, seed=seed,
        pruner=pruner, startup_trials=startup_trials, warmup_steps=warmup_steps, register=not no_register,
        register_name=register_name or None, heartbeat=heartbeat, grace=grace, tracking_uri=tracking_uri or None,
        echo=click.echo,
    )
    c = result.counts
    click.echo(f"\nstudy {result.study_name}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed")
    if result.best_trial is None:
        click.echo("no trial completed; nothing to register")
        return
    click.echo(f"best trial #{result.best_trial}: {result.objective}={result.best_value:.6g} ({result.direction})")
    click.echo("replay it with:\n  " + result.replay)
    storage_flag = "" if storage == DEFAULT_STORAGE else f" --storage {shlex.quote(result.storage)}"
    click.echo(f"  or: augforge train --from-trial {shlex.quote(result.study_name)}:{result.best_trial}{storage_flag}")
    if result.champion:
        click.echo(f"champion: {result.champion} (version {result.champion_version}); "
                   f"augforge generate --model {result.champion} --per-class 100 --out synthetic/")
    click.echo(f"MLflow: parent run {result.parent_run_id}; optuna-dashboard {shlex.quote(result.storage)}")
