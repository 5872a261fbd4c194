"""The ``augforge`` command line.

Each core command lives in the module that implements it and is imported only when used, so
``augforge plugins`` stays fast and one module's import error cannot break the others.
Plugins add commands through the ``augforge_register_commands(cli)`` hook.
"""

from __future__ import annotations

import importlib
import sys

import click

from augforge import __version__
from augforge.errors import AugforgeError

#: command name -> ("module:attribute" of a click command or group, one-line help)
COMMANDS = {
    "plugins": ("augforge.plugins_cli:plugins_command", "List components, their options (--verbose, show NAME)."),
    "new-plugin": ("augforge.scaffold:new_plugin_command", "Write a ready plugin package (model, evaluator, dataset)."),
    "data": ("augforge.data.cli:data_group", "Inspect and prepare datasets (decode-once cache, splits)."),
    "train": ("augforge.training.cli:train_command", "Train a GAN (presets, --set overrides, resume, MLflow)."),
    "evaluate": ("augforge.evaluation.cli:evaluate_command", "Evaluate a generator: detector, FID/KID, c2st, privacy."),
    "sweep": ("augforge.sweep.cli:sweep_command", "Optuna hyperparameter sweep; trials are nested MLflow runs."),
    "export": ("augforge.export.cli:export_command", "Export a generator to ONNX with metadata and a parity check."),
    "generate": ("augforge.export.cli:generate_command", "Write synthetic images + HAM10000-style metadata.csv."),
    "turing": ("augforge.turing.cli:turing_group", "Visual Turing test for clinicians: create, serve, results."),
    "demo": ("augforge.demo:demo_command", "The whole pipeline on the embedded synthetic data."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name not in COMMANDS:
            return None
        module, _, attr = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx, formatter):
        # Listing must not import every command module (torch, mlflow): use the static help.
        rows = [(n, COMMANDS[n][1]) for n in sorted(COMMANDS)]
        rows += [(n, c.get_short_help_str()) for n, c in sorted(self.commands.items()) if n not in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="augforge")
def cli():
    """Synthetic, labelled skin-lesion images from GANs: data, train, evaluate, sweep, export."""


def main(argv=None):
    from augforge.envvars import check_environment
    from augforge.plugins import get_plugin_manager

    try:
        check_environment()  # a malformed AUGFORGE_* value stops here, in one line
        _register_commands(get_plugin_manager())
        cli.main(args=argv, prog_name="augforge", standalone_mode=False)
    except AugforgeError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _register_commands(pm) -> None:
    """Each plugin's commands on their own: one plugin's failure disables it, not the CLI."""
    hook = "augforge_register_commands"
    for name, plugin in list(pm.list_name_plugin()):
        if plugin is None or not any(i.plugin is plugin for i in pm.hook.augforge_register_commands.get_hookimpls()):
            continue
        others = [p for p in pm.get_plugins() if p is not plugin]
        try:
            pm.subset_hook_caller(hook, remove_plugins=others)(cli=cli)
        except Exception as exc:
            pm.disable(name, f"{hook}(cli) raised {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
