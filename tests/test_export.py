"""ONNX export: the file's contract, the parity check that refuses bad files, EMA weights,
and the model registry round trip (models:/NAME@champion -> the same file)."""

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from augforge import export as export_mod
from augforge.checkpoint import save_checkpoint
from augforge.config import RunConfig
from augforge.export import ExportError, export_checkpoint, export_onnx, read_metadata, register_onnx, resolve_onnx
from augforge.interfaces import Generator

CLASSES = ["nv", "mel"]


def _fake(fakes, num_classes=2, seed=0):
    from augforge import registry

    torch.manual_seed(seed)
    return registry.build("generator", "fake", image_size=16, num_classes=num_classes, latent_dim=8).eval()


def _run(path, z, label=None):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"z": z} if label is None else {"z": z, "label": label}
    return sess.run(["image"], feeds)[0]


def test_conditional_contract(fakes, tmp_path):
    g = _fake(fakes)
    path = export_onnx(g, tmp_path / "g.onnx", {"class_names": CLASSES, "training_run_id": "r1", "dataset": "fake-blobs"})
    assert list(tmp_path.iterdir()) == [path]  # one self-contained file, no external data
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = {i.name: i for i in sess.get_inputs()}
    assert set(ins) == {"z", "label"}
    assert ins["z"].type == "tensor(float)" and ins["z"].shape[1] == 8 and isinstance(ins["z"].shape[0], str)
    assert ins["label"].type == "tensor(int64)" and isinstance(ins["label"].shape[0], str)
    out = sess.get_outputs()[0]
    assert out.name == "image" and out.type == "tensor(float)" and out.shape[1:] == [3, 16, 16]
    meta = read_metadata(path)
    assert json.loads(meta["class_names"]) == CLASSES
    assert meta["latent_dim"] == "8" and meta["image_size"] == "16" and meta["value_range"] == "[-1, 1]"
    assert meta["training_run_id"] == "r1" and meta["dataset"] == "fake-blobs" and meta["conditional"] == "true"
    assert meta["augforge_version"] and meta["format"] == export_mod.FORMAT
    # the contract a consumer needs, in the file: latent distribution, inputs, layout, producer
    assert meta["latent_distribution"] == "standard_normal" and meta["output_layout"] == "NCHW float32"
    inputs = json.loads(meta["inputs"])
    assert "N(0, 1)" in inputs["z"] and "[batch, 8]" in inputs["z"] and "0..1" in inputs["label"]
    assert model.producer_name == "augforge" and model.producer_version == meta["augforge_version"]
    assert "z ~ N(0, 1)" in model.doc_string
    for batch in (1, 5, 33):  # dynamic batch
        z = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        y = np.arange(batch, dtype=np.int64) % 2
        got = _run(path, z, y)
        with torch.no_grad():
            ref = g(torch.from_numpy(z), torch.from_numpy(y)).numpy()
        assert got.shape == (batch, 3, 16, 16)
        assert np.abs(got - ref).max() <= 1e-4
        assert got.min() >= -1 and got.max() <= 1


