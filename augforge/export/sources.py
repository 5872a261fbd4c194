"""Where an export starts and what it is registered as: a checkpoint, a tracked run, an MLflow registered model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from augforge.errors import AugforgeError
from augforge.runtime import FORMAT  # the files' contract; the torch-free runtime checks it
from augforge.export.onnx import DEFAULT_ALIAS, MACHINE_LOCAL, export_onnx




def checkpoint_metadata(state: dict[str, Any], path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Metadata for ``export_onnx`` from an augforge checkpoint's state dict."""
    cfg = state.get("config") or {}
    # the run config lets evaluation and --drop-near-copies rebuild the training split; the
    # tracking section is left out (a tracking URI may carry credentials)
    public = {k: v for k, v in cfg.items() if k != "tracking"}
    for section, keys in MACHINE_LOCAL.items():
        if isinstance(public.get(section), dict):
            public[section] = {k: v for k, v in public[section].items() if k not in keys}
    return {
        "class_names": list(state.get("class_names") or []),
        "image_size": state.get("image_size"),
        "training_run_id": state.get("run_id") or "",
        "dataset": (cfg.get("data") or {}).get("name", ""),
        "dataset_config": cfg.get("dataset") or {},
        "generator": (state.get("generator") or {}).get("name", ""),
        "step": int(state.get("step") or 0),
        "ema": state.get("g_ema") is not None,
        # the file's content digest identifies the weights; its path would name the exporting machine's folders
        "checkpoint_sha256": _sha256(path) if path else "",
        "config": public,
    }


def _sha256(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike, uint8: bool = False, ema: bool = True,
                      extra: dict[str, Any] | None = None, with_discriminator: bool = False) -> Path:
    """Rebuild the generator from an augforge checkpoint (EMA weights when present) and export it.

    ``with_discriminator``: also write the checkpoint's discriminator beside it
    (``augforge.export.discriminator``) and name it in the generator's metadata.
    """
    from augforge.checkpoint import load_discriminator, load_generator

    gen, state = load_generator(checkpoint, ema=ema)
    meta = checkpoint_metadata(state, checkpoint)
    meta["ema"] = bool(ema and state.get("g_ema") is not None)
    meta = {**meta, **(extra or {})}
    if not with_discriminator:
        return export_onnx(gen, out, meta, uint8=uint8)
    from augforge.export.discriminator import export_discriminator

    if not meta.get("image_size"):
        meta["image_size"] = int(getattr(gen, "image_size", 0))
    d_path = export_discriminator(load_discriminator(state), out, meta)
    try:
        return export_onnx(gen, out, {**meta, "discriminator_file": d_path.name, "discriminator_sha256": _sha256(d_path)}, uint8=uint8)
    except BaseException:
        d_path.unlink(missing_ok=True)  # no discriminator without the generator that names it
        raise


def checkpoint_for_run(run_id: str, tracking_uri: str | None = None, best: bool = True) -> Path:
    """The run's best checkpoint (by the in-training evaluator) when it has one, else its last."""
    from augforge.runs import run_checkpoint

    if best:
        try:
            return run_checkpoint(run_id, tracking_uri=tracking_uri, best=True)
        except AugforgeError:
            pass
    return run_checkpoint(run_id, tracking_uri=tracking_uri, best=False)


