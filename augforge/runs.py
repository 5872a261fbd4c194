"""Run folders that cannot collide, and know who they are.

- ``create_run_dir``: exclusive create (``mkdir`` without ``exist_ok``), retried with a ``-N``
  suffix, so N runs started in the same second in one ``runs/`` get N folders.
- ``run.json`` in each run folder: ``token`` (random, made when the folder is created),
  ``path`` (where it was created), ``run_id`` (its MLflow run once started) and, for a folder
  that was copied and then resumed, ``source_run_id``/``source_path``. Checkpoints carry the
  token (``augforge.checkpoint.save_checkpoint``), so ``resume_identity`` can tell a copy (or
  a checkpoint dropped into another run's folder) from the run itself: a copy starts its own
  MLflow run, tagged with its source, and never writes into the source's.
- ``check_config_json``: ``--resume`` refuses a ``config.json`` edited by hand.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from augforge.errors import AugforgeError, ConfigError

IDENTITY_FILE = "run.json"


def create_run_dir(base: Path, attempts: int = 10_000) -> Path:
    """Create ``base`` (or ``base-2``, ``base-3``, ...) exclusively and give it an identity."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, attempts + 1):
        cand = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            cand.mkdir()  # atomic: exactly one process gets a given name
        except FileExistsError:
            continue
        write_identity(cand, {"token": secrets.token_hex(16), "path": str(cand.resolve())})
        return cand
    raise AugforgeError(f"cannot find a free run folder name next to {base} after {attempts} tries; pick another --run-name")


