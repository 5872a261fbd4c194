"""The plugin manager: loads the ``augforge`` entry-point group like pytest/tox/datasette.

Environment switches:
- ``AUGFORGE_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name (see ``augforge plugins``).
- ``AUGFORGE_TRACE_HOOKS=1`` prints every hook call and result to stderr.
- ``AUGFORGE_PLUGIN_AUTOLOAD=0`` skips entry points (tests then register plugins by hand).
"""

from __future__ import annotations

import sys

import pluggy

from augforge import envvars, hookspecs

hookimpl = pluggy.HookimplMarker("augforge")
ENTRY_POINT_GROUP = "augforge"

_pm: pluggy.PluginManager | None = None


def make_plugin_manager(autoload: bool | None = None) -> pluggy.PluginManager:
    """Build a fresh plugin manager: specs, blocked names, entry points, then ``check_pending``."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for name in envvars.get("AUGFORGE_DISABLE_PLUGINS") or []:
        pm.set_blocked(name)
    if autoload is None:
        autoload = envvars.get("AUGFORGE_PLUGIN_AUTOLOAD")
    if autoload:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    # A hookimpl whose name matches no spec (a typo) fails here, at start-up, not silently.
    pm.check_pending()
    if envvars.get("AUGFORGE_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


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
