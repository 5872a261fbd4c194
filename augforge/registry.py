"""Name -> class tables built from the ``augforge_register_*`` hooks, and ``build()``.

``build(kind, name, **kwargs)`` checks the keyword arguments against the class constructor
(the constructor signature is the config schema), instantiates, and stores the bound
arguments, defaults included, as ``instance.config``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from augforge.errors import ConfigError
from augforge.interfaces import KINDS

_HOOKS = {
    "dataset": "augforge_register_datasets",
    "generator": "augforge_register_generators",
    "discriminator": "augforge_register_discriminators",
    "classifier": "augforge_register_classifiers",
    "evaluator": "augforge_register_evaluators",
}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    cls: type
    plugin: str  # plugin name as registered (entry-point name)
    distribution: str  # the installed distribution that provides it, or "(not installed)"


_tables: dict[str, dict[str, Entry]] | None = None


def reset() -> None:
    global _tables
    _tables = None


def _distributions(pm) -> dict[int, str]:
    return {id(plugin): f"{dist.project_name} {dist.version}" for plugin, dist in pm.list_plugin_distinfo()}


def tables() -> dict[str, dict[str, Entry]]:
    global _tables
    if _tables is not None:
        return _tables
    from augforge.plugins import get_plugin_manager

    pm = get_plugin_manager()
    dists = _distributions(pm)
    result: dict[str, dict[str, Entry]] = {kind: {} for kind in _HOOKS}
    for kind, hook_name in _HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            # Call through pluggy (so AUGFORGE_TRACE_HOOKS sees it), one plugin at a time so
            # every class is attributed to the plugin and distribution that registered it.
            others = [p for p in pm.get_plugins() if p is not impl.plugin]
            results = pm.subset_hook_caller(hook_name, remove_plugins=others)()
            for cls in (c for r in results for c in (r or [])):
                _check_class(kind, cls, impl.plugin_name)
                table = result[kind]
                if cls.name in table:
                    raise ConfigError(
                        f"{kind} name {cls.name!r} is registered twice: by plugin "
                        f"{table[cls.name].plugin!r} and by {impl.plugin_name!r}; "
                        f"rename one or block a plugin with AUGFORGE_DISABLE_PLUGINS"
                    )
                dist = dists.get(id(impl.plugin), "(not installed)")
                table[cls.name] = Entry(kind, cls.name, cls, impl.plugin_name, dist)
    _tables = result
    return result


def _check_class(kind: str, cls: Any, plugin: str) -> None:
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a {base.__qualname__} subclass")
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise ConfigError(f"plugin {plugin!r}: {kind} class {cls.__qualname__} needs a `name` class attribute")


def names(kind: str) -> list[str]:
    _check_kind(kind)
    return sorted(tables()[kind])


def _check_kind(kind: str) -> None:
    if kind not in _HOOKS:
        raise ConfigError(f"unknown component kind {kind!r}; valid kinds: {', '.join(_HOOKS)}")


def get(kind: str, name: str) -> type:
    _check_kind(kind)
    table = tables()[kind]
    if name not in table:
        valid = ", ".join(sorted(table)) or "(none registered)"
        raise ConfigError(f"unknown {kind} {name!r}; available: {valid}")
    return table[name].cls


def signature_params(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters: the component's config schema."""
    params = inspect.signature(cls.__init__).parameters
    return {n: p for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def bind(kind: str, name: str, **kwargs) -> dict[str, Any]:
    """Check ``kwargs`` against the constructor and return them with defaults applied."""
    cls = get(kind, name)
    params = signature_params(cls)
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(
            f"{kind} {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(params) or '(none)'}"
        )
    try:
        bound = inspect.signature(cls.__init__).bind_partial(None, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"{kind} {name!r}: {exc}") from None
    bound.apply_defaults()
    missing = [n for n, p in params.items() if n not in bound.arguments or bound.arguments[n] is inspect.Parameter.empty]
    if missing:
        raise ConfigError(f"{kind} {name!r} needs option(s): {', '.join(missing)}")
    return {n: bound.arguments[n] for n in params}


def build(kind: str, name: str, **kwargs) -> Any:
    """Instantiate component ``name`` of ``kind`` with checked kwargs; sets ``.config``."""
    config = bind(kind, name, **kwargs)
    obj = get(kind, name)(**config)
    obj.config = dict(config)
    return obj
