"""`augforge demo` (the README's main command, `make demo`) end to end at tiny size."""

import mlflow
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # trains a detector and a GAN, however tiny: minutes on 2 busy cores


def test_demo_quick_runs_every_stage(tmp_path, monkeypatch, capsys):
    from augforge.cli import main

    monkeypatch.chdir(tmp_path)
    main(["demo", "--quick", "--out", "demo"])
    out = capsys.readouterr().out
    for stage in ("[1/5] data", "[2/5] train", "[3/5] evaluate", "[4/5] export", "[5/5] generate"):
        assert stage in out
    demo = tmp_path / "demo"
    meta = pd.read_csv(demo / "synthetic" / "metadata.csv")
    assert len(meta) == 6 and set(meta["dx"]) == {"nv", "mel", "bcc"} and (meta["dx_type"] == "synthetic").all()
    assert len(list((demo / "synthetic" / "images").glob("*.png"))) == 6
    assert (demo / "generator.onnx").is_file() and (demo / "evaluation" / "report.md").is_file()
    assert (demo / "data_contact_sheet.png").is_file() and (demo / "synthetic_contact_sheet.png").is_file()
    # the summary says where the images, the report and the MLflow UI are
    assert "synthetic images   demo/synthetic/images" in out
    assert "evaluation report  demo/evaluation/report.md" in out and "mlflow ui --backend-store-uri" in out
    run_id = out.split("MLflow run ")[1].split(",")[0]
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and "val/kid" in run.data.metrics and "eval/kid" in run.data.metrics
    # what the MLflow UI shows of it: the experiment `train` uses, the datasets, grids, loss curve,
    # the evaluation report at one level, a description
    client = mlflow.MlflowClient()
    assert client.get_experiment(run.info.experiment_id).name == "augforge"
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {"synthetic-lesions-train", "synthetic-lesions-test"}
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"loss_curve.png", "samples", "splits.csv", "evaluation"} <= top
    assert "evaluation/report.md" in {a.path for a in client.list_artifacts(run_id, "evaluation")}
    assert "**" in run.data.tags["mlflow.note.content"] and "synthetic-lesions" in run.data.tags["mlflow.note.content"]
