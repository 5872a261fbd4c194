"""Many workers, one study, on PostgreSQL and on SQLite storage: a worker killed mid-trial
(SIGKILL) loses nothing. Its trial is failed once its heartbeat is older than the grace period, re-queued by
RetryHeartbeatStaleTrialCallback, and run by the surviving worker; every trial ends COMPLETE,
PRUNED or FAIL, none stays RUNNING."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("sweep_worker.py")
TRIALS = 4


def _worker(postgres_url, study, cwd, env, log):
    cmd = [
        sys.executable, str(WORKER), "sweep", "--dataset", "fake-blobs", "--model", "fake", "--trials", str(TRIALS),
        "--objective", "kid", "--storage", postgres_url, "--study", study, "--eval-every", "5", "--heartbeat", "1",
        "--grace", "5", "--startup-trials", "2", "--no-register", "--set", "data.image_size=16",
        "--set", "model.latent_dim=8", "--set", "train.steps=20", "--set", "train.batch_size=8",
    ]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.postgres
def test_two_workers_one_killed_mid_trial(postgres_url, fresh_postgres_url, tmp_path):
    _two_workers_one_killed(postgres_url, fresh_postgres_url("mlflow"), tmp_path)


def test_two_workers_one_killed_mid_trial_on_sqlite(tmp_path):
    """One machine, no server: the default sqlite:///mlruns/optuna.db layout, shared by two processes."""
    _two_workers_one_killed(f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path)


def _two_workers_one_killed(postgres_url, mlflow_uri, tmp_path):
    study_name = f"kill-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "AUGFORGE_CACHE_DIR": str(tmp_path / "cache")}
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]
    a = _worker(postgres_url, study_name, tmp_path, env, logs[0])
    b = _worker(postgres_url, study_name, tmp_path, env, logs[1])
    victim = f"{socket.gethostname()}:{a.pid}"
    killed_trial = None
    try:
        deadline = time.monotonic() + 600
        while killed_trial is None and time.monotonic() < deadline:  # worker A is inside a trial, past a report
            assert a.poll() is None, (tmp_path / "worker0.log").read_text()[-3000:]
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name=study_name, storage=postgres_url)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if t.user_attrs.get("worker") == victim and t.intermediate_values:
                    a.send_signal(signal.SIGKILL)
                    killed_trial = t.number
                    break
        assert killed_trial is not None, "worker A never got into a trial"
        a.wait(30)
        assert b.wait(900) == 0, (tmp_path / "worker1.log").read_text()[-3000:]
        # a worker restarted afterwards finds nothing left to do and leaves cleanly
        c = _worker(postgres_url, study_name, tmp_path, env, logs[2])
        assert c.wait(300) == 0, (tmp_path / "worker2.log").read_text()[-3000:]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()

    trials = optuna.load_study(study_name=study_name, storage=postgres_url).get_trials()
    states = {t.number: t.state.name for t in trials}
    assert "RUNNING" not in states.values() and "WAITING" not in states.values(), states
    finished = [n for n, s in states.items() if s in ("COMPLETE", "PRUNED", "FAIL")]
    assert len(finished) == len(trials) >= TRIALS
    assert states[killed_trial] == "FAIL"
    retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed_trial]
    assert len(retries) == 1 and retries[0].state.name in ("COMPLETE", "PRUNED")
    assert retries[0].params == trials[killed_trial].params  # the same configuration, run again
    workers = {t.user_attrs.get("worker") for t in trials}
    assert victim in workers and len(workers - {victim}) >= 1  # both workers ran trials
    assert "worker died" in _mlflow_state(env["MLFLOW_TRACKING_URI"], trials[killed_trial])


def _mlflow_state(uri, trial):
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(trial.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    return run.data.tags.get("optuna.state", "")
