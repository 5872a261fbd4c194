"""augforge.testing: the conformance suite plugin authors run, and the project's plugin scaffold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augforge import plugins, testing
from augforge.interfaces import EvalResult, Evaluator
from augforge.plugins import hookimpl
from augforge.scaffold import write_plugin
from augforge.testing import FakeBlobs


class MeanGap(Evaluator):
    name = "mean-gap"
    objective = "mean_gap"
    direction = "minimize"

    def __init__(self, *, scale: float = 1.0):
        self.scale = scale

    def evaluate(self, real_train, generated, real_test, context):
        gap = abs(float(generated.images.mean()) - float(real_test.images.mean())) * self.scale
        return EvalResult({"mean_gap": gap}, tables={"t": pd.DataFrame({"gap": [gap]})})


class WrongKey(MeanGap):
    name = "wrong-key"
    objective = "gap"  # not among the returned metrics


class UsesContext(MeanGap):
    """Uses the context like the first-party evaluators: detector features and a fresh classifier."""

    name = "uses-context"

    def evaluate(self, real_train, generated, real_test, context):
        f = context.features(generated)
        context.new_classifier(seed=1)
        return EvalResult({"mean_gap": float(np.abs(f).mean())})


class SynonymBlobs(FakeBlobs):
    name = "synonym-blobs"

    def records(self):
        return super().records().replace({"label": {"mel": "melanoma"}})


class BananaBlobs(FakeBlobs):
    name = "banana-blobs"

    def records(self):
        return super().records().replace({"label": {"mel": "banana"}})


class Components:
    @hookimpl
    def augforge_register_evaluators(self):
        return [MeanGap, WrongKey, UsesContext]

    @hookimpl
    def augforge_register_datasets(self):
        return [SynonymBlobs, BananaBlobs]


@pytest.fixture
def components(fakes):
    plugins.register(Components(), name="components")
    yield
    plugins.reset()


def test_check_evaluator_passes_a_good_one_and_names_the_missing_objective(components):
    testing.check_evaluator("mean-gap")
    testing.check_evaluator("uses-context")
    with pytest.raises(AssertionError, match=r"evaluator wrong-key: objective 'gap' is not among the metrics "
                                             r"\['mean_gap'\]; set `objective` to one of them"):
        testing.check_evaluator("wrong-key")


def test_check_dataset_names_bad_labels_and_how_to_map_synonyms(components):
    with pytest.raises(AssertionError, match=r"dataset banana-blobs: label\(s\) \['banana'\]; records\(\) must return "
                                             r"canonical names: nv, mel, .*augforge.data.canonical_class$"):
        testing.check_dataset("banana-blobs")
    with pytest.raises(AssertionError, match=r"dataset synonym-blobs: label\(s\) \['melanoma'\]; .* map synonyms with "
                                             r"augforge.data.canonical_class \(e.g. 'melanoma' -> 'mel'\)"):
        testing.check_dataset("synonym-blobs")


def test_training_data_names_the_synonym_and_its_canonical_name(components, tmp_path):
    from augforge.config import resolve
    from augforge.data import load_arrays
    from augforge.errors import DataError

    cfg = resolve("", {"data.name": "synonym-blobs", "data.image_size": 16})
    with pytest.raises(DataError, match=r"dataset 'synonym-blobs': records\(\) returned label\(s\) \['melanoma'\]; "
                                        r".*\(e.g. 'melanoma' -> 'mel'\)"):
        load_arrays(cfg, progress=False)


def test_check_generator_messages_give_the_expected_value(fakes):
    from torch import nn

    from augforge.testing import FakeGenerator

    class HalfSize(FakeGenerator):
        name = "half-size"

        def forward(self, z, labels=None):
            return nn.functional.avg_pool2d(super().forward(z, labels), 2)

    class P:
        @hookimpl
        def augforge_register_generators(self):
            return [HalfSize]

    plugins.register(P(), name="half")
    try:
        with pytest.raises(AssertionError, match=r"generator half-size: output shape \(3, 3, 8, 8\) at "
                                                 r"image_size=16; expected \(3, 3, 16, 16\)"):
            testing.check_generator("half-size", image_size=16)
    finally:
        plugins.reset()


def test_check_export_round_trips_the_fake_generator(fakes):
    testing.check_export("fake", image_size=16)


def test_conformance_tests_parametrises_over_one_plugins_components(components):
    test = testing.conformance_tests("components", options={})
    (mark,) = [m for m in test.pytestmark if m.name == "parametrize"]
    cases = {(kind, name, fn.__name__) for kind, name, fn in mark.args[1]}
    assert cases == {("evaluator", "mean-gap", "check_evaluator"), ("evaluator", "wrong-key", "check_evaluator"),
                     ("evaluator", "uses-context", "check_evaluator"), ("dataset", "synonym-blobs", "check_dataset"),
                     ("dataset", "banana-blobs", "check_dataset")}
    with pytest.raises(AssertionError, match=r"plugin 'nobody' registers no components; registered plugins: .*components"):
        testing.conformance_tests("nobody")


# ---- scaffold ----------------------------------------------------------------------------------


def test_new_plugin_writes_a_package_with_one_file_per_component(tmp_path):
    from click.testing import CliRunner

    from augforge.cli import cli

    result = CliRunner().invoke(cli, ["new-plugin", "my-gan", "--kind", "model,evaluator,dataset", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "my-gan"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "augforge_my_gan/__init__.py", "augforge_my_gan/dataset.py",
                     "augforge_my_gan/evaluator.py", "augforge_my_gan/model.py", "pyproject.toml", "tests/test_plugin.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert '[project.entry-points.augforge]\nmy_gan = "augforge_my_gan"' in pyproject
    assert 'testing.conformance_tests("my_gan")' in (root / "tests" / "test_plugin.py").read_text()
    again = CliRunner().invoke(cli, ["new-plugin", "my-gan", "--dir", str(tmp_path)])
    assert "already exists" in str(again.exception)
    bad = CliRunner().invoke(cli, ["new-plugin", "x", "--kind", "modle", "--dir", str(tmp_path)])
    assert "unknown kind(s) ['modle']; choose from model,evaluator,dataset" in str(bad.exception)


def test_generated_components_pass_the_conformance_checks_in_process(tmp_path, monkeypatch):
    import importlib

    write_plugin("quick-gan", tmp_path, ["model", "evaluator", "dataset"])
    monkeypatch.syspath_prepend(str(tmp_path / "quick-gan"))
    module = importlib.import_module("augforge_quick_gan")
    plugins.register(module, name="quick_gan")
    try:
        testing.check_generator("quick-gan")
        testing.check_discriminator("quick-gan")
        testing.check_evaluator("quick-gan")
        testing.check_dataset("quick-gan")
    finally:
        plugins.reset()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five CLI processes and a nested pytest; ~2 min on an idle 2-core machine
def test_new_plugin_installs_passes_its_tests_trains_exports_and_generates(tmp_path):
    """From the issue: new-plugin -> pip install -e -> its tests -> train --preset smoke -> export -> generate."""
    bin_dir = Path(sys.executable).parent
    augforge = [sys.executable, "-m", "augforge.cli"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "AUGFORGE_CACHE_DIR": str(tmp_path / "cache"), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd, cwd=tmp_path):
        out = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{cmd}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        return out

    run(*augforge, "new-plugin", "demo-model")
    run(sys.executable, "-m", "pip", "install", "-q", "-e", "demo-model", "--no-deps", "--no-build-isolation")
    try:
        tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path / "demo-model")
        assert "passed" in tests.stdout and "failed" not in tests.stdout
        run(*augforge, "train", "--model", "demo-model", "--preset", "smoke", "--set", "train.steps=4", "--no-track",
            "--out-dir", "runs", "--run-name", "demo")
        run(*augforge, "export", "--checkpoint", "runs/demo/checkpoints/last.pt", "--out", "demo.onnx")
        run(*augforge, "generate", "--onnx", "demo.onnx", "--per-class", "2", "--out", "synthetic")
        meta = pd.read_csv(tmp_path / "synthetic" / "metadata.csv")
        assert len(meta) > 0 and meta["dx"].value_counts().eq(2).all()
        assert len(list((tmp_path / "synthetic" / "images").iterdir())) == len(meta)
    finally:
        run(sys.executable, "-m", "pip", "uninstall", "-y", "-q", "augforge-demo-model")
