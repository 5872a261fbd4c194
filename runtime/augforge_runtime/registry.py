"""``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` -> a local ONNX file, when mlflow is installed.

Read-only: resolving never creates a tracking store (a missing sqlite file or ``mlruns/``
folder is an error naming the URI, not a new empty store), and every error names the
tracking URI it looked in. Downloads are cached under ``AUGFORGE_CACHE_DIR`` (default
``.cache/augforge``), keyed by name, version and what the version points at.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from augforge_runtime.errors import RuntimeModelError

DEFAULT_ALIAS = "champion"
#: the store augforge writes by default, relative to the working folder
DEFAULT_STORE = Path("mlruns") / "mlflow.db"


@dataclass
class ResolvedModel:
    """What a ``models:/`` URI resolved to."""

    uri: str  # as given
    name: str
    version: str
    alias: str | None
    path: Path  # the local ONNX file
    tracking_uri: str  # credentials redacted
    run_id: str | None

    def as_dict(self) -> dict[str, str | None]:
        return {"uri": self.uri, "name": self.name, "version": self.version, "alias": self.alias,
                "resolved": f"models:/{self.name}/{self.version}", "tracking_uri": self.tracking_uri, "run_id": self.run_id}


def redact(uri: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host`` (URIs go into errors and files)."""
    return re.sub(r"(//[^/:@]+):[^/@]*@", r"\1:***@", uri)


def tracking_uri(explicit: str | None = None) -> str:
    """``explicit``, else ``MLFLOW_TRACKING_URI``, else the default store ``./mlruns/mlflow.db``."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{DEFAULT_STORE.resolve()}"


def _local_store(uri: str) -> Path | None:
    """The file or folder a local store lives in (None for servers and databases)."""
    if uri.startswith("sqlite:///"):
        return Path(unquote(uri[len("sqlite:///") :]))
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if uri == "databricks" or uri.startswith("databricks://"):
        return None
    if not parsed.scheme or re.fullmatch(r"[a-zA-Z]", parsed.scheme):  # a plain path (or a Windows drive)
        return Path(uri)
    return None


def require_store(uri: str) -> None:
    """Refuse a local store that does not exist, instead of letting mlflow create an empty one."""
    store = _local_store(uri)
    if store is not None and not store.exists():
        default = os.environ.get("MLFLOW_TRACKING_URI") is None
        raise RuntimeModelError(
            f"no MLflow tracking store at {redact(uri)}"
            + (" (the default ./mlruns/mlflow.db of the current folder)" if default else "")
            + "; run from the folder that holds mlruns/, or pass --tracking-uri / set MLFLOW_TRACKING_URI"
        )


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (``models:/NAME``: @champion) -> (name, alias, version)."""
    if not uri.startswith("models:/"):
        raise RuntimeModelError(f"{uri!r} is not a registered-model URI; use models:/NAME@{DEFAULT_ALIAS} or models:/NAME/VERSION")
    rest = uri[len("models:/"):].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, alias, None
    name, _, version = rest.partition("/")
    if not version:
        return name, DEFAULT_ALIAS, None
    return name, None, version


def client(uri: str):
    """An ``MlflowClient`` on an existing store (tracking and registry both at ``uri``)."""
    try:
        import mlflow
    except ImportError:
        raise RuntimeModelError(
            "models:/ URIs need mlflow (pip install mlflow, or augforge-runtime[mlflow]); or pass an ONNX file"
        ) from None
    require_store(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_version(uri: str, tracking: str | None = None):
    """The registry's ``ModelVersion`` behind ``uri``; errors name the tracking URI used."""
    store = tracking_uri(tracking)
    c = client(store)
    name, alias, version = parse_model_uri(uri)
    try:
        return c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except Exception as exc:
        try:
            known = sorted(m.name for m in c.search_registered_models())
        except Exception:
            known = []
        raise RuntimeModelError(
            f"cannot resolve {uri} in tracking store {redact(store)}: {str(exc).splitlines()[0][:200]}; "
            f"registered models there: {', '.join(known) or '(none)'}"
        ) from None


def cache_root() -> Path:
    return Path(os.environ.get("AUGFORGE_CACHE_DIR") or ".cache/augforge")


def _generator_files(folder: Path) -> list[Path]:
    """The generator ONNX files of a downloaded model version (a discriminator beside it is not one)."""
    return sorted(p for p in folder.rglob("*.onnx") if not p.name.endswith(".discriminator.onnx"))


def resolve_model(uri: str, tracking: str | None = None) -> ResolvedModel:
    """Resolve ``uri`` and download its ONNX file once (later calls reuse the cached copy)."""
    store = tracking_uri(tracking)
    mv = model_version(uri, store)
    _, alias, _ = parse_model_uri(uri)
    # keyed by what the version points at too: a registry rebuilt from scratch reuses version numbers
    tag = hashlib.sha256(f"{mv.source}|{mv.creation_timestamp}".encode()).hexdigest()[:10]
    dest = cache_root() / "models" / f"{mv.name}-v{mv.version}-{tag}"
    found = _generator_files(dest) if dest.is_dir() else []
    if not found:
        import mlflow

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".dl-"))
        try:
            where = client(store).get_model_version_download_uri(mv.name, mv.version)
            mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=str(tmp), tracking_uri=store)
            shutil.rmtree(dest, ignore_errors=True)
            os.replace(tmp, dest)
        except Exception as exc:
            raise RuntimeModelError(
                f"cannot download {uri} (version {mv.version}) from tracking store {redact(store)}: {str(exc).splitlines()[0][:200]}"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        found = _generator_files(dest)
    if not found:
        raise RuntimeModelError(f"{uri} (version {mv.version} in {redact(store)}) holds no .onnx file; register one with `augforge export --register`")
    return ResolvedModel(uri=uri, name=mv.name, version=str(mv.version), alias=alias, path=found[0],
                         tracking_uri=redact(store), run_id=mv.run_id or None)
