"""Atomic, self-describing checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and
dicts, so it loads with ``weights_only=True`` (no pickled code runs on load). It carries
its run config and every component's constructor config, so a generator can be rebuilt
from the file alone (``load_generator``)::

    {"format": FORMAT, "augforge_version": str, "config": RunConfig.to_dict(),
     "class_names": [...], "image_size": int, "latent_dim": int, "run_id": str | None,
     "step": int, "epoch": int,
     "generator": {"name": str, "config": dict, "state": state_dict},
     "discriminator": {...}, "g_ema": state_dict | None,
     "opt_g": ..., "opt_d": ..., "rng": {...}, "extra": {...}}

``rng`` is this process's RNG states as plain data: ``{"torch": ByteTensor, "cuda": ByteTensor |
None, "numpy": [name, keys list, pos, has_gauss, cached], "python": [version, state list,
gauss]}``. ``extra`` (written by ``augforge.training``) holds what an exact resume needs beyond
that: ``pos`` (batches consumed in ``epoch``), ``rng_per_rank`` (every rank's ``rng`` under
torchrun), ``scaler_g``/``scaler_d`` (fp16 GradScalers), ``history`` (the logged loss
curves), ``best`` (in-training evaluation: metric, value, step), the open metric windows
(``window``, ``epoch_acc``), ``world_size`` and ``run_dir``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from augforge.errors import AugforgeError

FORMAT = "augforge-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], keep_previous: bool = True) -> Path:
    """Write ``state`` atomically: temp file in the same folder, fsync, rename.

    A crash (even SIGKILL) mid-write leaves the previous file at ``path`` intact. The file
    carries ``digest`` (``payload_digest`` of everything else) and, when ``extra.run_dir``
    holds a run identity (``augforge.runs``), ``identity``. With ``keep_previous`` the file
    being replaced stays as ``NAME.prev.pt`` (when its zip CRCs check out), so a latest one
    that is damaged later still has a good predecessor (``load_latest``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, **state}
    run_dir = (state.get("extra") or {}).get("run_dir")
    if run_dir:
        from augforge.runs import read_identity

        ident = read_identity(Path(run_dir))
        if ident is not None:
            state["identity"] = {"token": ident["token"], "run_id": state.get("run_id")}
    state["digest"] = payload_digest(state)
    buf = io.BytesIO()  # serialised in memory first: a full disk then fails as a plain ENOSPC, not inside torch's zip writer
    torch.save(state, buf)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file() and zip_problem(path) is None:
            prev = previous_path(path)
            link = prev.with_name(f".{prev.name}.link")
            link.unlink(missing_ok=True)
            os.link(path, link)  # a hard link: `path` exists at every instant
            os.replace(link, prev)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the renames themselves durable
        finally:
            os.close(dir_fd)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise AugforgeError(
                f"no space left on the device writing checkpoint {path} ({shutil.disk_usage(path.parent).free // 2**20} MiB free); "
                f"the previous checkpoint there is intact: free space, then resume with `augforge train --resume {path}`"
            ) from None
        raise
    return path


def _write_all(f, data) -> None:
    f.write(data)


def previous_path(path: Path) -> Path:
    """``last.pt`` -> ``last.prev.pt``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def payload_digest(state: dict[str, Any]) -> str:
    """sha256 over every value of ``state`` except ``digest``, in a fixed order (tensors by their bytes)."""
    h = hashlib.sha256()

    def feed(obj) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            keys = sorted((k for k in obj if obj is not state or k != "digest"), key=repr)
            h.update(f"D{len(keys)}".encode())
            for k in keys:
                h.update(repr(k).encode())
                feed(obj[k])
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
            for x in obj:
                feed(x)
        else:
            h.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed(state)
    return h.hexdigest()


def zip_problem(path: Path) -> str | None:
    """Why ``path`` is not an intact zip (torch's format): 0 bytes, no zip, a CRC mismatch; None when intact."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes; a copy or a write cut short, e.g. by a full disk)"
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # reads every member and checks its CRC-32
    except zipfile.BadZipFile as exc:
        return f"not a complete zip/torch file ({size} bytes; {exc}): truncated or overwritten"
    except (OSError, EOFError, zipfile.LargeZipFile, NotImplementedError, ValueError) as exc:
        return f"cannot read it as a zip ({type(exc).__name__}: {exc})"
    if bad is not None:
        return f"zip CRC-32 mismatch in member {bad}: the bytes changed after writing"
    return None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify: zip CRCs, ``weights_only`` unpickling, format, then the payload digest."""
    path = Path(path)
    if not path.is_file():
        raise AugforgeError(f"checkpoint {path} does not exist; pass the .pt file written by `augforge train`")
    problem = zip_problem(path)
    if problem:
        raise AugforgeError(f"cannot read checkpoint {path}: {problem}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # not a torch file, unsafe pickle
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise AugforgeError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise AugforgeError(f"{path} is not an augforge checkpoint (format {FORMAT!r} expected)")
    if "digest" in state and payload_digest(state) != state["digest"]:  # files before digests have none
        raise AugforgeError(f"cannot read checkpoint {path}: its content does not match its sha256 digest (corrupted)")
    return state


def load_latest(path: str | os.PathLike, map_location: str | torch.device = "cpu", say=None) -> tuple[Path, dict[str, Any]]:
    """Load ``path``; if it is missing or damaged, fall back to ``NAME.prev.pt`` with one line via ``say``.

    Returns ``(the file used, its state)``; raises naming both files when neither is good.
    """
    path = Path(path)
    try:
        return path, load_checkpoint(path, map_location)
    except AugforgeError as exc:
        prev = previous_path(path)
        if not prev.is_file():
            raise
        try:
            state = load_checkpoint(prev, map_location)
        except AugforgeError as exc2:
            raise AugforgeError(f"{exc}; the previous one is no better: {exc2}") from None
        message = f"warning: {exc}; using the previous checkpoint {prev} (step {state.get('step')}) instead"
        if say is not None:
            say(message)
        elif message not in _said:  # `augforge train --resume` loads twice (config, then state): say it once
            _said.add(message)
            print(message, file=sys.stderr)
        return prev, state


_said: set[str] = set()


def load_generator(path_or_state, ema: bool = True, map_location="cpu"):
    """Rebuild the generator from a checkpoint; returns ``(generator in eval mode, state)``.

    Uses the EMA weights when present and ``ema`` is true.
    """
    from augforge import registry

    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state, map_location)
    g = state["generator"]
    gen = registry.build("generator", g["name"], **g["config"])
    weights = state.get("g_ema") if ema and state.get("g_ema") is not None else g["state"]
    gen.load_state_dict(weights)
    return gen.eval(), state


def load_discriminator(path_or_state, map_location="cpu"):
    """Rebuild the discriminator of a training checkpoint, in eval mode (realism scores)."""
    from augforge import registry

    state = path_or_state if isinstance(path_or_state, dict) else load_checkpoint(path_or_state, map_location)
    d = state.get("discriminator")
    if not d:
        where = "" if isinstance(path_or_state, dict) else f"{path_or_state} "
        raise AugforgeError(f"{where}holds no discriminator; realism scores need a training checkpoint (`augforge train`)")
    disc = registry.build("discriminator", d["name"], **d["config"])
    disc.load_state_dict(d["state"])
    return disc.eval()
