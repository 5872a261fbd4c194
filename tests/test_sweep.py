"""Optuna sweeps: search-space names are --set keys, pruning, failed trials, nested MLflow runs,
plots, the champion in the registry, and replaying a trial with `augforge train --from-trial`.

The fast tests stub the training loop (``augforge.training.train``) with a function that behaves
like it (nested tracked run, ``report`` every ``eval_every`` steps, a checkpoint); the slow
test runs the real thing on synthetic-lesions.
"""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch

from augforge import sweep as sweep_mod
from augforge.config import apply_overrides, parse_set, resolve
from augforge.errors import ConfigError, TrainingError


def _tiny(**extra):
    return {"data.image_size": 16, "model.latent_dim": 8, "train.steps": 40, "train.batch_size": 8, **extra}


def test_search_space_names_are_set_keys(fakes):
    cfg = resolve("", {"data.name": "fake-blobs", "model.generator": "fake", **_tiny()})
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    params = sweep_mod.suggest(trial, cfg)
    assert set(params) == set(sweep_mod.CORE_SPACE) | {"generator.width"}
    assert set(trial.params) == set(params)  # Optuna's names are the dotted keys themselves
    applied = apply_overrides(cfg, params)
    assert applied.generator["width"] == params["generator.width"]
    assert applied.train.lr_g == params["train.lr_g"] and applied.train.loss == params["train.loss"]
    # fixed keys (given with --set) are not searched; the plugin sees the fixed value
    cfg2 = apply_overrides(cfg, {"generator.width": 8, "train.lr_g": 1e-4})
    trial2 = optuna.create_study().ask()
    p2 = sweep_mod.suggest(trial2, cfg2, frozenset({"generator.width", "train.lr_g"}))
    assert "generator.width" not in p2 and "train.lr_g" not in p2 and "generator.width" not in trial2.params


def test_objective_spec(fakes):
    assert sweep_mod.objective_spec("kid") == ("kid", "kid", "minimize")
    name, key, direction = sweep_mod.objective_spec("detection-rate")
    assert (name, direction) == ("detection-rate", "maximize")
    assert sweep_mod.objective_spec(key)[0] == "detection-rate"  # the metric key works too
    with pytest.raises(ConfigError, match="unknown --objective 'fun'; valid: .*kid"):
        sweep_mod.objective_spec("fun")


