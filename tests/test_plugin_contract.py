"""The core checks what it relies on: broken plugins are named, explained and disabled alone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from augforge import plugins, registry
from augforge.cli import cli
from augforge.errors import ConfigError
from augforge.interfaces import Evaluator
from augforge.plugins import PluginError, hookimpl
from augforge.testing import FakeGenerator


def fake_distribution(site, plugin: str, source: str) -> dict:
    """An installed distribution providing entry point ``plugin`` = module ``af_<plugin>`` (no pip:
    a ``.dist-info`` folder on PYTHONPATH is what importlib.metadata reads)."""
    module = f"af_{plugin}"
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"af_{plugin}-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: af-{plugin}\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(f"[augforge]\n{plugin} = {module}\n")
    return {**os.environ, "PYTHONPATH": str(site)}


def augforge_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "augforge.cli", *args], env=env, capture_output=True, text=True)


def test_broken_entry_point_plugins_are_disabled_alone_and_named(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "unmarked", """
        from augforge.testing import FakeGenerator
        class G(FakeGenerator):
            name = "unmarked-gan"
        def augforge_register_generators():  # no @hookimpl: pluggy would skip it silently
            return [G]
    """)
    fake_distribution(site, "typo", """
        from augforge import hookimpl
        @hookimpl
        def augforge_register_generator():
            return []
    """)
    env = fake_distribution(site, "broken_import", "import no_such_module_here\n")
    help_ = augforge_cli(env, "--help")
    assert help_.returncode == 0, help_.stderr
    assert "train" in help_.stdout
    out = augforge_cli(env, "plugins")
    assert out.returncode == 0, out.stderr
    assert "sngan" in out.stdout  # the others keep working
    err = " ".join(out.stderr.split())
    assert "plugin 'unmarked' disabled" in err and "af_unmarked" in err and "decorate it with @augforge.hookimpl" in err
    assert "plugin 'typo' disabled" in err and "did you mean 'augforge_register_generators'?" in err
    assert "plugin 'broken_import' disabled" in err and "No module named 'no_such_module_here'" in err
    assert "AUGFORGE_DISABLE_PLUGINS=broken_import" in err
    assert "Disabled plugins" in out.stdout and "typo:" in out.stdout


def test_hookimpl_imports_from_the_package_as_the_hookspecs_say():
    import augforge
    from augforge import hookspecs

    assert "augforge.hookimpl" in hookspecs.__doc__
    assert augforge.hookimpl is plugins.hookimpl


def test_plugin_registered_by_hand_with_a_misspelt_hook_raises():
    class Typo:
        @hookimpl
        def augforge_register_evaluator(self):
            return []

    with pytest.raises(PluginError, match=r"did you mean 'augforge_register_evaluators'"):
        plugins.register(Typo(), name="typo-by-hand")
    plugins.reset()


class _Returns:
    """A plugin whose generator hook returns ``value``."""

    def __init__(self, value):
        self.value = value

    @hookimpl
    def augforge_register_generators(self):
        return self.value


class NoObjective(Evaluator):
    name = "no-objective"


class BadDirection(Evaluator):
    name = "bad-direction"
    objective = "x"
    direction = "up"


class Positional(FakeGenerator):
    name = "positional"

    def __init__(self, image_size=16, num_classes=0, latent_dim=8, width=8):
        super().__init__(image_size=image_size, num_classes=num_classes, latent_dim=latent_dim, width=width)


class Nameless(FakeGenerator):
    name = ""


class _Evaluators:
    def __init__(self, value):
        self.value = value

    @hookimpl
    def augforge_register_evaluators(self):
        return self.value


@pytest.mark.parametrize("plugin,expected", [
    (_Returns(FakeGenerator), r"returned <class .*FakeGenerator'> \(type\); return a list of classes, e.g. `return \[FakeGenerator\]`"),
    (_Evaluators([NoObjective]), r"NoObjective has objective=None; it needs an `objective = \"<metric key>\"`"),
    (_Evaluators([BadDirection]), r"BadDirection has direction='up'; expected one of minimize, maximize"),
    (_Returns([Positional]), r"constructor parameter 'image_size' is positional or keyword; .*def __init__\(self, \*, image_size"),
    (_Returns([Nameless]), r"Nameless has name=''; it needs a non-empty `name"),
], ids=["class-not-list", "no-objective", "bad-direction", "positional-constructor", "no-name"])
def test_bad_registration_disables_that_plugin_only(fakes, plugin, expected, capsys):
    plugins.register(plugin, name="bad-plugin")
    try:
        tables = registry.tables()
        assert "fake" in tables["generator"]  # the other plugins still work
        pm = plugins.get_plugin_manager()
        assert "bad-plugin" in pm.failures and pm.get_plugin("bad-plugin") is None
        message = pm.failures["bad-plugin"]
        assert message.startswith("plugin 'bad-plugin'"), message
        import re

        assert re.search(expected, message), message
        assert "plugin 'bad-plugin' disabled for this command" in capsys.readouterr().err
        with pytest.raises(ConfigError, match=r"unknown generator 'positional'.*disabled for this command: bad-plugin"):
            registry.get("generator", "positional")
    finally:
        plugins.reset()


def test_evaluator_without_objective_no_longer_breaks_training_evaluation(fakes):
    plugins.register(_Evaluators([NoObjective]), name="bad-evaluators")
    try:
        from augforge.training.lifecycle import metric_direction as _metric_direction

        assert _metric_direction("kid") == "minimize"  # AttributeError before: every evaluator was read
    finally:
        plugins.reset()


# ---- plugins --verbose / show ----------------------------------------------------------------


def test_plugins_show_lists_options_types_defaults_sizes_and_distribution():
    plugins.reset()
    result = CliRunner().invoke(cli, ["plugins", "show", "sngan"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "generator sngan" in out and "discriminator sngan" in out
    assert "distribution augforge-plugins" in out
    assert "image_sizes  (not declared" in out  # sngan does not say; the scaffold's models do
    assert "conditional  yes" in out
    line = next(l for l in out.splitlines() if "generator.channels" in l)
    assert "int" in line and "= 32" in line and "--set" in line
    line = next(l for l in out.splitlines() if "generator.latent_dim" in l)
    assert "set by the core (model.latent_dim)" in line


def test_plugins_verbose_and_show_json_cover_evaluators():
    import json

    result = CliRunner().invoke(cli, ["plugins", "show", "kid", "--json"])
    (info,) = json.loads(result.output)
    assert info["objective"] == "kid (minimize)"
    assert {"key": "kid.n_subsets", "type": "int", "default": "50", "set_by": "augforge evaluate --set"} in info["options"]
    verbose = CliRunner().invoke(cli, ["plugins", "--verbose"])
    assert verbose.exit_code == 0
    for name in registry.names("generator") + registry.names("evaluator"):
        assert f" {name}  [" in verbose.output, name


def test_plugins_show_unknown_name_lists_the_registered_ones():
    result = CliRunner().invoke(cli, ["plugins", "show", "no-such"])
    assert isinstance(result.exception, ConfigError)
    assert "no component named 'no-such'; registered:" in str(result.exception) and "sngan" in str(result.exception)
