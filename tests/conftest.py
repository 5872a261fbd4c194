import os
from pathlib import Path

import pytest
import torch

# Fixtures: postgres_cluster, postgres_url, fresh_postgres_url (tests/pg_fixture.py).
pytest_plugins = ["pg_fixture"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_HAM = ROOT.parent / "shared" / "data" / "ham10000-200x150"

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """Every test tracks into its own store and cache, never the user's mlruns/."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("AUGFORGE_CACHE_DIR", str(tmp_path / "cache"))
    yield


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