def read_identity(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/run.json`` as a dict, or None when absent or unreadable (folders made before it)."""
    try:
        ident = json.loads((Path(run_dir) / IDENTITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return ident if isinstance(ident, dict) and isinstance(ident.get("token"), str) else None


def write_identity(run_dir: Path, ident: dict[str, Any]) -> None:
    write_text_atomic(Path(run_dir) / IDENTITY_FILE, json.dumps(ident, indent=2) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` via a temp file and a rename: readers see the old text or the new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def record_run_id(run_dir: Path, run_id: str | None) -> None:
    """Note the MLflow run that tracks ``run_dir`` (after it started)."""
    ident = read_identity(run_dir)
    if ident is not None and run_id and ident.get("run_id") != run_id:
        write_identity(run_dir, {**ident, "run_id": run_id})


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def resume_identity(run_dir: Path, state: dict[str, Any], write: bool = True) -> str | None:
    """The MLflow run a resume of ``run_dir`` from checkpoint ``state`` continues, or None for a new one.

    A new run (None) when the folder is a copy of a run folder that still exists elsewhere
    (same token, another place), or when the checkpoint's token is another folder's. Then
    ``run.json`` gets a fresh token and ``source_run_id``/``source_path`` (tags of the new
    MLflow run); with ``write=False`` (other torchrun ranks) nothing is written.
    """
    run_dir = Path(run_dir)
    ckpt_run_id = state.get("run_id")
    ckpt_token = (state.get("identity") or {}).get("token")
    ident = read_identity(run_dir)
    recorded = (ident or {}).get("path") or (state.get("extra") or {}).get("run_dir")
    source = None
    if recorded and not _same_dir(Path(recorded), run_dir) and Path(recorded).is_dir():
        there = read_identity(Path(recorded))
        mine = (ident or {}).get("token") or ckpt_token
        if there is not None and mine is not None and there["token"] == mine:
            source = str(Path(recorded).resolve())  # the original is still there: this is a copy
    if source is None and ident is not None and ckpt_token and ckpt_token != ident["token"]:
        if ident.get("source_run_id") == ckpt_run_id and ident.get("run_id"):
            return ident["run_id"]  # a copy resumed before, killed before its first checkpoint
        source = (state.get("extra") or {}).get("run_dir") or "(another run folder)"
    if source is None:
        if write and ident is None:
            write_identity(run_dir, {"token": ckpt_token or secrets.token_hex(16), "path": str(run_dir.resolve()),
                                     "run_id": ckpt_run_id})
        elif write and not _same_dir(Path(ident["path"]), run_dir):  # moved, not copied
            write_identity(run_dir, {**ident, "path": str(run_dir.resolve())})
        return ckpt_run_id
    if write:
        write_identity(run_dir, {"token": secrets.token_hex(16), "path": str(run_dir.resolve()),
                                 "source_run_id": ckpt_run_id, "source_path": source})
    return None


def source_tags(run_dir: Path) -> dict[str, str]:
    """Tags linking a resumed copy's new MLflow run to the run it was copied from."""
    ident = read_identity(run_dir) or {}
    if not ident.get("source_run_id") and not ident.get("source_path"):
        return {}
    return {"augforge.source_run_id": str(ident.get("source_run_id") or ""), "augforge.source_path": str(ident.get("source_path") or "")}


def check_config_json(run_dir: Path, saved: dict[str, Any], requested: dict[str, Any], mutable: tuple[str, ...]) -> None:
    """Refuse to resume when ``run_dir/config.json`` differs from the checkpoint's config.

    ``saved``/``requested``: flat configs of the checkpoint and of this resume. A key may
    differ only where it is resumable (``mutable`` prefixes) and equals what this resume asks for.
    """
    from augforge.config import RunConfig

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        on_disk = RunConfig.from_json_dict(json.loads(path.read_text())).flat()
    except (ValueError, TypeError, KeyError, AugforgeError) as exc:
        raise ConfigError(f"{path} is not a valid run config ({' '.join(str(exc).split())[:200]}); "
                          f"restore it from the checkpoint's config or start a new run") from None
    bad = sorted(k for k in set(on_disk) | set(saved)
                 if on_disk.get(k) != saved.get(k) and not (k.startswith(mutable) and on_disk.get(k) == requested.get(k)))
    if not bad:
        return
    detail = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, config.json {on_disk.get(k)!r}" for k in bad)
    movable = [k for k in bad if k.startswith(mutable)]
    how = (f"to change a resumable key pass it on resume, e.g. `augforge train --resume {run_dir} --set "
           f"{movable[0]}={on_disk.get(movable[0])}`" if movable else
           f"only {', '.join(mutable)} may change on resume (with --set); for other keys start a new run")
    raise ConfigError(f"{path} was edited after the checkpoint was written ({detail}); restore it, or {how}")


def run_checkpoint(run_id: str, *, tracking_uri: str | None = None, best: bool = False) -> Path:
    """Return a local path to the checkpoint of tracked run ``run_id`` (downloaded if needed).

    Looks for the run's ``checkpoints/last.pt`` (``best.pt`` with ``best=True``) artifact;
    falls back to the run folder recorded in the ``run_dir`` tag.
    """
    import mlflow

    from augforge.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise AugforgeError(f"no tracked run {run_id!r} in {uri} ({type(exc).__name__}); check the id and --tracking-uri") from None
    name = "best.pt" if best else "last.pt"
    art = run.info.artifact_uri.rstrip("/") + f"/checkpoints/{name}"
    if art.startswith("file://"):
        from urllib.parse import unquote, urlparse

        local = Path(unquote(urlparse(art).path))
        if local.is_file():
            return local
    elif not art.startswith(("/", ".")):
        try:
            dst = Path(os.environ.get("AUGFORGE_CACHE_DIR", ".cache/augforge")) / "checkpoints" / run_id
            dst.mkdir(parents=True, exist_ok=True)
            got = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"checkpoints/{name}", dst_path=str(dst), tracking_uri=uri
            )
            return Path(got)
        except Exception:
            pass
    elif Path(art).is_file():
        return Path(art)
    run_dir = run.data.tags.get("run_dir")
    if run_dir and (Path(run_dir) / "checkpoints" / name).is_file():
        return Path(run_dir) / "checkpoints" / name
    what = "best checkpoint (was train.eval_every > 0?)" if best else "checkpoint"
    raise AugforgeError(f"tracked run {run_id} has no {what}: neither artifact checkpoints/{name} nor {run_dir}/checkpoints/{name}")