def test_replay_command_round_trips():
    params = {"train.lr_g": 0.00012345678901234, "train.diffaug": "", "train.loss": "hinge", "train.ema_decay": 0.999,
              "model.conditional": True, "generator.channels": 16, "data.image_size": 32}
    cmd = sweep_mod.replay_command("smoke", params)
    argv = shlex.split(cmd)
    assert argv[:4] == ["augforge", "train", "--preset", "smoke"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = resolve("smoke", parse_set(sets))
    assert cfg.train.lr_g == params["train.lr_g"] and cfg.train.diffaug == "" and cfg.generator["channels"] == 16
    assert cfg.model.conditional is True and cfg.train.ema_decay == 0.999


def _fake_train_factory(fail_trials=(), calls=None):
    """A stand-in for augforge.training.train with the same contract, instant and deterministic."""
    from augforge import registry
    from augforge.checkpoint import save_checkpoint
    from augforge.training import TrainResult

    def fake_train(cfg, *, tracker=None, resume=None, report=None, nested=False):
        tracker.start(run_name=cfg.tracking.run_name, tags={"dataset": cfg.data.name}, nested=nested)
        tracker.log_params(cfg.flat())
        number = int(cfg.tracking.run_name.rsplit("-", 1)[1])
        if calls is not None:
            calls.append(number)
        if number in fail_trials:
            tracker.end("FAILED")
            raise TrainingError("training diverged at step 3: loss_d=nan")
        k, value = cfg.train.eval_every, None
        try:
            for step in range(k, cfg.train.steps + 1, k):
                value = cfg.train.lr_g * 1e3 + 1.0 / step  # lower lr_g, lower "kid"
                tracker.log_metrics({"val/kid": value}, step=step)  # as the loop names its val evaluation
                report(step, {"kid": value})
        except optuna.TrialPruned:
            tracker.end("KILLED")
            raise
        torch.manual_seed(number)
        g = registry.build("generator", "fake", image_size=cfg.data.image_size, num_classes=2,
                           latent_dim=cfg.model.latent_dim, **cfg.generator)
        run_dir = Path(cfg.train.out_dir) / cfg.tracking.run_name
        state = {"config": cfg.to_dict(), "class_names": ["nv", "mel"], "image_size": cfg.data.image_size,
                 "latent_dim": cfg.model.latent_dim, "run_id": tracker.run_id, "step": cfg.train.steps, "epoch": 1,
                 "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": None}
        best = save_checkpoint(run_dir / "checkpoints" / "best.pt", state)
        tracker.log_artifact(best, "checkpoints")
        tracker.end("FINISHED")
        return TrainResult("FINISHED", cfg.train.steps, 1, run_dir, tracker.run_id, best, best,
                           {"kid": value, "best_kid": value})

    return fake_train


@pytest.mark.slow
def test_sweep_prunes_records_failures_nests_runs_and_registers(fakes, tmp_path, monkeypatch, capsys):
    import augforge.training

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(augforge.training, "train", _fake_train_factory(fail_trials={2}))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    res = sweep_mod.run_sweep(dataset="fake-blobs", model="fake", trials=8, objective="kid", storage=storage,
                              overrides=_tiny(), eval_every=10, startup_trials=2, warmup_steps=10, seed=0,
                              out_dir=tmp_path / "runs", echo=lambda s: None)
    study = optuna.load_study(study_name="fake-blobs-fake-kid", storage=storage)
    states = [t.state.name for t in study.trials]
    assert len(states) == 8 and "RUNNING" not in states and "WAITING" not in states
    assert states[2] == "FAIL" and "diverged" in study.trials[2].user_attrs["error"]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2
    assert res.counts["FAIL"] == 1 and res.best_trial == study.best_trial.number

    client = mlflow.MlflowClient()
    parent = client.get_run(res.parent_run_id)
    assert parent.data.tags["augforge.kind"] == "sweep" and parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{res.parent_run_id}'")
    assert len(children) == 8
    by_trial = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    for t in study.trials:
        run = by_trial[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.params["train.lr_g"] == str(t.params["train.lr_g"])  # params are the trial's
        if t.state.name == "PRUNED":
            assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
            assert len(client.get_metric_history(run.info.run_id, "val/kid")) >= 1  # per-step metrics kept
        if t.state.name == "FAIL":
            assert run.info.status == "FAILED"
    arts = {a.path for a in client.list_artifacts(res.parent_run_id, "optuna")}
    for plot in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        assert f"optuna/{plot}.png" in arts
    assert "optuna/trials.csv" in arts

    from augforge.export import model_version, read_metadata, resolve_onnx

    mv = model_version("models:/augforge-fake-blobs@champion")
    assert mv.tags["optuna.trial_number"] == str(res.best_trial)
    assert mv.tags["augforge.training_run_id"] == by_trial[res.best_trial].info.run_id
    assert read_metadata(resolve_onnx("models:/augforge-fake-blobs@champion"))["optuna_trial"] == str(res.best_trial)

    # a second call on the finished study runs no trial and keeps the champion
    again = sweep_mod.run_sweep(dataset="fake-blobs", model="fake", trials=8, objective="kid", storage=storage,
                                overrides=_tiny(), eval_every=10, startup_trials=2, warmup_steps=10,
                                out_dir=tmp_path / "runs", echo=lambda s: None)
    assert len(optuna.load_study(study_name="fake-blobs-fake-kid", storage=storage).trials) == 8
    assert again.parent_run_id == res.parent_run_id and again.champion_version == mv.version

    # the best trial replays exactly through the train command
    from augforge.cli import main

    capsys.readouterr()
    main(["train", "--from-trial", f"fake-blobs-fake-kid:{res.best_trial}", "--storage", storage, "--dry-run"])
    replayed = json.loads(capsys.readouterr().out)
    best = study.best_trial.params
    assert replayed["train"]["lr_g"] == best["train.lr_g"] and replayed["train"]["loss"] == best["train.loss"]
    assert replayed["generator"]["width"] == best["generator.width"] and replayed["data"]["name"] == "fake-blobs"
    argv = shlex.split(res.replay)
    sets = parse_set([argv[i + 1] for i, a in enumerate(argv) if a == "--set"])
    assert resolve("", sets).to_dict() == resolve("", {**sets}).to_dict()
    assert resolve("", sets).train.lr_g == best["train.lr_g"]


@pytest.mark.slow
def test_study_set_up_must_match(fakes, tmp_path, monkeypatch):
    import augforge.training

    monkeypatch.setattr(augforge.training, "train", _fake_train_factory())
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kw = dict(dataset="fake-blobs", model="fake", trials=1, objective="kid", storage=storage, study="s",
              eval_every=10, register=False, plots=False, out_dir=tmp_path / "runs", echo=lambda s: None)
    sweep_mod.run_sweep(overrides=_tiny(), **kw)
    with pytest.raises(ConfigError, match="exists with a different set-up"):
        sweep_mod.run_sweep(overrides=_tiny(**{"train.steps": 80}), **kw)
    with pytest.raises(ConfigError, match="no study 'nope'"):
        sweep_mod.trial_config("nope", 0, storage)
    with pytest.raises(ConfigError, match="has no trial 5"):
        sweep_mod.trial_config("s", 5, storage)
    with pytest.raises(ConfigError, match="expected STUDY:NUMBER"):
        sweep_mod.parse_trial_ref("s-3")


@pytest.mark.slow
def test_dead_workers_trial_is_failed_and_retried(fakes, tmp_path, monkeypatch):
    """A trial left RUNNING by a dead worker: after the grace period the next worker fails it,
    queues a retry (linked by retried_trial_number) and runs that retry itself."""
    import time

    import augforge.training
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    monkeypatch.setattr(augforge.training, "train", _fake_train_factory())
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    kw = dict(dataset="fake-blobs", model="fake", objective="kid", storage=storage, study="s", eval_every=10,
              register=False, plots=False, out_dir=tmp_path / "runs", heartbeat=1, grace=2, echo=lambda s: None)
    sweep_mod.run_sweep(overrides=_tiny(), trials=1, **kw)  # sets the study up, runs trial 0
    # a worker that dies inside trial 1: RUNNING, one heartbeat, then silence
    store = sweep_mod.make_storage(storage, heartbeat=1, grace=2)
    study = optuna.load_study(study_name="s", storage=store)
    dead = study.ask({"train.lr_g": optuna.distributions.FloatDistribution(5e-5, 1e-3, log=True)})
    store.record_heartbeat(dead._trial_id)
    time.sleep(3)
    res = sweep_mod.run_sweep(overrides=_tiny(), trials=2, **kw)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[2]) == 1
    assert trials[2].params["train.lr_g"] == trials[1].params["train.lr_g"]
    assert res.counts["RUNNING"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_sweep_on_synthetic_lesions(tmp_path, monkeypatch):
    """Must-show: >= 8 short real trials with pruning, nested runs, champion registered, exported,
    generated from (CLI, as a user runs it)."""
    monkeypatch.chdir(tmp_path)
    cmd = [sys.executable, "-m", "augforge.cli", "sweep", "--preset", "smoke", "--dataset", "synthetic-lesions",
           "--model", "sngan", "--trials", "8", "--objective", "kid", "--eval-every", "5", "--startup-trials", "2",
           # tiny trials get worse after their first evaluation and the median pruner compares a
           # trial's best value so far: only the first evaluation (step 5) can tell them apart
           "--warmup-steps", "0", "--set", 'dataset.classes=["nv","mel","bcc"]', "--set", "dataset.n_per_class=24",
           "--set", "train.steps=20", "--set", "train.batch_size=8", "--set", "generator.channels=8",
           "--set", "discriminator.channels=8"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "best trial #" in out and "augforge train --preset smoke" in out
    assert "champion: models:/augforge-synthetic-lesions@champion" in out
    study = optuna.load_study(study_name="synthetic-lesions-sngan-kid", storage="sqlite:///mlruns/optuna.db")
    states = [t.state.name for t in study.trials]
    assert len(states) >= 8 and "RUNNING" not in states
    assert states.count("PRUNED") >= 1, states
    first = study.trials[0].user_attrs
    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("augforge").experiment_id])
    trial_runs = [r for r in runs if r.data.tags.get("augforge.kind") == "trial"]
    sweep_run = [r for r in runs if r.data.tags.get("augforge.kind") == "sweep"][0]
    assert len(trial_runs) == len(states)
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {sweep_run.info.run_id}
    assert first["mlflow_run_id"] in {r.info.run_id for r in trial_runs}

    from augforge.cli import main

    main(["export", "--model", "models:/augforge-synthetic-lesions@champion", "--out", str(tmp_path / "champ.onnx")])
    main(["generate", "--model", "models:/augforge-synthetic-lesions@champion", "--per-class", "4", "--out",
          str(tmp_path / "syn"), "--seed", "1"])
    lines = (tmp_path / "syn" / "metadata.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 4
    from augforge.runtime import SyntheticLesions

    ds = SyntheticLesions(tmp_path / "champ.onnx", per_class=2)
    assert ds.class_names == ["nv", "mel", "bcc"] and ds[0][0].shape == (32, 32, 3)
    assert np.isfinite(study.best_value)
