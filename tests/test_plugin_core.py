import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pluggy
import pytest

from augforge import hookspecs, plugins, registry
from augforge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def spec_hooks():
    return [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("augforge_")]


def test_every_hook_is_documented_in_the_plugin_guide_with_its_arguments():
    guide = (ROOT / "docs" / "plugin-guide.md").read_text()  # the generated reference shows the docstrings
    for name in spec_hooks():
        args = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"`{name}({args})`" in guide, f"docs/plugin-guide.md hook reference lacks `{name}({args})`"
        assert getattr(hookspecs, name).__doc__, f"hookspec {name} has no docstring"


def test_builtin_plugins_load_through_entry_points():
    plugins.reset()
    tables = registry.tables()
    entry = tables["dataset"]["synthetic-lesions"]
    assert entry.distribution.startswith("augforge-plugins"), entry


def test_build_checks_kwargs_and_lists_valid_choices(fakes):
    g = registry.build("generator", "fake", image_size=16, num_classes=2)
    assert g.config == {"image_size": 16, "num_classes": 2, "latent_dim": 8, "width": 8}
    with pytest.raises(ConfigError, match=r"valid: width \(image_size, num_classes, latent_dim filled in by the core\)"):
        registry.build("generator", "fake", image_size=16, widht=3)
    with pytest.raises(ConfigError, match="available: .*fake"):
        registry.build("generator", "no-such-gan")


def test_misspelt_hook_is_rejected_at_start_up():
    pm = plugins.make_plugin_manager(autoload=False)

    class Typo:
        @plugins.hookimpl
        def augforge_register_generator(self):  # missing "s"
            return []

    pm.register(Typo())
    with pytest.raises(pluggy.PluginValidationError):
        pm.check_pending()


def test_disable_plugins_by_env(monkeypatch):
    monkeypatch.setenv("AUGFORGE_DISABLE_PLUGINS", "synthetic_lesions")
    plugins.reset()
    try:
        assert "synthetic-lesions" not in registry.names("dataset")
    finally:
        monkeypatch.delenv("AUGFORGE_DISABLE_PLUGINS")
        plugins.reset()


def test_trace_hooks_by_env():
    env = {**os.environ, "AUGFORGE_TRACE_HOOKS": "1"}
    out = subprocess.run([sys.executable, "-m", "augforge.cli", "plugins"], env=env, capture_output=True, text=True, check=True)
    assert "augforge_register_datasets" in out.stderr


def test_third_party_plugin_appears_without_core_change(tmp_path):
    pkg = tmp_path / "thirdparty"
    (pkg / "af_thirdparty").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "af-thirdparty"
        version = "9.9"
        [project.entry-points.augforge]
        thirdparty = "af_thirdparty"
    """))
    (pkg / "af_thirdparty" / "__init__.py").write_text(textwrap.dedent("""
        from augforge.plugins import hookimpl
        from augforge.testing import FakeGenerator

        class ThirdGen(FakeGenerator):
            name = "third-gan"

        @hookimpl
        def augforge_register_generators():
            return [ThirdGen]
    """))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(pkg)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-m", "augforge.cli", "plugins"], env=env, capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if "third-gan" in l)
    assert "generator" in line and "af-thirdparty 9.9" in line
