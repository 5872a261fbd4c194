"""The plugin manager: loads the ``augforge`` entry-point group like pytest/tox/datasette.

Environment switches:
- ``AUGFORGE_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name (see ``augforge plugins``).
- ``AUGFORGE_TRACE_HOOKS=1`` prints every hook call and result to stderr.
- ``AUGFORGE_PLUGIN_AUTOLOAD=0`` skips entry points (tests then register plugins by hand).

A plugin that cannot be used (its import fails, a hook is misspelt or not marked with
``@augforge.hookimpl``, a register hook raises or returns something other than a list of valid
classes) is *disabled for this command* and reported by name on stderr; every other plugin
keeps working, so ``augforge --help`` and ``augforge plugins`` always run.

When the group has no entry point at all (the packages are on ``PYTHONPATH`` but not installed,
as on the bare GPU machine of ``scripts/device-check.sh``) the ``augforge_plugins`` modules are
registered directly, under their module names.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import sys

import pluggy

from augforge import envvars, hookspecs
from augforge.errors import AugforgeError

hookimpl = pluggy.HookimplMarker("augforge")
ENTRY_POINT_GROUP = "augforge"
HOOK_NAMES = tuple(sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("augforge_")))

_pm: "PluginManager | None" = None
#: bumped on every (un)registration and reset: ``augforge.registry`` rebuilds its tables when it moves
_generation = 0


def generation() -> int:
    """A counter that changes whenever the set of registered plugins may have changed."""
    return _generation


def _bump() -> None:
    global _generation
    _generation += 1


class PluginError(AugforgeError):
    """A plugin breaks the contract in ``augforge.hookspecs``; the message names it and the fix."""


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what ``augforge plugins`` shows: distributions and failures."""

    def __init__(self, project_name: str):
        super().__init__(project_name)
        #: plugin name -> "distribution version" for plugins loaded from entry points
        self.distributions: dict[str, str] = {}
        #: plugin name -> why it was disabled for this command
        self.failures: dict[str, str] = {}

    def register(self, plugin, name=None):
        _bump()
        return super().register(plugin, name=name)

    def unregister(self, plugin=None, name=None):
        _bump()
        return super().unregister(plugin=plugin, name=name)

    def disable(self, name: str, message: str) -> None:
        """Unregister plugin ``name`` for the rest of this process and report why on stderr."""
        if self.get_plugin(name) is not None:
            self.unregister(name=name)
        if name not in self.failures:
            self.failures[name] = message
            sys.stderr.write(f"warning: plugin {name!r} disabled for this command: {message}\n")


def _where(plugin) -> str:
    return getattr(plugin, "__name__", None) or type(plugin).__module__ + "." + type(plugin).__qualname__


def check_hooks(pm: pluggy.PluginManager, plugin, name: str) -> None:
    """Raise ``PluginError`` when ``plugin`` has an ``augforge_*`` function that pluggy would skip
    (no ``@hookimpl`` marker) or that matches no hook (a typo, which gets a "did you mean")."""
    for attr in sorted(dir(plugin)):
        if not attr.startswith("augforge_") or not callable(getattr(plugin, attr, None)):
            continue
        marked = pm.parse_hookimpl_opts(plugin, attr) is not None
        if attr not in HOOK_NAMES:
            close = difflib.get_close_matches(attr, HOOK_NAMES, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise PluginError(
                f"plugin {name!r} ({_where(plugin)}): {attr} is not an augforge hook; {hint}"
                f"valid hooks: {', '.join(HOOK_NAMES)} (see augforge/hookspecs.py)"
            )
        if not marked:
            raise PluginError(
                f"plugin {name!r} ({_where(plugin)}): {attr} is not marked as a hook, so it would never "
                f"be called; decorate it with @augforge.hookimpl (from augforge import hookimpl)"
            )


def _load_entry_points(pm: PluginManager) -> None:
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or pm.get_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                pm.disable(ep.name, f"importing {ep.value} failed: {type(exc).__name__}: {exc}; fix the import "
                                    f"or block the plugin with AUGFORGE_DISABLE_PLUGINS={ep.name}")
                continue
            _register_checked(pm, plugin, ep.name)
            if pm.get_plugin(ep.name) is not None:
                pm.distributions[ep.name] = f"{dist.metadata['Name']} {dist.version}"


def _register_checked(pm: PluginManager, plugin, name: str) -> None:
    try:
        check_hooks(pm, plugin, name)
        pm.register(plugin, name=name)
    except (PluginError, pluggy.PluginValidationError) as exc:
        pm.disable(name, str(exc))


def make_plugin_manager(autoload: bool | None = None) -> PluginManager:
    """Build a fresh plugin manager: specs, blocked names, entry points (each one checked)."""
    pm = PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    for name in envvars.get("AUGFORGE_DISABLE_PLUGINS") or []:
        pm.set_blocked(name)
    if autoload is None:
        autoload = envvars.get("AUGFORGE_PLUGIN_AUTOLOAD")
    if autoload:
        _load_entry_points(pm)
        if not importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            _register_builtin_modules(pm)
    # Every plugin passed check_hooks; this still guards plugins registered by other means.
    pm.check_pending()
    if envvars.get("AUGFORGE_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


def _register_builtin_modules(pm: PluginManager) -> None:
    """The first-party ``augforge_plugins`` modules, each under its entry-point name (= module name),
    checked like any entry point."""
    import importlib
    import pkgutil

    try:
        package = importlib.import_module("augforge_plugins")
    except ImportError:
        return
    for info in pkgutil.iter_modules(package.__path__):
        if not pm.is_blocked(info.name):
            try:
                module = importlib.import_module(f"augforge_plugins.{info.name}")
            except Exception as exc:
                pm.disable(info.name, f"importing augforge_plugins.{info.name} failed: {type(exc).__name__}: {exc}")
                continue
            _register_checked(pm, module, info.name)


def get_plugin_manager() -> PluginManager:
    global _pm
    if _pm is None:
        _pm = make_plugin_manager()
    return _pm


def register(plugin, name: str | None = None) -> None:
    """Register a plugin object at run time (tests, notebooks) and rebuild the registry.

    Unlike an entry point, a plugin registered by hand that breaks the contract raises
    ``PluginError`` (the caller is right there to fix it).
    """
    pm = get_plugin_manager()
    check_hooks(pm, plugin, name or _where(plugin))
    pm.register(plugin, name=name)
    pm.check_pending()


def reset() -> None:
    """Forget the plugin manager and registry (tests use this after changing the environment)."""
    global _pm
    _pm = None
    _bump()