def _client(tracking_uri: str | None = None):
    import mlflow

    from augforge.tracking import default_tracking_uri

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    return mlflow.MlflowClient()


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (name, alias, version)."""
    from augforge_runtime import registry

    try:
        return registry.parse_model_uri(uri)
    except ValueError as exc:
        raise AugforgeError(str(exc)) from None


def model_version(uri: str, tracking_uri: str | None = None):
    """The ``ModelVersion`` behind ``models:/NAME@ALIAS`` (or ``/VERSION``); read-only (a missing
    store is an error, not a new one) and every error names the tracking URI it looked in."""
    from augforge_runtime import registry

    try:
        return registry.model_version(uri, tracking_uri)
    except ValueError as exc:
        raise AugforgeError(str(exc)) from None


def resolve_model(source: str, tracking_uri: str | None = None):
    """``models:/...`` -> ``augforge_runtime.registry.ResolvedModel`` (local ONNX file, version, store)."""
    from augforge_runtime import registry

    try:
        return registry.resolve_model(source, tracking_uri)
    except ValueError as exc:
        raise AugforgeError(str(exc)) from None


def resolve_onnx(source: str | os.PathLike, tracking_uri: str | None = None) -> Path:
    """A local ONNX file for ``source``: a path, or ``models:/NAME@ALIAS`` (downloaded once, cached)."""
    source = str(source)
    if not source.startswith("models:/"):
        path = Path(source)
        if not path.is_file():
            raise AugforgeError(f"ONNX file {path} does not exist; write one with `augforge export --out {path}`")
        return path
    return resolve_model(source, tracking_uri).path


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def recommendations(client, run_id: str | None) -> dict[str, str]:
    """The training run's ``augforge.eval.recommended_*`` tags (e.g. the policy study's chosen
    augmentation policy), renamed ``augforge.recommended_*`` for its model version.

    An evaluation that started while the training run was open (still training, or reopened
    by another evaluation) tags a linked run (``augforge.source_run_id``) instead; the run that
    ended last among the training run and its linked evaluations wins, so a newer study is
    never shadowed by an older one."""
    if not run_id:
        return {}
    try:
        run = client.get_run(run_id)
    except Exception:  # a file exported elsewhere: its training run is not in this store
        return {}
    # evaluations only: a resumed copy of the training run carries the same source tag (augforge.runs.source_tags)
    # but is another generator, whose recommendations are not this one's
    linked = client.search_runs([run.info.experiment_id],
                                f"tags.`augforge.source_run_id` = '{run_id}' and tags.`augforge.kind` = 'evaluation'")
    prefix = "augforge.eval.recommended_"
    found = []
    for r in [run, *linked]:
        tags = {"augforge.recommended_" + k[len(prefix):]: v for k, v in r.data.tags.items() if k.startswith(prefix)}
        if tags:
            found.append((r.info.end_time or r.info.start_time or 0, tags))
    return max(found, key=lambda item: item[0])[1] if found else {}


def _set_alias(client, name: str, alias: str, version: str, attempts: int = 5) -> None:
    """Point ``alias`` at ``version``. Two sweep workers finishing together both register their champion;
    on PostgreSQL the server's insert-or-update of the alias can then hit its unique key: retry, and the
    later registration holds the alias (measured: tests/test_team_mode.py failed without this)."""
    for attempt in range(attempts):
        try:
            client.set_registered_model_alias(name, alias, version)
            return
        except Exception as exc:
            if attempt == attempts - 1 or "alias" not in str(exc).lower():
                raise
            time.sleep(0.5 * (attempt + 1))


def register_onnx(onnx_path: str | os.PathLike, name: str, *, alias: str = DEFAULT_ALIAS, run_id: str | None = None,
                  tracking_uri: str | None = None, tags: dict[str, str] | None = None):
    """Log ``onnx_path`` as an MLflow ONNX model, register it as ``name`` and point ``alias`` at it.

    Logged into ``run_id`` (or the active run). The version carries the file's metadata as tags
    (``augforge.training_run_id`` ...) and the training run's recommendations
    (``augforge.recommended_policy``: what ``augforge evaluate --metrics policy-study`` chose);
    returns the ``ModelVersion``. ``models:/NAME@ALIAS``
    then resolves to this file (``resolve_onnx``).
    """
    import mlflow
    import mlflow.onnx
    import onnx
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    client = _client(tracking_uri)
    model = onnx.load(str(onnx_path))
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("format") != FORMAT:
        raise AugforgeError(f"{onnx_path} was not written by augforge export (metadata format {meta.get('format')!r})")
    latent = int(meta["latent_dim"])
    size = int(meta["image_size"])
    inputs = [TensorSpec(np.dtype(np.float32), (-1, latent), "z")]
    if json.loads(meta["conditional"]):
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "label"))
    uint8 = meta["output_layout"].startswith("NHWC")
    out_shape = (-1, size, size, 3) if uint8 else (-1, 3, size, size)
    signature = ModelSignature(Schema(inputs), Schema([TensorSpec(np.dtype(np.uint8 if uint8 else np.float32), out_shape, "image")]))
    # the realism scorer travels in the same model version (downloads land in extra_files/)
    extra = [str(Path(onnx_path).parent / meta["discriminator_file"])] if meta.get("discriminator_file") else None
    if extra and not Path(extra[0]).is_file():
        raise AugforgeError(f"{onnx_path} names discriminator {meta['discriminator_file']}, which is not beside it; "
                            "re-export with `augforge export --with-discriminator`")
    active = mlflow.active_run()
    log = lambda: mlflow.onnx.log_model(  # noqa: E731
        model, name="generator", registered_model_name=name, signature=signature,
        save_as_external_data=False, metadata=meta, onnx_execution_providers=["CPUExecutionProvider"], extra_files=extra,
    )
    if active is not None and run_id in (None, active.info.run_id):
        info = log()
    elif run_id:  # log into that (usually finished) run, then give it back its status
        status = client.get_run(run_id).info.status
        with mlflow.start_run(run_id=run_id, nested=active is not None):
            info = log()
        client.set_terminated(run_id, status)
    else:
        from augforge.tracking import MlflowTracker

        tracker = MlflowTracker(tracking_uri or "", "augforge").start(run_name=f"register-{name}", nested=active is not None)
        try:
            info = log()
        finally:
            tracker.end()
    version = str(info.registered_model_version)
    # the full run config stays in the file (and the run); a tag of it only crowds the UI
    version_tags = {f"augforge.{k}": v[:5000] for k, v in meta.items() if k != "config"}
    version_tags |= recommendations(client, meta.get("training_run_id") or run_id) | (tags or {})
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    from augforge.tracking import describe_model_version

    describe_model_version(client, name, version, meta, run_id=meta.get("training_run_id") or run_id)
    if alias:
        _set_alias(client, name, alias, version)
    return client.get_model_version(name, version)
