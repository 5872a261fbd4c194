"""Every ``AUGFORGE_*`` environment variable: its type, bounds and a one-line error when wrong.

The CLI calls ``check_environment()`` first, so a bad value stops the command with one line
naming the variable, the value and what it accepts, before any work starts. Library code reads
values through ``get()``, which applies the same checks.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass

from augforge.errors import ConfigError


@dataclass(frozen=True)
class Var:
    kind: str  # int | flag | list | path | text
    help: str
    default: object = None
    low: int | None = None
    high: int | None = None


VARIABLES: dict[str, Var] = {
    "AUGFORGE_CACHE_DIR": Var("path", "decode-once cache and downloaded checkpoints (default data.cache_dir)"),
    "AUGFORGE_MAX_IMAGE_PIXELS": Var("int", "Pillow's decompression-bomb limit in pixels", None, 1, 2**40),
    # 1024 px: one uint8 image is 3 MiB, so a 10,000-image cache is already 30 GiB
    "AUGFORGE_MAX_IMAGE_SIZE": Var("int", "largest data.image_size in pixels", 1024, 8, 16384),
    # kept free after writing a cache, checkpoint or generation batch (MiB)
    "AUGFORGE_MIN_FREE_MB": Var("int", "MiB that must stay free on the disk after a write", 256, 0, 2**30),
    "AUGFORGE_DISABLE_PLUGINS": Var("list", "comma-separated plugin names to block"),
    "AUGFORGE_TRACE_HOOKS": Var("flag", "print every hook call (0 or 1)", False),
    "AUGFORGE_PLUGIN_AUTOLOAD": Var("flag", "load plugins from entry points (0 or 1)", True),
    # used by scripts/, docker/ and the test fixtures, listed so they are not reported as typos
    "AUGFORGE_TEAM_DIR": Var("path", "team-mode state folder (scripts/team-up.sh)"),
    "AUGFORGE_PG_BINDIR": Var("path", "PostgreSQL binaries folder (team mode, tests)"),
    "AUGFORGE_TEST_POSTGRES_URL": Var("text", "PostgreSQL URL for the postgres tests"),
    "AUGFORGE_DATA": Var("path", "data folder mounted by docker/compose.yaml"),
    "AUGFORGE_ENV_FILE": Var("path", "env file read by docker/compose.yaml"),
    "AUGFORGE_IMAGE_TAG": Var("text", "docker image tag used by docker/compose.yaml"),
}

_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False, "": False}


def _parse(name: str, raw: str):
    var = VARIABLES[name]
    if var.kind == "int":
        text = raw.strip().replace("_", "")
        if not text.lstrip("-").isdigit():
            raise ConfigError(f"{name}={raw!r} is not a whole number; expected {var.low}..{var.high} ({var.help})")
        value = int(text)
        if not var.low <= value <= var.high:
            raise ConfigError(f"{name}={value} is out of range; expected {var.low}..{var.high} ({var.help})")
        return value
    if var.kind == "flag":
        if raw.strip().lower() not in _FLAGS:
            raise ConfigError(f"{name}={raw!r} is not a flag; expected 0 or 1 ({var.help})")
        return _FLAGS[raw.strip().lower()]
    if var.kind == "list":
        return [x.strip() for x in raw.split(",") if x.strip()]
    if var.kind == "path" and "\0" in raw:
        raise ConfigError(f"{name} contains a NUL byte; set it to a folder path ({var.help})")
    return raw


def get(name: str):
    """The typed value of ``name`` (its default when unset or empty); ``ConfigError`` when malformed."""
    raw = os.environ.get(name)
    if raw is None or (raw == "" and VARIABLES[name].kind != "flag"):
        return VARIABLES[name].default
    return _parse(name, raw)


def check_environment(environ=None, warn=None) -> None:
    """Validate every set ``AUGFORGE_*`` variable; warn (one line) about unknown names."""
    environ = os.environ if environ is None else environ
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    for name in sorted(k for k in environ if k.startswith("AUGFORGE_")):
        if name in VARIABLES:
            if environ[name] != "" or VARIABLES[name].kind == "flag":
                _parse(name, environ[name])
            continue
        close = difflib.get_close_matches(name, VARIABLES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        warn(f"{name} is not an augforge variable and is ignored; {hint}known: {', '.join(sorted(VARIABLES))}")


def check_image_size(size) -> int:
    """``data.image_size`` within 8..``AUGFORGE_MAX_IMAGE_SIZE`` (default 1024) pixels."""
    high = get("AUGFORGE_MAX_IMAGE_SIZE")
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= high:
        raise ConfigError(
            f"data.image_size={size!r}: expected a whole number of pixels in 8..{high} "
            f"(raise the upper bound with AUGFORGE_MAX_IMAGE_SIZE, at most {VARIABLES['AUGFORGE_MAX_IMAGE_SIZE'].high})"
        )
    return size


def check_free_space(folder, need_bytes: int, what: str, fix: str) -> None:
    """Refuse a write of ``need_bytes`` into ``folder`` that would leave under AUGFORGE_MIN_FREE_MB free."""
    import shutil
    from pathlib import Path

    from augforge.errors import AugforgeError

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:  # the folder may not exist yet
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    reserve = get("AUGFORGE_MIN_FREE_MB") * 2**20
    if free - need_bytes < reserve:
        raise AugforgeError(
            f"not enough disk space for {what} in {folder}: needs {_mib(need_bytes)} + {_mib(reserve)} kept free "
            f"(AUGFORGE_MIN_FREE_MB), {_mib(free)} free; {fix}"
        )


def no_space(path, what: str):
    """The one-line error for a write that hit ENOSPC (a full disk) anyway."""
    import shutil
    from pathlib import Path

    from augforge.errors import AugforgeError

    path = Path(path)
    free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
    return AugforgeError(f"no space left on the device writing {what} {path} ({_mib(free)} free); free space, then "
                         f"continue (a training run: `augforge train --resume RUN_DIR` from its last checkpoint)")


def _mib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"
