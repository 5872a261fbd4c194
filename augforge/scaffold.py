"""``augforge new-plugin NAME``: write a ready plugin package, like ``cookiecutter`` for augforge.

The package installs as is (``pip install -e``), registers through the ``augforge`` entry point,
has one file per component and a test file that runs ``augforge.testing``'s conformance suite on
everything it registers. Its components are small but real: the model trains with
``augforge train --model NAME --preset smoke``. The templates live in
``augforge/templates/plugin`` as plain files with ``__NAME__``-style placeholders.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from augforge.errors import ConfigError

KINDS = ("model", "evaluator", "dataset")
TEMPLATES = Path(__file__).parent / "templates" / "plugin"
#: kind -> (template file, hook name, classes) ; __CLASS__ is filled in
COMPONENTS = {
    "model": ("model.py", {"augforge_register_generators": "__CLASS__Generator",
                           "augforge_register_discriminators": "__CLASS__Discriminator"}),
    "evaluator": ("evaluator.py", {"augforge_register_evaluators": "__CLASS__Evaluator"}),
    "dataset": ("dataset.py", {"augforge_register_datasets": "__CLASS__Dataset"}),
}


def _names(name: str) -> dict[str, str]:
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", name):
        raise ConfigError(f"plugin name {name!r}: use lower-case letters, digits and single dashes, e.g. my-gan")
    module = "augforge_" + name.replace("-", "_")
    return {
        "__NAME__": name,  # the component name users type (--model, --dataset, --metrics)
        "__DIST__": f"augforge-{name}",
        "__MODULE__": module,
        "__ENTRY__": name.replace("-", "_"),  # entry-point (plugin) name: AUGFORGE_DISABLE_PLUGINS, testing
        "__CLASS__": "".join(part.capitalize() for part in name.split("-")),
    }


def _fill(text: str, names: dict[str, str]) -> str:
    for key, value in names.items():
        text = text.replace(key, value)
    return text


def _init_module(kinds: list[str], names: dict[str, str]) -> str:
    lines = [f'"""augforge plugin {names["__NAME__"]}: the hooks that register its components.', "",
             "augforge finds this module through the `augforge` entry point in pyproject.toml.", '"""', "",
             "from augforge import hookimpl", ""]
    for kind in kinds:
        file, hooks = COMPONENTS[kind]
        classes = ", ".join(hooks.values())
        lines.append(f"from {names['__MODULE__']}.{file[:-3]} import {classes}")
    for kind in kinds:
        for hook, cls in COMPONENTS[kind][1].items():
            lines += ["", "", "@hookimpl", f"def {hook}():", f"    return [{cls}]"]
    return _fill("\n".join(lines) + "\n", names)


def write_plugin(name: str, out_dir: str | Path, kinds: list[str]) -> Path:
    """Write the package for plugin ``name`` into ``out_dir/name``; returns that folder."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ConfigError(f"--kind {','.join(kinds)}: unknown kind(s) {unknown}; choose from {','.join(KINDS)}")
    names = _names(name)
    root = Path(out_dir) / name
    if root.exists():
        raise ConfigError(f"{root} already exists; pick another NAME or --dir, or remove it")
    pkg = root / names["__MODULE__"]
    (root / "tests").mkdir(parents=True)
    pkg.mkdir()
    for src, dest in (("pyproject.toml", root / "pyproject.toml"), ("README.md", root / "README.md"),
                      ("test_plugin.py", root / "tests" / "test_plugin.py")):
        dest.write_text(_fill((TEMPLATES / f"{src}.tmpl").read_text(), names))
    (pkg / "__init__.py").write_text(_init_module(kinds, names))
    for kind in kinds:
        file = COMPONENTS[kind][0]
        (pkg / file).write_text(_fill((TEMPLATES / f"{file}.tmpl").read_text(), names))
    return root


@click.command("new-plugin")
@click.argument("name")
@click.option("--kind", default="model", show_default=True, metavar="KINDS",
              help=f"Comma-separated components to write: {','.join(KINDS)}.")
@click.option("--dir", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The package folder NAME is created under it.")
def new_plugin_command(name, kind, out_dir):
    """Write a ready plugin package NAME: pyproject with the entry point, one file per component, tests.

    \b
    Examples:
      augforge new-plugin my-gan
      augforge new-plugin my-gan --kind model,evaluator,dataset
    Then:
      pip install -e my-gan && pytest my-gan/tests
      augforge plugins show my-gan
      augforge train --model my-gan --preset smoke
    """
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    root = write_plugin(name, out_dir, kinds)
    files = sorted(str(p.relative_to(root.parent)) for p in root.rglob("*") if p.is_file())
    click.echo(f"wrote {root} ({', '.join(kinds)}):")
    for f in files:
        click.echo(f"  {f}")
    click.echo(f"next: pip install -e {root} && pytest {root / 'tests'}")
