"""``augforge plugins``: what is installed, and every component's options (its config schema).

``augforge plugins`` lists components; ``--verbose`` adds each one's options with types and
defaults (read from the constructor signature), image sizes, conditioning and evaluator
objective; ``augforge plugins show NAME`` prints that for one name. Plugins that failed to load
are listed with the reason, so this command works whatever a plugin does.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import click

from augforge.errors import ConfigError


def _type_name(p: inspect.Parameter) -> str:
    if p.annotation is not inspect.Parameter.empty:
        return p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", str(p.annotation))
    if p.default is not inspect.Parameter.empty and p.default is not None:
        return type(p.default).__name__
    return "any"


def _default(p: inspect.Parameter) -> str:
    if p.default is inspect.Parameter.empty:
        return "(required)"
    try:
        return json.dumps(p.default)
    except TypeError:
        return repr(p.default)


def component_info(entry) -> dict[str, Any]:
    """What a user needs to configure one registered component; also used by the plugin guide."""
    from augforge import registry

    params = registry.signature_params(entry.cls)
    injected = registry.INJECTED.get(entry.kind, {})
    # where a user sets each option: train's --set for run components, evaluate's for evaluators
    prefix, how = {
        "evaluator": (entry.name, "augforge evaluate --set"),
        "classifier": (entry.name, "augforge evaluate --classifier (defaults only)"),
    }.get(entry.kind, (entry.kind, "augforge train --set"))
    info: dict[str, Any] = {
        "kind": entry.kind,
        "name": entry.name,
        "class": f"{entry.cls.__module__}.{entry.cls.__qualname__}",
        "plugin": entry.plugin,
        "distribution": entry.distribution,
        "description": getattr(entry.cls, "description", "") or "",
        "options": [
            {"key": f"{prefix}.{n}", "type": _type_name(p), "default": _default(p),
             "set_by": f"the core ({injected[n]})" if n in injected else how}
            for n, p in params.items()
        ],
    }
    if entry.kind in ("generator", "discriminator"):
        info["image_sizes"] = list(registry.declared_image_sizes(entry.cls)) or "(not declared: any size the layers allow)"
        info["conditional"] = ("yes (num_classes > 0: one label per image; 0: unconditional)"
                               if "num_classes" in params else "no (no num_classes option)")
    if entry.kind == "evaluator":
        info["objective"] = f"{entry.cls.objective} ({entry.cls.direction})"
        info["cheap"] = bool(getattr(entry.cls, "cheap", True))
    return info


def _print_info(info: dict[str, Any]) -> None:
    click.echo(f"{info['kind']} {info['name']}  [{info['class']}]")
    click.echo(f"  provided by  plugin {info['plugin']}, distribution {info['distribution']}")
    if info["description"]:
        click.echo(f"  about        {info['description']}")
    for key in ("image_sizes", "conditional", "objective", "cheap"):
        if key in info:
            value = ", ".join(map(str, info[key])) if isinstance(info[key], list) else info[key]
            click.echo(f"  {key:<12} {value}")
    if not info["options"]:
        click.echo("  options      (none)")
    width = max((len(o["key"]) for o in info["options"]), default=0)
    for i, o in enumerate(info["options"]):
        label = "options" if i == 0 else ""
        click.echo(f"  {label:<12} {o['key']:<{width}}  {o['type']:<12} = {o['default']:<12} set by {o['set_by']}")


def _print_failures() -> None:
    from augforge.plugins import get_plugin_manager

    failures = get_plugin_manager().failures
    if failures:
        click.echo("\nDisabled plugins (this command ran without them):")
        for name, message in sorted(failures.items()):
            click.echo(f"  {name}: {message}")


@click.group("plugins", invoke_without_command=True)
@click.option("--verbose", "-v", is_flag=True, help="Also list every component's options, types, defaults, image sizes.")
@click.pass_context
def plugins_command(ctx, verbose):
    """List every registered component with its kind and the distribution that provides it.

    \b
    Examples:
      augforge plugins
      augforge plugins --verbose
      augforge plugins show sngan
    """
    if ctx.invoked_subcommand:
        return
    from rich.console import Console
    from rich.table import Table

    from augforge import registry

    tables = registry.tables()
    table = Table(title="augforge components")
    for col in ("kind", "name", "plugin", "distribution", "description"):
        table.add_column(col)
    for kind, entries in tables.items():
        for name in sorted(entries):
            e = entries[name]
            table.add_row(kind, name, e.plugin, e.distribution, getattr(e.cls, "description", "") or "")
    Console(width=200).print(table)
    if verbose:
        for kind, entries in tables.items():
            for name in sorted(entries):
                click.echo()
                _print_info(component_info(entries[name]))
    _print_failures()


@plugins_command.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the details as JSON.")
def show_command(name, as_json):
    """Options (the --set keys), defaults, types, image sizes and provider of every component NAME."""
    from augforge import registry

    found = [component_info(entries[name]) for entries in registry.tables().values() if name in entries]
    if not found:
        every = sorted({n for entries in registry.tables().values() for n in entries})
        raise ConfigError(f"no component named {name!r}; registered: {', '.join(every)}")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for i, info in enumerate(found):
        if i:
            click.echo()
        _print_info(info)
    _print_failures()
