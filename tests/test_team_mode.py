"""Team mode end to end: `mlflow server` on PostgreSQL with proxied artifacts, a tiny training
and a 2-worker sweep logging to it over HTTP, everything read back through MlflowClient.

The server is the stock MLflow tracking server (``--serve-artifacts``): clients upload
artifacts through it (``mlflow-artifacts:/`` URIs), so they must land in the server's
``--artifacts-destination`` and nowhere on the client side. The Optuna study of the sweep is
in a second database of the same PostgreSQL cluster (tests/pg_fixture.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pg_fixture import free_port

# The stock server needs ~30 s to start (schema migrations on PostgreSQL): slow stage.
pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
AUGFORGE = [sys.executable, "-m", "augforge.cli"]
SWEEP_WORKER = Path(__file__).with_name("sweep_worker.py")  # the CLI + augforge.testing's fakes
# Tiny, fast runs: a few steps of the smoke preset, a checkpoint and a sample grid each.
TINY = ["--preset", "smoke", "--set", "train.steps=4", "--set", "train.batch_size=8",
        "--set", "train.checkpoint_every=2", "--set", "train.sample_every=2", "--set", "train.log_every=1",
        "--set", "data.image_size=32"]


class MlflowServer:
    def __init__(self, backend_uri: str, artifacts: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = artifacts
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server",
             "--backend-store-uri", backend_uri,
             "--serve-artifacts", "--artifacts-destination", str(artifacts),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""},
        )

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def mlflow_server(postgres_cluster, tmp_path_factory):
    """The stock tracking server on loopback: backend = its own PostgreSQL database."""
    backend = postgres_cluster.create_database("team_mlflow")
    base = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(backend, base / "mlartifacts", base / "server.log")
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@pytest.fixture
def client_env(mlflow_server, tmp_path):
    """A client on another 'machine': its own working directory, tracking over HTTP only."""
    work = tmp_path / "client"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server.url,
           "AUGFORGE_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return work, env


def run_cli(args, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([*AUGFORGE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"augforge {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def artifact_paths(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for f in client.list_artifacts(run_id, path):
        out += artifact_paths(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def on_server(server: MlflowServer, run) -> Path:
    """The folder where the server stored this run's artifacts (mlflow-artifacts:/EXP/RUN/artifacts)."""
    uri = run.info.artifact_uri
    assert uri.startswith("mlflow-artifacts:"), uri  # proxied through the server, not a client path
    rel = uri.split(":", 1)[1].lstrip("/")
    return server.artifacts / rel


