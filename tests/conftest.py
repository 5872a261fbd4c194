import os
import sys
from pathlib import Path

import pytest
import torch

# Fixtures: postgres_cluster, postgres_url, fresh_postgres_url (tests/pg_fixture.py).
pytest_plugins = ["pg_fixture"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_HAM = ROOT.parent / "shared" / "data" / "ham10000-200x150"

torch.set_num_threads(2)


def _forget_mlflow_globals() -> None:
    """``mlflow.set_tracking_uri`` is process-global and beats the environment variable, so a URI
    set by one test would silently point every later test (and ``models:/`` lookups) at its store."""
    if "mlflow" not in sys.modules:
        return
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    registry_utils._registry_uri = None  # set_registry_uri(None) does not clear it
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Every test tracks into its own store and cache, never the user's mlruns/."""
    _forget_mlflow_globals()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("AUGFORGE_CACHE_DIR", str(tmp_path / "cache"))
    yield
    _forget_mlflow_globals()


@pytest.fixture
def fakes():
    """Register augforge.testing's fake components for the duration of a test."""
    from augforge import plugins, testing

    plugins.register(testing, name="augforge.testing")
    yield testing
    plugins.get_plugin_manager().unregister(name="augforge.testing")
    plugins.reset()


@pytest.fixture
def shared_ham():
    if not SHARED_HAM.is_dir():
        pytest.skip(f"real HAM10000 sample not present at {SHARED_HAM}")
    return SHARED_HAM


@pytest.fixture
def onnx_file(fakes, tmp_path):
    """A conditional fake generator (nv, mel; 16 px) exported to ONNX, with a training config to look up."""
    import torch

    from augforge import registry
    from augforge.config import RunConfig
    from augforge.export import export_onnx

    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    cfg = RunConfig()
    cfg.data.name, cfg.data.image_size = "fake-blobs", 16
    cfg.dataset = {"n_per_class": 24, "size": 16}
    meta = {"class_names": ["nv", "mel"], "dataset": "fake-blobs", "config": {k: v for k, v in cfg.to_dict().items() if k != "tracking"}}
    return export_onnx(g, tmp_path / "g.onnx", meta, exporter="torchscript")


@pytest.fixture
def sigint_at_epoch():
    """``with sigint_at_epoch(n): train(...)``: a Ctrl-C (SIGINT) the moment epoch ``n`` ends, as a plugin."""
    import contextlib
    import signal

    from augforge import plugins
    from augforge.plugins import hookimpl

    @contextlib.contextmanager
    def armed(n: int):
        class SigintAtEpoch:
            @hookimpl
            def augforge_epoch_end(self, run, epoch, metrics):
                if epoch == n:
                    os.kill(os.getpid(), signal.SIGINT)

        plugins.register(SigintAtEpoch(), name="sigint")
        try:
            yield
        finally:
            plugins.get_plugin_manager().unregister(name="sigint")

    return armed
