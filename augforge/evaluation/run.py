"""Whole evaluations: a checkpoint or an ONNX generator -> evaluators -> a report folder -> MLflow."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from augforge.evaluation.classify import predict_proba, resolve_device
from augforge.errors import EvaluationError
from augforge.evaluation.filtering import privacy_function
from augforge.interfaces import EvalResult
from augforge.evaluation.context import EvalContext, run_evaluators, select_evaluators
from augforge.evaluation.detector import DEFAULT_CLASSIFIER, get_detector, load_data, split_sets
from augforge.evaluation.sampling import sample_images, stored_side, load_inception


@dataclass
class Evaluation:
    metrics: dict[str, float]
    report: Path | None
    out_dir: Path | None
    run_id: str | None
    results: dict[str, EvalResult]


def _source_info(path, state) -> dict:
    return {"checkpoint": str(path), "run_id": state.get("run_id"), "step": state.get("step"), "epoch": state.get("epoch"),
            "generator": state.get("generator", {}).get("name")}


def evaluate_generator(
    generator,
    cfg,
    *,
    source: dict,
    metrics: list[str] | None = None,
    n_per_class: int = 100,
    out_dir=None,
    tracker=None,
    seed: int = 0,
    jpeg_quality: int | None = None,
    classifier: str = DEFAULT_CLASSIFIER,
    device=None,
    options: dict[str, dict] | None = None,
    inception_weights=None,
    echo: Callable[[str], None] | None = None,
    filters: tuple[str, ...] = (),
    keep: float = 1.0,
    discriminator=None,
    split: str = "test",
) -> Evaluation:
    """Evaluate a generator (anything with the ``Generator`` call signature) against the data
    and split of ``cfg``; write the report to ``out_dir`` (None: no files) and log to ``tracker``
    (None: no tracking). ``source`` describes what is evaluated (shown in the report).
    ``options``: constructor keywords per evaluator name; ``inception_weights``: a local
    TorchScript Inception file for the ``*_inception`` variants of FID/KID. ``filters`` / ``keep``:
    every draw oversamples by 1/keep and keeps the best-scored share per class
    (``filtering.filter_pool``: what ``augforge generate --filter`` would write); realism needs the
    ``discriminator`` (the checkpoint's, or the ONNX one exported beside the generator). ``split``: the real held-out lesions compared against —
    ``test`` (report), or ``val`` to choose among generators without touching the test split
    (metrics then tracked as ``eval/val/<name>``)."""
    say = echo or (lambda msg: None)
    if split not in ("test", "val"):
        raise EvaluationError(f"--split {split!r}: expected test (to report) or val (to choose among generators)")
    if split == "val" and "policy-study" in (metrics or []):
        raise EvaluationError("policy-study already chooses on val and reports test: run it with --split test")
    if filters and not 0.0 < keep <= 1.0:
        raise EvaluationError(f"--keep {keep}: the share of draws kept per class must be in (0, 1]")
    if "realism" in filters and discriminator is None:
        raise EvaluationError("--filter realism needs the discriminator: evaluate a training checkpoint (--checkpoint / --run) "
                              "or an ONNX file exported with --with-discriminator, or filter by label,novelty")
    device = resolve_device(device)
    evaluators = select_evaluators(metrics, options)  # fail on a typo before any work
    inception = load_inception(inception_weights, device) if inception_weights else None
    arrays, splits = load_data(cfg)
    sets = split_sets(arrays, splits)
    classes = list(arrays.class_names)
    say(f"data: {cfg.data.name} {cfg.data.image_size}px, split sizes " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    t0 = time.perf_counter()
    detector = get_detector(cfg, arrays, splits, classifier=classifier, device=device,
                            progress=lambda e, row: say(f"detector epoch {e}: {row}"))
    info = detector.detector_info
    say(f"detector {classifier}: test balanced accuracy {info['metrics']['balanced_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")
    label_fn = lambda im: predict_proba(detector, im, device).argmax(1)  # noqa: E731

    jpeg_side = stored_side(arrays) if jpeg_quality else None

    filter_notes = {"near_copies_dropped": 0, "shortfall": 0}

    def sampler(counts, draw_seed):
        counts = np.asarray(counts, int)
        draw = np.ceil(counts / keep).astype(int) if filters else counts
        pool = sample_images(generator, draw, classes, seed=draw_seed, device=device, jpeg_quality=jpeg_quality,
                             jpeg_side=jpeg_side, label_fn=label_fn)
        if not filters:
            return pool
        from augforge.evaluation.filtering import filter_pool

        kept, notes = filter_pool(pool, counts, filters, seed=draw_seed, device=device, detector=detector,
                                  discriminator=discriminator, train=sets["train"], baseline=sets["val"])
        for key, value in notes.items():
            filter_notes[key] += value
        return kept

    generator = generator.to(device) if hasattr(generator, "to") else generator
    generated = sampler(np.full(len(classes), n_per_class), seed)
    realism = None
    if discriminator is not None:
        from augforge.evaluation.filtering import realism as d_logits

        realism = lambda s: d_logits(discriminator, s.images, s.labels, device)  # noqa: E731
    ctx = EvalContext(detector, device, classes, seed=seed, classifier=classifier, image_size=int(cfg.data.image_size),
                      real_val=sets["val"], sampler=sampler, inception=inception, realism=realism)
    results = run_evaluators(evaluators, sets["train"], generated, sets[split], ctx,
                             progress=lambda n, r: say(f"{n}: " + ", ".join(f"{k}={v:.4g}" for k, v in list(r.metrics.items())[:6])))
    flat: dict[str, float] = {}
    eval_tags: dict[str, str] = {}
    for res in results.values():
        flat.update(res.metrics)
        eval_tags.update({f"augforge.eval.{k}": str(v)[:5000] for k, v in getattr(res, "tags", {}).items()})
    flat.update({f"detector_{k}": float(v) for k, v in info["metrics"].items()})
    if filters:
        flat.update({f"filter_{k}": float(v) for k, v in filter_notes.items()})
    summary = {
        **source, "dataset": cfg.data.name, "image_size": int(cfg.data.image_size), "classes": classes,
        "split_seed": cfg.data.split_seed, "split_sizes": {k: len(v) for k, v in sets.items()},
        "n_per_class": n_per_class, "seed": seed, "jpeg_quality": jpeg_quality, "jpeg_side": jpeg_side, "classifier": classifier,
        "detector_path": info["path"], "conditional": bool(getattr(generator, "conditional", True)),
        "evaluator_options": options or {}, "inception_weights": str(inception_weights) if inception_weights else None,
        "filters": list(filters), "keep": keep if filters else None, "split": split,
    }
    report = None
    if out_dir is not None:
        from augforge.evaluation.report import write_report

        report = write_report(Path(out_dir), summary=summary, metrics=flat, results=results, detector_info=info,
                              real=sets[split], generated=generated, detector_probs=ctx.probs(generated))
    run_id = None
    if tracker is not None:
        prefix = "eval/" if split == "test" else "eval/val/"
        tracker.log_metrics({f"{prefix}{k}": v for k, v in flat.items()}, step=source.get("step"))
        tracker.set_tags({"augforge.eval.metrics": ",".join(results), "augforge.eval.jpeg_quality": str(jpeg_quality or "none"),
                          "augforge.eval.filter": f"{','.join(filters)} keep {keep}" if filters else "none", **eval_tags})
        if out_dir is not None:
            tracker.log_artifact(out_dir, f"evaluation/{Path(out_dir).name}")
        run_id = tracker.run_id
    return Evaluation(flat, report, Path(out_dir) if out_dir is not None else None, run_id, results)


def _open_tracker(cfg, source_run_id: str | None, tracking_uri: str | None, source: dict):
    """Log into the training run itself when it has ended; into a linked evaluation run
    (tagged ``augforge.source_run_id``) when it is still running or unknown to the store.

    Returns ``(tracker, keep_status)``: the training run's own status (FINISHED, KILLED,
    FAILED) when it was reopened, which closing must put back whatever the evaluation does,
    since its status describes the training; None for a new evaluation run."""
    from augforge.tracking import make_tracker

    tracker = make_tracker(True, uri=tracking_uri or cfg.tracking.uri, experiment=cfg.tracking.experiment)
    if source_run_id:
        try:
            status = tracker.mlflow.MlflowClient(tracking_uri=tracker.uri).get_run(source_run_id).info.status
        except Exception:  # not in this store
            status = None
        if status in ("FINISHED", "KILLED", "FAILED"):
            return tracker.start(run_id=source_run_id), status
    tags = {"augforge.kind": "evaluation", "augforge.source_run_id": source_run_id or "", "augforge.checkpoint": str(source.get("checkpoint", ""))}
    return tracker.start(run_name=f"eval-{(source_run_id or 'checkpoint')[:8]}-step{source.get('step')}", tags=tags), None


def default_out_dir(path: Path) -> Path:
    return Path(path).parent / f"eval-{Path(path).stem}"


def evaluate_checkpoint(path, **kwargs) -> dict[str, float]:
    """Evaluate an ``augforge train`` checkpoint and return its metrics (un-prefixed keys).

    The data, classes, image size and lesion-grouped split come from the checkpoint's own
    config, so real test images were never seen in training. Keywords are those of
    ``evaluate_checkpoint_full`` and ``evaluate_generator`` (``metrics=None`` runs every
    cheap evaluator). The report goes to ``out_dir`` (default ``<checkpoint dir>/eval-<name>``).
    Tracking: a started ``tracker`` is used as is; otherwise (``track=True``) the metrics go
    to the checkpoint's MLflow run when it has ended, else to a linked evaluation run.
    """
    return evaluate_checkpoint_full(path, **kwargs).metrics


def evaluate_checkpoint_full(path, *, out_dir=None, tracker=None, track: bool = True, tracking_uri=None, **kwargs) -> Evaluation:
    """``evaluate_checkpoint`` returning the whole ``Evaluation`` (report path, run id, results)."""
    from augforge.checkpoint import load_checkpoint, load_discriminator, load_generator
    from augforge.config import RunConfig

    state = load_checkpoint(path)
    generator, _ = load_generator(state)
    cfg = RunConfig.from_json_dict(state["config"])
    if state.get("discriminator"):  # realism filtering, and the policy study's filtered policies
        kwargs["discriminator"] = load_discriminator(state)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(Path(path))
    return _evaluate_tracked(generator, cfg, _source_info(path, state), out_dir, tracker, track, tracking_uri, kwargs)


def _evaluate_tracked(generator, cfg, source, out_dir, tracker, track, tracking_uri, kwargs) -> Evaluation:
    """``evaluate_generator`` inside a tracker this call opens (and closes) unless one is given."""
    owned = tracker is None and track
    keep_status = None
    if owned:
        tracker, keep_status = _open_tracker(cfg, source.get("run_id"), tracking_uri, source)
    status = "FAILED"
    try:
        result = evaluate_generator(generator, cfg, source=source, out_dir=out_dir, tracker=tracker, **kwargs)
        status = "FINISHED"
        return result
    finally:
        if owned:  # a reopened training run gets its own status back (KILLED stays KILLED)
            tracker.end(keep_status or status)


# --------------------------------------------------------------------------------------------
# ONNX generators (``augforge export``)


class _OnnxGenerator:
    """An exported generator behind the ``Generator`` call signature (CPU, onnxruntime)."""

    training = False

    def __init__(self, path):
        from augforge.runtime import OnnxGenerator

        self.onnx = OnnxGenerator(path)
        self.latent_dim, self.image_size = self.onnx.latent_dim, self.onnx.image_size
        self.conditional, self.num_classes = self.onnx.conditional, self.onnx.num_classes if self.onnx.conditional else 0

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def __call__(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = labels.cpu().numpy() if labels is not None else np.zeros(len(z), np.int64)
        images = self.onnx.sample(labels, z.cpu().numpy())
        return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def onnx_config(path, metadata: dict[str, str]):
    """The run config behind an exported generator: the ``config`` metadata entry, else the
    config of the checkpoint it was exported from, else the defaults with the file's dataset,
    dataset options and image size (default split settings: say so in the report)."""
    from augforge.checkpoint import load_checkpoint
    from augforge.config import RunConfig

    if metadata.get("config"):
        return RunConfig.from_json_dict(json.loads(metadata["config"])), "onnx metadata"
    ckpt = metadata.get("checkpoint")
    if ckpt and Path(ckpt).is_file():
        return RunConfig.from_json_dict(load_checkpoint(ckpt)["config"]), f"checkpoint {ckpt}"
    if not metadata.get("dataset"):
        raise EvaluationError(f"{path}: the ONNX metadata names no dataset; re-export it with `augforge export` from a checkpoint")
    cfg = RunConfig()
    cfg.data.name, cfg.data.image_size = metadata["dataset"], int(metadata["image_size"])
    cfg.dataset = json.loads(metadata.get("dataset_config") or "{}")
    return cfg, "onnx metadata (dataset only; default split settings)"


def evaluate_onnx_full(path, *, out_dir=None, tracker=None, track: bool = True, tracking_uri=None, **kwargs) -> Evaluation:
    """As ``evaluate_checkpoint_full`` for an ONNX file written by ``augforge export``."""
    generator = _OnnxGenerator(path)
    meta = generator.onnx.metadata
    cfg, origin = onnx_config(path, meta)
    run_id = meta.get("training_run_id") or None
    source = {"onnx": str(path), "run_id": run_id, "step": int(meta.get("step") or 0) or None,
              "generator": f"{meta.get('generator', 'onnx')} (ONNX)", "config_from": origin}
    if "realism" in kwargs.get("filters", ()) or meta.get("discriminator_file"):
        from augforge.runtime import discriminator_for

        kwargs["discriminator"] = discriminator_for(generator.onnx)  # exported beside it (--with-discriminator)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(Path(path))
    return _evaluate_tracked(generator, cfg, source, out_dir, tracker, track, tracking_uri, {"device": "cpu", **kwargs})


def evaluate_onnx(path, **kwargs) -> dict[str, float]:
    """``evaluate_checkpoint`` for an exported ONNX generator; returns the metrics."""
    return evaluate_onnx_full(path, **kwargs).metrics


# --------------------------------------------------------------------------------------------
# For `augforge generate --drop-near-copies`


def near_copy_mask_for(cfg, images: np.ndarray, *, quantile: float = 0.01) -> np.ndarray:
    """True for each image (``uint8[N, H, W, 3]``, the config's image size) closer in pixel
    space to a training image of ``cfg``'s split than ``quantile`` of real held-out lesions are."""
    near_copy_mask = privacy_function("near_copy_mask")
    arrays, splits = load_data(cfg)
    sets = split_sets(arrays, splits, ("train", "test"))
    return near_copy_mask(images, sets["train"].images, baseline=sets["test"].images,
                          baseline_groups=sets["test"].groups, train_groups=sets["train"].groups, quantile=quantile)