@pytest.mark.slow
def test_uint8_and_unconditional(fakes, tmp_path):
    g = _fake(fakes)
    f = export_onnx(g, tmp_path / "f.onnx", {"class_names": CLASSES})
    u = export_onnx(g, tmp_path / "u.onnx", {"class_names": CLASSES}, uint8=True)
    assert read_metadata(u)["output_layout"] == "NHWC uint8" and read_metadata(u)["value_range"] == "[0, 255]"
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    y = np.array([0, 1, 1, 0], np.int64)
    img = _run(u, z, y)
    assert img.dtype == np.uint8 and img.shape == (4, 16, 16, 3)
    expect = np.round((np.clip(_run(f, z, y), -1, 1) + 1) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.abs(img.astype(int) - expect.astype(int)).max() <= 1

    g0 = _fake(fakes, num_classes=0)
    p0 = export_onnx(g0, tmp_path / "g0.onnx", {"class_names": ["mel"]})
    sess = ort.InferenceSession(str(p0), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["z"]
    assert read_metadata(p0)["conditional"] == "false"


class _SNGen(Generator):
    """A generator with a spectral-norm parametrisation, BatchNorm and a transposed conv."""

    name = "sn-test"

    def __init__(self):
        super().__init__()
        self.latent_dim, self.num_classes, self.image_size = 6, 3, 8
        self.embed = nn.Embedding(3, 6)
        self.fc = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 16 * 4 * 4))
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, z, labels=None):
        h = self.fc(z * self.embed(labels)).view(-1, 16, 4, 4)
        return torch.tanh(self.out(torch.relu(self.bn(self.up(h)))))


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_both_exporters_handle_spectral_norm(tmp_path, exporter):
    torch.manual_seed(0)
    g = _SNGen()
    g.train()
    for _ in range(3):  # move the power-iteration vectors and BN statistics away from their init
        g(torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
    g.eval()
    path = export_onnx(g, tmp_path / "sn.onnx", {"class_names": ["a", "b", "c"]}, exporter=exporter)
    assert exporter in read_metadata(path)["exporter"]
    assert g.training is False and nn.utils.parametrize.is_parametrized(g.fc)  # the original is untouched
    z = torch.randn(7, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        ref = g(z, y).numpy()
    assert np.abs(_run(path, z.numpy(), y.numpy()) - ref).max() <= 1e-4


def test_refuses_to_write_when_parity_fails(fakes, tmp_path, monkeypatch):
    g = _fake(fakes)
    target = tmp_path / "g.onnx"
    target.write_bytes(b"previous file")
    monkeypatch.setattr(export_mod.onnx, "parity_check", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match="parity check failed, max abs diff 0.5"):
        export_onnx(g, target, {"class_names": CLASSES}, exporter="torchscript")
    assert target.read_bytes() == b"previous file"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.onnx"]  # no temp file left
    with pytest.raises(ExportError):
        export_onnx(g, tmp_path / "new.onnx", {"class_names": CLASSES}, exporter="torchscript")
    assert not (tmp_path / "new.onnx").exists()


@pytest.mark.slow
def test_parity_check_catches_a_wrong_graph(fakes, tmp_path):
    g = _fake(fakes)
    path = export_onnx(g, tmp_path / "g.onnx", {"class_names": CLASSES})
    other = export_mod.export_module(_fake(fakes, seed=1))
    assert export_mod.parity_check(other, path) > 1e-3


def test_class_names_must_match(fakes, tmp_path):
    with pytest.raises(ExportError, match="2 classes but metadata names 3"):
        export_onnx(_fake(fakes), tmp_path / "g.onnx", {"class_names": ["a", "b", "c"]})


def _checkpoint(fakes, tmp_path, ema=True):
    g = _fake(fakes, seed=0)
    g_ema = _fake(fakes, seed=1)
    cfg = RunConfig()
    cfg.data.name, cfg.data.image_size = "fake-blobs", 16
    state = {
        "config": cfg.to_dict(), "class_names": CLASSES, "image_size": 16, "latent_dim": 8, "run_id": None, "step": 5,
        "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()},
        "g_ema": g_ema.state_dict() if ema else None,
    }
    return save_checkpoint(tmp_path / "ckpt.pt", state), g, g_ema


@pytest.mark.slow
def test_export_checkpoint_uses_ema_weights(fakes, tmp_path):
    path, g, g_ema = _checkpoint(fakes, tmp_path)
    out = export_checkpoint(path, tmp_path / "ema.onnx")
    raw = export_checkpoint(path, tmp_path / "raw.onnx", ema=False)
    z = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    y = np.array([0, 1, 0], np.int64)
    with torch.no_grad():
        want_ema = g_ema(torch.from_numpy(z), torch.from_numpy(y)).numpy()
        want_raw = g(torch.from_numpy(z), torch.from_numpy(y)).numpy()
    assert np.abs(_run(out, z, y) - want_ema).max() <= 1e-4
    assert np.abs(_run(raw, z, y) - want_raw).max() <= 1e-4
    meta = read_metadata(out)
    assert meta["ema"] == "true" and read_metadata(raw)["ema"] == "false"
    assert meta["step"] == "5" and meta["dataset"] == "fake-blobs"
    assert "tracking" not in json.loads(meta["config"])  # a tracking URI may hold credentials
    # no path of the exporting machine; the checkpoint is named by its content digest
    import hashlib

    assert "checkpoint" not in meta and meta["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(tmp_path) not in json.dumps(meta)
    assert "out_dir" not in json.loads(meta["config"])["train"] and "cache_dir" not in json.loads(meta["config"])["data"]
    assert onnx.load(str(out)).model_version == 5  # the training step of the weights


@pytest.mark.slow
def test_cli_export_and_registry_round_trip(fakes, tmp_path, monkeypatch, capsys):
    from augforge.cli import main

    monkeypatch.chdir(tmp_path)
    path, _, _ = _checkpoint(fakes, tmp_path)
    main(["export", "--checkpoint", str(path), "--out", "gen.onnx", "--register", "augforge-test"])
    out = capsys.readouterr().out
    assert "parity check passed" in out and "alias @champion" in out
    local = resolve_onnx("models:/augforge-test@champion")
    assert local.suffix == ".onnx"
    assert read_metadata(local) == read_metadata(tmp_path / "gen.onnx")
    assert resolve_onnx("models:/augforge-test@champion") == local  # cached, not downloaded again
    mv = export_mod.model_version("models:/augforge-test@champion")
    assert mv.aliases == ["champion"] and mv.tags["augforge.dataset"] == "fake-blobs"
    # a second registration moves the alias
    mv2 = register_onnx(tmp_path / "gen.onnx", "augforge-test")
    assert export_mod.model_version("models:/augforge-test@champion").version == mv2.version != mv.version

    # generate records the version the alias resolved to (and the store it looked in)
    main(["generate", "--model", "models:/augforge-test@champion", "--per-class", "2", "--out", "syn"])
    assert f"is version {mv2.version}" in capsys.readouterr().out
    info = json.loads((tmp_path / "syn" / "generation.json").read_text())
    assert info["source"] == "models:/augforge-test@champion"
    assert info["registry"]["version"] == str(mv2.version) and info["registry"]["resolved"] == f"models:/augforge-test/{mv2.version}"
    assert info["registry"]["tracking_uri"] == os.environ["MLFLOW_TRACKING_URI"]

    import mlflow.pyfunc  # the registered model also serves through MLflow's pyfunc flavour

    model = mlflow.pyfunc.load_model("models:/augforge-test@champion")
    pred = model.predict({"z": np.zeros((2, 8), np.float32), "label": np.array([0, 1], np.int64)})
    assert pred["image"].shape == (2, 3, 16, 16)


@pytest.mark.slow
def test_cli_export_errors(fakes, tmp_path, capsys):
    from augforge.cli import main
    from augforge.tracking import MlflowTracker

    with pytest.raises(SystemExit):
        main(["export", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SystemExit) as exc:
        main(["export", "--model", "models:/nope@champion", "--out", str(tmp_path / "x.onnx")])
    assert exc.value.code == 2
    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert f"no MLflow tracking store at {uri}" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "mlflow.db").exists()  # no store made on the way
    MlflowTracker("", "augforge")  # now the store exists, without that model
    with pytest.raises(SystemExit):
        main(["export", "--model", "models:/nope@champion", "--out", str(tmp_path / "x.onnx")])
    assert f"cannot resolve models:/nope@champion in tracking store {uri}" in capsys.readouterr().err


def test_resolving_models_from_another_folder_names_the_store_and_creates_none(tmp_path, monkeypatch, capsys):
    """`augforge generate --model models:/NAME@champion` run where there is no mlruns/: a clear error
    naming the default store it looked in, and no empty ./mlruns/mlflow.db left behind."""
    from augforge.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--model", "models:/augforge-synthetic-lesions@champion", "--per-class", "2", "--out", "out"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"no MLflow tracking store at sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}" in err
    assert "--tracking-uri" in err
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_register_into_a_finished_run_keeps_its_status(fakes, tmp_path):
    import mlflow

    from augforge.tracking import MlflowTracker

    tracker = MlflowTracker("", "augforge").start(run_name="training")
    run_id = tracker.run_id
    tracker.log_metrics({"eval/kid": 0.0123, "loss_g": 1.5})
    # what `augforge evaluate --metrics policy-study` tags on the training run (EvalResult.tags)
    tracker.set_tags({"augforge.eval.recommended_policy": "ratio:0.5:filtered", "augforge.eval.recommended_policy_evidence": "gain +0.02"})
    tracker.end("KILLED")
    path = export_onnx(_fake(fakes), tmp_path / "g.onnx", {"class_names": CLASSES, "training_run_id": run_id},
                       exporter="torchscript")
    mv = register_onnx(path, "augforge-kept", run_id=run_id)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.status == "KILLED"
    assert mv.run_id == run_id and mv.tags["augforge.training_run_id"] == run_id
    # described for the registry UI with its run's evaluation metrics; the config stays in the file
    assert "Evaluation: eval/kid 0.0123." in mv.description and "z ~ N(0, 1)" in mv.description
    assert mv.tags["metric.eval/kid"] == "0.0123" and "metric.loss_g" not in mv.tags
    assert "augforge.config" not in mv.tags
    # models:/...@champion comes with the augmentation policy measured for it
    assert mv.tags["augforge.recommended_policy"] == "ratio:0.5:filtered"
    assert mv.tags["augforge.recommended_policy_evidence"] == "gain +0.02"


def test_recommendations_come_from_the_newest_linked_evaluation_too(tmp_path):
    """A policy study that ran while the training run was open tagged a linked evaluation run:
    export --register must still find it, and a newer study wins over an older one."""
    import time

    import mlflow

    from augforge.export.sources import recommendations
    from augforge.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    training = MlflowTracker(uri, "augforge").start(run_name="training")
    run_id = training.run_id
    training.end("FINISHED")
    assert recommendations(client, run_id) == {}

    def study(tags: dict, on_training_run: bool) -> None:
        time.sleep(0.01)  # distinct end times (ms)
        if on_training_run:
            t = MlflowTracker(uri, "augforge").start(run_id=run_id)
        else:
            t = MlflowTracker(uri, "augforge").start(run_name="eval", tags={"augforge.kind": "evaluation", "augforge.source_run_id": run_id})
        t.set_tags(tags)
        t.end("FINISHED")

    study({"augforge.eval.recommended_policy": "ratio:0.5"}, on_training_run=False)
    assert recommendations(client, run_id) == {"augforge.recommended_policy": "ratio:0.5"}
    study({"augforge.eval.recommended_policy": "balanced:filtered"}, on_training_run=True)
    assert recommendations(client, run_id) == {"augforge.recommended_policy": "balanced:filtered"}
    study({"augforge.eval.recommended_policy": "top-up"}, on_training_run=False)
    assert recommendations(client, run_id) == {"augforge.recommended_policy": "top-up"}
    # an evaluation of another run never leaks into this one
    other = MlflowTracker(uri, "augforge").start(run_name="other-eval", tags={"augforge.kind": "evaluation", "augforge.source_run_id": "elsewhere"})
    other.set_tags({"augforge.eval.recommended_policy": "ratio:1"})
    other.end("FINISHED")
    # nor does a resumed copy of the training run (same source tag, another generator), however new
    time.sleep(0.01)
    copy = MlflowTracker(uri, "augforge").start(run_name="copy", tags={"augforge.source_run_id": run_id})
    copy.set_tags({"augforge.eval.recommended_policy": "ratio:0.25"})
    copy.end("FINISHED")
    assert recommendations(client, run_id) == {"augforge.recommended_policy": "top-up"}
