"""Optuna's RDB storage for many workers: heartbeats, retried stale trials, and the study's result."""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from augforge.errors import AugforgeError


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
                    heartbeat_stale_trial_callback=StaleTrialCallback(RetryHeartbeatStaleTrialCallback(max_retry=2)),
                    engine_kwargs={"pool_pre_ping": True} if url.startswith("postgres") else None,
                )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError):
            if attempt == 5:
                raise
            time.sleep(0.5 + attempt)


def retry_init(make, what: str, attempts: int = 6):
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


class StaleTrialCallback:
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


def worker_id() -> str:
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


def redact_url(url: str) -> str:
    """A storage URL without its password (for tags and messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def trial_counts(st) -> dict[str, int]:
    from optuna.trial import TrialState

    out = {s.name: 0 for s in TrialState}
    for t in st.get_trials(deepcopy=False):
        out[t.state.name] += 1
    return out
