"""Plugins in MLflow: every model option is a param, and observers log through a facade."""

from __future__ import annotations

import os

from click.testing import CliRunner

from augforge import plugins
from augforge.plugins import hookimpl


class Observer:
    """Logs through augforge.tracking.tracker_for, never importing mlflow itself."""

    @hookimpl
    def augforge_epoch_end(self, run, epoch, metrics):
        from augforge.tracking import tracker_for

        tracker_for(run, "observer").log_metrics({"epoch_seen": epoch}, step=epoch)

    @hookimpl
    def augforge_run_end(self, run, result):
        from augforge.tracking import tracker_for

        note = run.run_dir / "observer-note.txt"
        note.write_text(f"{result.status} at step {result.step}\n")
        tracker = tracker_for(run, "observer")
        tracker.log_artifact(note)
        tracker.set_tags({"status_seen": result.status})


def test_model_options_are_params_and_observers_log_without_mlflow(fakes, tmp_path):
    import mlflow

    from augforge.cli import cli

    plugins.register(Observer(), name="observer")
    try:
        args = ["train", "--dataset", "fake-blobs", "--model", "fake", "--image-size", "16", "--set", "model.latent_dim=8",
                "--steps", "4", "--batch-size", "8", "--set", "train.checkpoint_every=4", "--out-dir", str(tmp_path / "runs"),
                "--run-name", "tracked"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (result.output, result.exception)
    finally:
        plugins.reset()
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name("augforge").experiment_id])
    # width was never given: its default is logged under the key --set uses
    assert run.data.params["generator.width"] == "8" and run.data.params["discriminator.width"] == "8"
    assert "generator.latent_dim" not in run.data.params  # injected: logged as model.latent_dim
    history = client.get_metric_history(run.info.run_id, "observer.epoch_seen")
    assert history and [m.value for m in history] == [float(m.step) for m in history] and history[0].value == 1.0
    assert run.data.tags["observer.status_seen"] == "FINISHED"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "observer")] == ["observer/observer-note.txt"]


def test_tracker_for_an_untracked_run_logs_nothing(tmp_path):
    from augforge.config import RunConfig
    from augforge.tracking import tracker_for
    from augforge.training import RunInfo

    run = RunInfo(config=RunConfig(), run_dir=tmp_path, run_id=None, class_names=["nv"])
    tracker = tracker_for(run, "observer")
    tracker.log_metrics({"x": 1.0})
    tracker.set_tags({"a": "b"})
    assert tracker._client is None  # no MLflow client was even created
