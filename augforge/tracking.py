"""Experiment tracking: MLflow (default store ``sqlite:///mlruns/mlflow.db``) or nothing.

Only the core imports mlflow; plugins return numbers and images and the core logs them here.
Runs follow MLflow's recommendations for model training, so they read well in its UI:

- the experiment is tagged ``mlflow.experimentKind=custom_model_development`` (MLflow 3 would
  otherwise open it in its GenAI view);
- system metrics (CPU, memory, disk, GPU) are sampled while a run is open when psutil is
  installed, unless ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` says otherwise;
- settings that describe the machine or the run's bookkeeping, not the experiment
  (``VOLATILE``), are tags, so the compare view lines runs up by what changes the model;
- a training run's ``splits.csv`` is also logged with ``mlflow.log_input``: one dataset per
  split (source, digest, row count), named ``<dataset>-<split>``;
- the run carries a description (``mlflow.note.content``): data, preset, steps, and at the end
  its headline metrics.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from augforge_runtime.registry import redact

DEFAULT_HOME = Path("mlruns")
#: config keys logged as tags, not params: machine-local folders and run bookkeeping
VOLATILE = ("tracking.run_name", "tracking.uri", "train.out_dir", "data.cache_dir", "dataset.root")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
SPLITS_FILE = "splits.csv"  # written by every training run: image_id, label, group, split
SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "test"}
#: metrics quoted in a finished run's description, when it has them
HEADLINE = ("val/best_kid", "val/kid", "eval/kid", "eval/fid", "eval/detection_rate", "train/loss_g", "train/loss_d")


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


def store_lock(uri: str, timeout: float = 300.0):
    """An inter-process lock for initialising a sqlite store (``DB.lock`` beside ``DB``); a no-op otherwise.

    Two processes opening a fresh sqlite store at once both run its schema migrations and
    the second dies (alembic "Online migration expected to match one row"); under this lock
    the first creates the tables and the others find them. ``timeout`` in seconds.
    """
    import contextlib

    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return contextlib.nullcontext()
    from filelock import FileLock

    db = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".lock", timeout=timeout)


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
        import logging

        import mlflow

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines per run
        self.mlflow = mlflow
        self.uri = uri or default_tracking_uri()
        self.experiment = experiment
        mlflow.set_tracking_uri(self.uri)
        with store_lock(self.uri):  # the first client of a fresh sqlite store creates its tables
            client = mlflow.MlflowClient(self.uri)
            self.client = client
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                try:
                    exp_id = client.create_experiment(experiment, artifact_location=default_artifact_location(experiment, self.uri),
                                                      tags=EXPERIMENT_KIND)
                except Exception:  # another process created it first (a server store, parallel sweep workers)
                    exp = client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
                for key, value in EXPERIMENT_KIND.items():  # experiments made before the tag existed
                    if exp.tags.get(key) != value:
                        client.set_experiment_tag(exp_id, key, value)
        self.experiment_id = exp_id
        self.run_id = None
        self._params: dict[str, str] = {}  # what this run logged, for its datasets and description

    def start(self, run_name: str = "", tags=None, nested: bool = False, run_id: str | None = None):
        run = self.mlflow.start_run(
            run_id=run_id, experiment_id=None if run_id else self.experiment_id,
            run_name=run_name or None, nested=nested, tags=tags or None, log_system_metrics=system_metrics(),
        )
        self.run_id = run.info.run_id
        self._params = {}
        return self

    def log_params(self, params):
        # MLflow caps a param value at 6000 chars and rejects re-logging a changed value.
        clean = {k: ("" if v is None else str(v))[:6000] for k, v in params.items()}
        volatile = {k: (redact(v) if k == "tracking.uri" else v)[:5000] for k, v in clean.items() if k in VOLATILE}
        items = [(k, v) for k, v in clean.items() if k not in VOLATILE]
        for i in range(0, len(items), 100):  # the API takes at most 100 params per batch
            self.mlflow.log_params(dict(items[i : i + 100]))
        if volatile:
            self.mlflow.set_tags(volatile)
        self._params.update(clean)
        if "data.name" in clean and "train.steps" in clean:  # a training run's config
            self.mlflow.set_tag("mlflow.note.content", describe_run(self._params))

    def log_metrics(self, metrics, step=None):
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        if finite:
            self.mlflow.log_metrics(finite, step=step)

    def log_artifact(self, path, artifact_path=None):
        path = Path(path)
        if artifact_path:  # a folder is not kept inside a folder of its own name (evaluation/evaluation)
            parts = [p for p in artifact_path.split("/") if p]
            artifact_path = "/".join(p for i, p in enumerate(parts) if i == 0 or p != parts[i - 1])
        if path.is_dir():
            self.mlflow.log_artifacts(str(path), artifact_path)
        else:
            self.mlflow.log_artifact(str(path), artifact_path)
            if path.name == SPLITS_FILE and not artifact_path:
                self.log_splits(path)

    def log_splits(self, splits_csv: str | os.PathLike) -> None:
        """One MLflow dataset input per split of ``splits_csv`` (image_id, label, group, split):
        name ``<dataset>-<split>``, source the dataset root (or name), digest of its rows."""
        import warnings

        import pandas as pd

        table = pd.read_csv(splits_csv)
        name = self._params.get("data.name") or "dataset"
        source = self._params.get("dataset.root") or name
        with warnings.catch_warnings():  # mlflow warns that a plain name is resolved as a local path
            warnings.simplefilter("ignore")
            for split, rows in table.groupby("split", sort=False):
                ds = self.mlflow.data.from_pandas(rows.reset_index(drop=True), source=source, targets="label",
                                                  name=f"{name}-{split}")
                self.mlflow.log_input(ds, context=SPLIT_CONTEXT.get(str(split), str(split)),
                                      tags={"image_size": self._params.get("data.image_size", ""), "rows": str(len(rows))})

    def log_image(self, image, name):
        self.mlflow.log_image(image, name)

    def set_tags(self, tags):
        self.mlflow.set_tags(tags)

    def end(self, status="FINISHED"):
        active = self.mlflow.active_run()
        if active is not None:
            if "data.name" in self._params and active.info.run_id == self.run_id:
                metrics = self.client.get_run(self.run_id).data.metrics
                self.mlflow.set_tag("mlflow.note.content", describe_run(self._params, metrics, status))
            self.mlflow.end_run(status=status)


def system_metrics() -> bool | None:
    """True (sample system metrics) when psutil is installed; None leaves it to
    ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` when that is set."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING") is not None:
        return None
    import importlib.util

    return importlib.util.find_spec("psutil") is not None


def describe_run(params: dict[str, str], metrics: dict[str, float] | None = None, status: str = "") -> str:
    """The run description (markdown) the MLflow UI shows: what was trained on what, and how it ended."""
    p = params.get
    lines = [
        f"**{p('model.generator', '?')}** on **{p('data.name', '?')}** at {p('data.image_size', '?')} px, "
        f"preset {p('preset') or '(none)'}: {p('train.steps', '?')} steps of {p('train.batch_size', '?')} images, "
        f"loss {p('train.loss', '?')}, seed {p('train.seed', '?')}."
    ]
    shown = {k: metrics[k] for k in HEADLINE if metrics and k in metrics}
    if shown:
        lines.append(f"{status.title() or 'Ended'}: " + ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) + ".")
    lines.append("Datasets: see the run's inputs; splits.csv lists every image and its split.")
    return "\n\n".join(lines)



def describe_model_version(client, name: str, version: str, meta: dict[str, str], run_id: str | None = None) -> None:
    """Describe a registered version for the registry UI: what it makes, where it was trained, and
    its training run's evaluation metrics (``eval/*``, ``val/best_*``), also set as ``metric.*`` tags."""
    metrics: dict[str, float] = {}
    if run_id:
        try:
            metrics = client.get_run(run_id).data.metrics
        except Exception:  # the run lives in another store: describe the file alone
            metrics = {}
    scores = {k: v for k, v in sorted(metrics.items()) if k.startswith(("eval/", "val/best_"))}
    for key, value in scores.items():
        client.set_model_version_tag(name, version, f"metric.{key}", f"{value:.6g}")
    classes = ", ".join(json.loads(meta.get("class_names") or "[]")) or "(unconditional)"
    lines = [
        f"**{meta.get('generator') or 'generator'}** at {meta.get('image_size')} px making {classes}; "
        f"trained on {meta.get('dataset') or '?'} for {meta.get('step') or '?'} steps"
        + (f" in run {run_id}" if run_id else "") + f". Input z ~ N(0, 1) [batch, {meta.get('latent_dim')}], "
        f"output {meta.get('output_layout')} in {meta.get('value_range')}.",
        ("Evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in scores.items()) + ".") if scores else
        "No evaluation metrics on its training run yet: `augforge evaluate --run RUN_ID` adds them.",
    ]
    client.update_model_version(name, version, description="\n\n".join(lines))


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