def test_server_is_backed_by_postgres(mlflow_server, postgres_cluster):
    import psycopg2

    with psycopg2.connect(postgres_cluster.url("team_mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('runs', 'experiments', 'metrics')")
        assert cur.fetchone()[0] == 3


def test_training_logs_through_the_server(mlflow_server, client_env, postgres_cluster):
    from mlflow import MlflowClient

    work, env = client_env
    run_cli(["train", *TINY, "--set", "tracking.experiment=team-train", "--run-name", "team-tiny"], work, env)

    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("team-train")
    assert exp is not None and exp.artifact_location.startswith("mlflow-artifacts:")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "4" and run.data.params["data.image_size"] == "32"
    assert run.data.params["model.generator"] == "sngan"
    history = client.get_metric_history(run.info.run_id, "train/loss_d")
    assert len(history) >= 2 and all(isinstance(m.value, float) for m in history)

    files = artifact_paths(client, run.info.run_id)
    assert "config.json" in files
    samples = [f for f in files if f.startswith("samples/") and f.endswith(".png")]
    checkpoints = [f for f in files if f.startswith("checkpoints/")]
    assert samples and checkpoints, files

    # physically on the server's artifact store ...
    stored = on_server(mlflow_server, run)
    for f in files:
        assert (stored / f).is_file(), f"{f} not in the server's artifact store {stored}"
    # ... and nowhere in a client-side store (no mlruns/, no mlartifacts/ next to the client)
    assert not (work / "mlartifacts").exists()
    assert not (work / "mlruns").exists() or not any((work / "mlruns").rglob("*.pt"))

    # round trip: what the client downloads is byte-identical to what the server stored
    got = Path(client.download_artifacts(run.info.run_id, checkpoints[0], str(work / "dl")))
    assert got.read_bytes() == (stored / checkpoints[0]).read_bytes()
    cfg = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json", str(work / "dl"))).read_text())
    assert cfg["train"]["steps"] == 4

    # the runs themselves are rows in PostgreSQL
    import psycopg2

    with psycopg2.connect(postgres_cluster.url("team_mlflow")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone() == ("FINISHED",)


def test_two_worker_sweep_against_server_and_postgres(mlflow_server, client_env, postgres_cluster, monkeypatch):
    import optuna
    from mlflow import MlflowClient

    work, env = client_env
    storage = postgres_cluster.create_database("team_optuna")
    study = "team-sweep"
    # The real `augforge sweep` CLI with augforge.testing's fake dataset/model registered
    # (tests/sweep_worker.py): what is tested here is the storage and tracking plumbing, and
    # the fakes keep two workers (each training a KID detector) well inside the time budget.
    args = ["sweep", "--dataset", "fake-blobs", "--model", "fake", "--trials", "2",
            "--objective", "kid", "--eval-every", "2", "--storage", storage, "--study", study,
            "--register-name", "team-champion", "--set", "tracking.experiment=team-sweep",
            "--set", "data.image_size=16", "--set", "model.latent_dim=8", "--set", "train.steps=4",
            "--set", "train.batch_size=8"]
    workers = []
    for i in range(2):  # two workers = two processes with their own folders, one shared study
        (work / f"w{i}").mkdir()
        workers.append(subprocess.Popen(
            [sys.executable, str(SWEEP_WORKER), *args], cwd=work / f"w{i}", env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for w in workers:
        out, _ = w.communicate(timeout=800)
        assert w.returncode == 0, out[-6000:]
        assert f"study '{study}'" in out, out[-3000:]  # both joined the one shared study

    # Optuna: one study, trials from both workers, all accounted for
    s = optuna.load_study(study_name=study, storage=storage)
    done = [t for t in s.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert 2 <= len(s.trials) <= 4 and len(done) >= 2, [(t.number, t.state) for t in s.trials]
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in s.trials)

    # MLflow: trial runs nested under sweep parent runs, with params/metrics/artifacts on the server
    client = MlflowClient(mlflow_server.url)
    exp = client.get_experiment_by_name("team-sweep")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert len(children) >= len(done), [r.data.tags.get("mlflow.runName") for r in runs]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} <= set(parents)
    for child in children:
        assert child.data.params, child.info.run_id
        if child.info.status == "FINISHED":
            files = artifact_paths(client, child.info.run_id)
            stored = on_server(mlflow_server, child)
            assert files and all((stored / f).is_file() for f in files)
    assert not (work / "mlartifacts").exists()

    # the champion is in the server's model registry (PostgreSQL), its ONNX file on the server
    import mlflow.artifacts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)  # models:/ resolves via the registry URI
    mv = client.get_model_version_by_alias("team-champion", "champion")
    assert mv.run_id in {r.info.run_id for r in runs}
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri="models:/team-champion@champion",
                                                   dst_path=str(work / "champion"), tracking_uri=mlflow_server.url))
    downloaded = sorted(got.rglob("*.onnx"))
    on_disk = {p.read_bytes() for p in mlflow_server.artifacts.rglob("*.onnx")}
    assert downloaded and downloaded[0].read_bytes() in on_disk


def test_team_up_and_down_scripts(tmp_path):
    """scripts/team-up.sh: PostgreSQL + mlflow server with proxied artifacts; team-down stops both."""
    from mlflow import MlflowClient

    state = tmp_path / "team"
    env = {**os.environ, "AUGFORGE_TEAM_DIR": str(state), "TEAM_PG_PORT": str(free_port()),
           "TEAM_MLFLOW_PORT": str(free_port()), "TEAM_MLFLOW_WORKERS": "1", "MLFLOW_BIN": str(VENV_BIN / "mlflow")}
    env.pop("MLFLOW_TRACKING_URI", None)
    up = subprocess.run(["bash", str(ROOT / "scripts" / "team-up.sh")], env=env, capture_output=True, text=True, timeout=400)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        urls = dict(line.removeprefix("export ").split("=", 1) for line in (state / "team.env").read_text().splitlines()
                    if line.startswith("export "))
        tracking, storage = urls["MLFLOW_TRACKING_URI"], urls["OPTUNA_STORAGE"]
        assert tracking in up.stdout and storage in up.stdout and storage.startswith("postgresql://")
        assert oct((state / "team.env").stat().st_mode & 0o777) == "0o600"  # holds the password

        again = subprocess.run(["bash", str(ROOT / "scripts" / "team-up.sh")], env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "already running" in again.stderr  # idempotent

        # a client: run + artifact through the server, study in the optuna database
        client = MlflowClient(tracking)
        exp = client.create_experiment("scripted")
        run = client.create_run(exp)
        client.log_param(run.info.run_id, "k", "v")
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"), "notes")
        client.set_terminated(run.info.run_id)
        rel = client.get_run(run.info.run_id).info.artifact_uri.split(":", 1)[1].lstrip("/")
        assert (state / "mlartifacts" / rel / "notes" / "note.txt").read_text() == "hello"

        import optuna

        study = optuna.create_study(storage=storage, study_name="scripted")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        assert len(optuna.load_study(study_name="scripted", storage=storage).trials) == 2
        pid = int((state / "mlflow.pid").read_text())
        pgdata = Path((state / "pgdata.path").read_text().strip())
        assert (pgdata / "PG_VERSION").is_file()
    finally:
        down = subprocess.run(["bash", str(ROOT / "scripts" / "team-down.sh"), "--purge"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state.exists() and not pgdata.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
