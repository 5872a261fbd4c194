"""Experiment tracking: MLflow (default store ``sqlite:///mlruns/mlflow.db``) or nothing.

Only the core imports mlflow; plugins return numbers and images and the core logs them here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_HOME = Path("mlruns")


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the sqlite store inside ``mlruns/``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    DEFAULT_HOME.mkdir(exist_ok=True)
    return f"sqlite:///{DEFAULT_HOME.resolve() / 'mlflow.db'}"


def default_artifact_location(experiment: str, uri: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts.

    For a sqlite store (``sqlite:///DIR/NAME.db``, the default ``mlruns/mlflow.db`` included)
    artifacts go next to the database, under ``DIR/artifacts/<experiment>``, so one folder
    holds the whole store. For a server or any other store: None (the store decides).
    """
    uri = uri if uri is not None else default_tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.resolve().parent / "artifacts" / experiment).as_uri()
    return None


class NullTracker:
    """Tracks nothing; used in unit tests and with ``--no-track``."""

    run_id: str | None = None

    def start(self, run_name: str = "", tags: dict[str, str] | None = None, nested: bool = False, run_id: str | None = None):
        return self

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None: ...

    def log_image(self, image: np.ndarray, name: str) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NullTracker):
    """One MLflow run per ``start()``; nested runs for sweep trials."""

    def __init__(self, uri: str = "", experiment: str = "augforge"):
        import mlflow

        self.mlflow = mlflow
        self.uri = uri or default_tracking_uri()
        self.experiment = experiment
        mlflow.set_tracking_uri(self.uri)
        client = mlflow.MlflowClient(self.uri)
        self.client = client
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment, artifact_location=default_artifact_location(experiment, self.uri))
            except Exception:  # another process created it first (parallel sweep workers)
                exp = client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        self.run_id = None

    def start(self, run_name: str = "", tags=None, nested: bool = False, run_id: str | None = None):
        run = self.mlflow.start_run(
            run_id=run_id, experiment_id=None if run_id else self.experiment_id,
            run_name=run_name or None, nested=nested, tags=tags or None,
        )
        self.run_id = run.info.run_id
        return self

    def log_params(self, params):
        # MLflow caps a param value at 6000 chars and rejects re-logging a changed value.
        clean = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
        items = list(clean.items())
        for i in range(0, len(items), 100):  # the API takes at most 100 params per batch
            self.mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics, step=None):
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        if finite:
            self.mlflow.log_metrics(finite, step=step)

    def log_artifact(self, path, artifact_path=None):
        path = Path(path)
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path)

    def log_image(self, image, name):
        self.mlflow.log_image(image, name)

    def set_tags(self, tags):
        self.mlflow.set_tags(tags)

    def end(self, status="FINISHED"):
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run(status=status)


def code_version() -> dict[str, str]:
    """Tags naming the code that ran: augforge version, git commit (+ dirty flag) when available."""
    import subprocess

    from augforge import __version__

    tags = {"augforge_version": __version__}
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            tags["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=5,
            )
            tags["git_dirty"] = "true" if dirty.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def make_tracker(enabled: bool = True, uri: str = "", experiment: str = "augforge") -> NullTracker:
    return MlflowTracker(uri, experiment) if enabled else NullTracker()


class PluginTracker:
    """What a lifecycle hook may log into the run it observes, without importing mlflow.

    ``tracker_for(run)`` in ``augforge_run_start`` / ``epoch_end`` / ``run_end`` gives one;
    metric keys are prefixed with the plugin's name so they cannot overwrite the core's. An
    untracked run (``--no-track``) gets a tracker that logs nothing.
    """

    def __init__(self, run_id: str | None, uri: str, prefix: str):
        self.run_id, self.uri, self.prefix = run_id, uri, prefix
        self._client = None

    def _c(self):
        if self._client is None:
            import mlflow

            self._client = mlflow.MlflowClient(self.uri)
        return self._client

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.run_id is None:
            return
        for key, value in metrics.items():
            if value is not None and np.isfinite(float(value)):
                self._c().log_metric(self.run_id, f"{self.prefix}.{key}", float(value), step=step or 0)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Upload a file (or folder) under ``<prefix>/<artifact_path>`` in the run's artifacts."""
        if self.run_id is None:
            return
        dest = "/".join(p for p in (self.prefix, artifact_path) if p)
        if Path(path).is_dir():
            self._c().log_artifacts(self.run_id, str(path), dest)
        else:
            self._c().log_artifact(self.run_id, str(path), dest)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.run_id is None:
            return
        for key, value in tags.items():
            self._c().set_tag(self.run_id, f"{self.prefix}.{key}", str(value))


def tracker_for(run, plugin: str) -> PluginTracker:
    """A ``PluginTracker`` for the run a lifecycle hook observes (``run`` is its ``RunInfo``).

    ``plugin`` (your plugin's name) prefixes every key: ``tracker_for(run, "my_plugin")
    .log_metrics({"sharpness": 0.3}, step=100)`` logs ``my_plugin.sharpness``.
    """
    if not plugin or not str(plugin).strip():
        raise ValueError("tracker_for(run, plugin): give your plugin's name; it prefixes every key")
    return PluginTracker(run.run_id, run.config.tracking.uri or default_tracking_uri(), str(plugin).strip())
