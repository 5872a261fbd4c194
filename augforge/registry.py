"""Name -> class tables built from the ``augforge_register_*`` hooks, and ``build()``.

``build(kind, name, **kwargs)`` checks the keyword arguments against the class constructor
(the constructor signature is the config schema), instantiates, and stores the bound
arguments, defaults included, as ``instance.config``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from dataclasses import dataclass
from typing import Any

from torch import nn

from augforge import plugins
from augforge.errors import AugforgeError, ConfigError
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
_built_at = -1  # augforge.plugins.generation() when _tables was built

#: constructor keys the core fills from the run (never from --set), and the --set key to use instead
INJECTED = {
    "generator": {"image_size": "data.image_size", "num_classes": "model.conditional / dataset.classes",
                  "latent_dim": "model.latent_dim"},
    "discriminator": {"image_size": "data.image_size", "num_classes": "model.conditional / dataset.classes"},
}
DIRECTIONS = ("minimize", "maximize")
#: constructors that take no options (a component without its own __init__)
_NO_OPTIONS = (object.__init__, nn.Module.__init__)


def reset() -> None:
    global _tables
    _tables = None


def tables() -> dict[str, dict[str, Entry]]:
    """kind -> name -> Entry, built once from the register hooks, one plugin at a time.

    A plugin whose register hook raises, returns something other than a list, or returns a class
    that breaks the contract (``_check_class``) is disabled for this command as a whole (its
    other classes too) and reported by name; the other plugins' classes are still listed.
    """
    global _tables, _built_at
    if _tables is not None and _built_at == plugins.generation():
        return _tables
    pm = plugins.get_plugin_manager()
    result: dict[str, dict[str, Entry]] = {kind: {} for kind in _HOOKS}
    for plugin_name, plugin in list(pm.list_name_plugin()):
        if plugin is None:  # blocked
            continue
        try:
            found = _collect(pm, plugin, plugin_name)
            seen: dict[tuple[str, str], str] = {}
            for kind, cls in found:
                key = (kind, cls.name)
                other = result[kind][cls.name].plugin if cls.name in result[kind] else seen.get(key)
                if other is not None:
                    raise ConfigError(
                        f"{kind} name {cls.name!r} is registered twice: by plugin {other!r} and by "
                        f"{plugin_name!r}; rename one or block a plugin with AUGFORGE_DISABLE_PLUGINS"
                    )
                seen[key] = plugin_name
        except AugforgeError as exc:
            pm.disable(plugin_name, str(exc))
            continue
        dist = pm.distributions.get(plugin_name, "(not installed)")
        for kind, cls in found:
            result[kind][cls.name] = Entry(kind, cls.name, cls, plugin_name, dist)
    _tables, _built_at = result, plugins.generation()  # after any plugin disabled while collecting
    return result


def _collect(pm, plugin, plugin_name: str) -> list[tuple[str, type]]:
    """Call each register hook of one plugin (through pluggy, so AUGFORGE_TRACE_HOOKS sees it)."""
    others = [p for p in pm.get_plugins() if p is not plugin]
    found = []
    for kind, hook_name in _HOOKS.items():
        if not any(impl.plugin is plugin for impl in getattr(pm.hook, hook_name).get_hookimpls()):
            continue
        try:
            results = pm.subset_hook_caller(hook_name, remove_plugins=others)()
        except Exception as exc:
            raise ConfigError(f"plugin {plugin_name!r}: {hook_name}() raised {type(exc).__name__}: {exc}") from None
        for returned in results:
            if returned is None:
                continue
            if isinstance(returned, (str, bytes)) or not isinstance(returned, (list, tuple)):
                raise ConfigError(
                    f"plugin {plugin_name!r}: {hook_name}() returned {returned!r} ({type(returned).__name__}); "
                    f"return a list of classes, e.g. `return [{getattr(returned, '__name__', 'MyClass')}]`"
                )
            for cls in returned:
                _check_class(kind, cls, plugin_name)
                found.append((kind, cls))
    return found


def _check_class(kind: str, cls: Any, plugin: str) -> None:
    """The class attributes and constructor the core relies on; messages say seen, expected, fix."""
    base = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(
            f"plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a subclass of "
            f"augforge.interfaces.{base.__qualname__}; derive it from that class"
        )
    where = f"plugin {plugin!r}: {kind} class {cls.__module__}.{cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where} has name={name!r}; it needs a non-empty `name = \"...\"` class attribute "
                          f"(what users pass on the command line)")
    if kind == "evaluator":
        objective = getattr(cls, "objective", None)
        if not isinstance(objective, str) or not objective:
            raise ConfigError(f"{where} has objective={objective!r}; it needs an `objective = \"<metric key>\"` class "
                              f"attribute naming the metric a sweep optimises (one of the keys its EvalResult returns)")
        direction = getattr(cls, "direction", None)
        if direction not in DIRECTIONS:
            raise ConfigError(f"{where} has direction={direction!r}; expected one of {', '.join(DIRECTIONS)}")
    if kind in ("generator", "discriminator"):
        sizes = getattr(cls, "image_sizes", ())
        if not isinstance(sizes, (tuple, list)) or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ConfigError(f"{where} has image_sizes={sizes!r}; expected a tuple of pixel sizes, e.g. (32, 64)")
    if cls.__init__ in _NO_OPTIONS:
        return
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            raise ConfigError(
                f"{where}: constructor parameter {p.name!r} is {p.kind.description}; the core passes options "
                f"by name only, so make the constructor keyword-only: def __init__(self, *, {p.name}...)"
            )


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

        failed = plugins.get_plugin_manager().failures
        note = f" (disabled for this command: {', '.join(sorted(failed))}; see the warnings above)" if failed else ""
        raise ConfigError(f"unknown {kind} {name!r}; available: {valid}{note}")
    return table[name].cls


def entry(kind: str, name: str) -> Entry:
    get(kind, name)
    return tables()[kind][name]


def describe(kind: str, name: str) -> str:
    """``generator 'x' (plugin 'p', distribution 'd 1.0')`` for messages."""
    e = entry(kind, name)
    return f"{kind} {name!r} (plugin {e.plugin!r}, {e.distribution})"


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
        raise ConfigError(f"{kind} {name!r} has no option(s) {', '.join(unknown)}; {_valid_options(kind, params)}")
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


def declared_image_sizes(cls: type) -> tuple[int, ...]:
    """The pixel sizes a model class declares it supports; () when it does not say."""
    return tuple(getattr(cls, "image_sizes", ()) or ())


def _valid_options(kind: str, params) -> str:
    injected = [p for p in params if p in INJECTED.get(kind, {})]
    own = [p for p in params if p not in injected]
    text = f"valid: {', '.join(own) or '(none)'}"
    return text + (f" ({', '.join(injected)} filled in by the core)" if injected else "")


def validate_config(cfg, fill_defaults: bool = False):
    """Check a run config's component names and every plugin key before any data is read.

    Raises ``ConfigError`` for an unknown dataset/model name, an unknown option (saying when it
    came from the preset), an option the core injects (``--set generator.latent_dim``), and an
    ``image_size`` outside the model's declared ``image_sizes``. Returns the config; with
    ``fill_defaults`` the ``generator`` and ``discriminator`` sections also hold every option
    the user did not set, at its default, so ``config.json``, ``--dry-run`` and the MLflow params
    show the whole model config under the dotted keys ``--set`` uses.
    """
    from augforge.presets import PRESETS

    preset = PRESETS.get(cfg.preset, {})
    components = (("dataset", cfg.data.name), ("generator", cfg.model.generator),
                  ("discriminator", cfg.discriminator_name))
    for kind, name in components:
        cls = get(kind, name)
        options = getattr(cfg, kind)
        injected = INJECTED.get(kind, {})
        for key in options:
            if key in injected:
                raise ConfigError(
                    f"--set {kind}.{key}: {key} is not an option you set per {kind}; the core passes it to "
                    f"every {kind} from {injected[key]}, so set that instead (e.g. --set {injected[key].split(' ')[0]}=...)"
                )
        params = signature_params(cls)
        unknown = [k for k in options if k not in params]
        if unknown:
            came = [k for k in unknown if f"{kind}.{k}" in preset]
            origin = ""
            if came:
                origin = (f" ({', '.join(f'{kind}.{k}' for k in came)} came from preset {cfg.preset!r}, which is written "
                          f"for {preset.get('model.generator', 'another model')}: add that option to {name}, or train "
                          f"without --preset and give the train.* keys with --set)")
            raise ConfigError(f"{describe(kind, name)} has no option(s) {', '.join(unknown)}{origin}; "
                              f"{_valid_options(kind, params)}. See: augforge plugins show {name}")
        sizes = declared_image_sizes(cls)
        if kind != "dataset" and sizes and cfg.data.image_size not in sizes:
            raise ConfigError(f"{describe(kind, name)} supports image sizes {', '.join(map(str, sizes))} px, not "
                              f"data.image_size={cfg.data.image_size}; use --image-size "
                              f"{' or '.join(map(str, sizes))}")
        core = {"image_size": cfg.data.image_size, "num_classes": 0, "latent_dim": cfg.model.latent_dim}
        bound = bind(kind, name, **{k: v for k, v in core.items() if k in injected and k in params}, **options)
        if fill_defaults and kind != "dataset":  # dataset defaults stay out: data.skip_bad fills its own
            full = {k: v for k, v in bound.items() if k not in injected and _is_json(v)}
            cfg = dataclasses.replace(cfg, **{kind: {**full, **options}})
    return cfg


def _is_json(value) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False
