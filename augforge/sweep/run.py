"""``run_sweep``: the study, its parent MLflow run, one nested run per trial, the champion at the end."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any


from augforge.config import RunConfig, apply_overrides, resolve
from augforge.errors import AugforgeError, ConfigError
from augforge.tracking import MlflowTracker
from augforge.sweep.space import BASE_ATTR, DEFAULT_STORAGE, PARENT_ATTR, objective_spec, suggest
from augforge.sweep.storage import SweepResult, make_storage, worker_id, retry_init
from augforge.sweep.replay import replay_command
from augforge.sweep.report import log_plots, register_champion
from augforge.sweep.storage import trial_counts, redact_url


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
    worker = worker_id()
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
    echo(f"study {name!r} on {redact_url(storage)} (worker {worker}); MLflow parent run {tracker.run_id}")

    trial_out = Path(out_dir or cfg.train.out_dir) / "sweeps" / name
    objective_fn = _Objective(cfg, fixed, key, direction, evaluator, name, trial_out, uri)
    status = "FINISHED"
    try:
        _optimize(st, objective_fn, trials, heartbeat)
        result = _summarise(st, name, storage, key, direction, tracker.run_id, preset, replay_base)
        if _study_done(st, trials) and plots:
            result.plots = log_plots(st, tracker, key)
            if register and result.best_trial is not None:
                register_champion(st, result, register_name or f"augforge-{dataset}", uri, echo)
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
    tracker = retry_init(lambda: MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment), "the MLflow tracking store")
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
    tags = {"augforge.kind": "sweep", "optuna.study": name, "optuna.storage": redact_url(storage),
            "dataset": cfg.data.name, "model": cfg.model.generator, "objective": evaluator}
    tracker.start(run_name=f"sweep-{name}", tags=tags)
    tracker.log_params({"sweep.trials": trials, "sweep.objective": evaluator, "sweep.direction": st.direction.name.lower(),
                        "sweep.pruner": type(st.pruner).__name__, "sweep.sampler": type(st.sampler).__name__})
    st.set_user_attr(PARENT_ATTR, tracker.run_id)
    return tracker


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
                       "augforge.kind": "trial", "optuna.worker": worker_id()})
        return self


class _Objective:
    def __init__(self, cfg: RunConfig, fixed, key: str, direction: str, evaluator: str, study_name: str,
                 out_dir: Path, uri: str | None):
        self.cfg, self.fixed, self.key, self.direction = cfg, fixed, key, direction
        self.evaluator, self.study_name, self.out_dir, self.uri = evaluator, study_name, out_dir, uri

    def __call__(self, trial) -> float:
        import optuna

        from augforge.training import train

        trial.set_user_attr("worker", worker_id())
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


def _study_done(st, n: int) -> bool:
    c = trial_counts(st)
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
        c = trial_counts(st)
        finished = c["COMPLETE"] + c["PRUNED"] + c["FAIL"]
        if c["WAITING"] or finished + c["RUNNING"] < n:
            st.optimize(objective_fn, n_trials=1, catch=(Exception,), gc_after_trial=True)
        elif c["RUNNING"]:
            time.sleep(min(5.0, max(0.5, heartbeat / 2)))
        else:
            return


def _summarise(st, name, storage, key, direction, parent_id, preset, base) -> SweepResult:
    result = SweepResult(study_name=name, storage=redact_url(storage), objective=key, direction=direction,
                         parent_run_id=parent_id, counts=trial_counts(st))
    try:
        best = st.best_trial
    except ValueError:  # no completed trial
        return result
    result.best_trial, result.best_value, result.best_params = best.number, best.value, dict(best.params)
    result.replay = replay_command(preset, {**base, **best.params})
    return result
