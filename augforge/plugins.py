"""The plugin manager: loads the ``augforge`` entry-point group like pytest/tox/datasette.

Environment switches:
- ``AUGFORGE_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name (see ``augforge plugins``).
- ``AUGFORGE_TRACE_HOOKS=1`` prints every hook call and result to stderr.
- ``AUGFORGE_PLUGIN_AUTOLOAD=0`` skips entry points (tests then register plugins by hand).

When the group has no entry point at all (the packages are on ``PYTHONPATH`` but not installed,
as on the bare GPU machine of ``scripts/device-check.sh``) the ``augforge_plugins`` modules are
registered directly, under their module names.
"""

from __future__ import annotations

import os
import sys

import pluggy

from augforge import hookspecs

hookimpl = pluggy.HookimplMarker("augforge")
ENTRY_POINT_GROUP = "augforge"

_pm: pluggy.PluginManager | None = None


def _env_list(var: str) -> list[str]:
    return [x.strip() for x in os.environ.get(var, "").split(",") if x.strip()]


def make_plugin_manager(autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager: specs, blocked names, entry points, then ``check_pending``."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for name in _env_list("AUGFORGE_DISABLE_PLUGINS"):
        pm.set_blocked(name)
    if autoload is None:
        autoload = os.environ.get("AUGFORGE_PLUGIN_AUTOLOAD", "1") != "0"
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        if not pm.list_plugin_distinfo():
            _register_builtin_modules(pm)
    # A hookimpl whose name matches no spec (a typo) fails here, at start-up, not silently.
    pm.check_pending()
    if os.environ.get("AUGFORGE_TRACE_HOOKS", "") not in ("", "0"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def _register_builtin_modules(pm: pluggy.PluginManager) -> None:
    """The first-party ``augforge_plugins`` modules, each under its entry-point name (= module name)."""
    import importlib
    import pkgutil

    try:
        package = importlib.import_module("augforge_plugins")
    except ImportError:
        return
    for info in pkgutil.iter_modules(package.__path__):
        if not pm.is_blocked(info.name):
            pm.register(importlib.import_module(f"augforge_plugins.{info.name}"), name=info.name)


def get_plugin_manager() -> pluggy.PluginManager:
    global _pm
    if _pm is None:
        _pm = make_plugin_manager()
    return _pm


def register(plugin, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks) and rebuild the registry."""
    pm = get_plugin_manager()
    pm.register(plugin, name=name)
    pm.check_pending()
    from augforge import registry

    registry.reset()


def reset() -> None:
    """Forget the plugin manager and registry (tests use this after changing the environment)."""
    global _pm
    _pm = None
    from augforge import registry

    registry.reset()
