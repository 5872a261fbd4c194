"""Evaluation core: the cached detector, running evaluator plugins, the report, tracking.

The flow of ``evaluate_checkpoint``::

    checkpoint -> generator + its RunConfig -> the same data and lesion-grouped split as training
      -> detector (trained once per dataset + split + classifier config, cached on disk)
      -> N generated images per class (optionally JPEG round-tripped like the real data)
      -> each evaluator plugin (pure computation) -> metrics, tables, figures
      -> report folder (Markdown + PNG + CSV) -> MLflow (the source run or a linked one)

Evaluator plugins see only ``ImageSet``s and an ``EvalContext``; they never write or log.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from augforge import registry
from augforge.checkpoint import save_checkpoint
from augforge.evaluation.classify import classification_metrics, extract_features, fit_classifier, predict_proba, resolve_device
from augforge.data import cache_root, load_splits
from augforge.errors import AugforgeError, ConfigError
from augforge.interfaces import Classifier, EvalResult, ImageSet

#: bump when the detector's training changes, so cached detectors are retrained
DETECTOR_VERSION = 1
DEFAULT_CLASSIFIER = "paper-b-cnn"
DETECTOR_SEED = 0  # one detector per data+split, whatever seed the GAN used


class EvaluationError(AugforgeError):
    """An evaluation cannot run as asked (missing data, unknown metric, unusable generator)."""


# --------------------------------------------------------------------------------------------
# Data


def load_data(cfg):
    """The arrays and lesion-grouped split training used for ``cfg``."""
    return load_splits(cfg, progress=False)


def split_sets(arrays, splits, names=("train", "val", "test")) -> dict[str, ImageSet]:
    """``{"train": ImageSet, "val": ..., "test": ...}`` with lesion ids as groups (loaded into
    memory; ``names`` picks which, so callers needing one split do not load the others)."""
    return {name: arrays.subset(np.asarray(splits[name])).image_set() for name in names}


def data_fingerprint(arrays, splits) -> str:
    """A hash of the pixels, labels, class names and split indices: the detector cache key."""
    h = hashlib.sha256()
    h.update(json.dumps(list(arrays.class_names)).encode())
    h.update(np.ascontiguousarray(arrays.labels, dtype=np.int64).tobytes())
    images = arrays.images
    for i in range(0, len(images), 1024):
        h.update(np.ascontiguousarray(images[i : i + 1024]).tobytes())
    for name in ("train", "val", "test"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# The detector


def detector_key(cfg, arrays, splits, classifier: str, options: dict) -> str:
    model_cfg = registry.bind("classifier", classifier, image_size=int(cfg.data.image_size), num_classes=len(arrays.class_names), **options)
    recipe = dict(getattr(registry.get("classifier", classifier), "recipe", {}))
    blob = json.dumps(
        {"data": data_fingerprint(arrays, splits), "classifier": classifier, "config": model_cfg,
         "recipe": recipe, "seed": DETECTOR_SEED, "version": DETECTOR_VERSION},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_detector(cfg, arrays, splits, *, classifier: str = DEFAULT_CLASSIFIER, device=None, progress=None, **options) -> Classifier:
    """The detector for this data + split + classifier config, trained once and cached.

    Trained on the real train split with the classifier's ``recipe`` (class oversampling,
    flips/rotations), best epoch chosen on the lesion-grouped val split, scored on the test
    split. The file lives in ``<cache>/detectors/`` (``AUGFORGE_CACHE_DIR`` overrides
    ``cfg.data.cache_dir``). The returned model is in eval mode and carries
    ``detector_info`` (test metrics, confusion matrix, training history).
    """
    device = resolve_device(device)
    key = detector_key(cfg, arrays, splits, classifier, options)
    path = cache_root(cfg) / "detectors" / f"{classifier}-{cfg.data.image_size}px-{key}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = registry.build("classifier", classifier, **state["config"])
        model.load_state_dict(state["state"])
    else:
        sets = split_sets(arrays, splits)
        model = registry.build(
            "classifier", classifier, image_size=int(cfg.data.image_size), num_classes=len(arrays.class_names), **options
        )
        fit = fit_classifier(model, sets["train"], sets["val"], seed=DETECTOR_SEED, device=device, progress=progress)
        probs = predict_proba(fit.model, sets["test"].images, device)
        metrics, confusion = classification_metrics(probs, sets["test"].labels, list(arrays.class_names))
        state = {
            "kind": "detector", "classifier": classifier, "config": dict(model.config),
            "state": {k: v.detach().cpu() for k, v in fit.model.state_dict().items()},
            "class_names": list(arrays.class_names), "metrics": metrics, "confusion": confusion.tolist(),
            "history": fit.history, "best_epoch": fit.best_epoch, "best_val_balanced_accuracy": fit.best_score,
            "recipe": fit.recipe, "split_sizes": {k: int(len(v)) for k, v in splits.items()}, "key": key,
        }
        save_checkpoint(path, state)  # atomic: a crash never leaves half a detector behind
        model = fit.model
    model = model.to(device).eval()
    model.detector_info = {k: v for k, v in state.items() if k != "state"} | {"path": str(path)}
    return model


# --------------------------------------------------------------------------------------------
# Generating images


def jpeg_roundtrip(images: np.ndarray, quality: int, side: int | None = None) -> np.ndarray:
    """Pass ``uint8[N, H, W, 3]`` through JPEG at ``quality`` (1-100) the way the real images went:
    compressed at their stored resolution ``side`` (upscaled to it first), then resized back
    with the data pipeline's Lanczos filter. ``side`` None: compress at the images' own size."""
    from PIL import Image

    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"--jpeg-quality {quality}: expected 1-100 (the shared HAM10000 copy is about 75)")
    size = images.shape[1]
    out = np.empty_like(images)
    for i, img in enumerate(images):
        im = Image.fromarray(img)
        if side and side != size:
            im = im.resize((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(im)
    return out


def stored_side(arrays, n: int = 25) -> int | None:
    """Median shorter side of the real source files (their stored resolution, read from the
    headers of a few), the scale at which their JPEG artefacts were made; None without files."""
    from PIL import Image

    if "source" not in arrays.meta:
        return None
    sides = []
    for src in arrays.meta["source"].head(n):
        try:
            with Image.open(src) as im:
                sides.append(min(im.size))
        except (OSError, ValueError):
            continue
    return int(np.median(sides)) if sides else None


@torch.no_grad()
def sample_images(
    generator,
    counts,
    class_names: list[str],
    *,
    seed: int = 0,
    device=None,
    batch_size: int = 256,
    jpeg_quality: int | None = None,
    jpeg_side: int | None = None,
    label_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ImageSet:
    """``counts[c]`` images of class ``c`` from ``generator`` as an ``ImageSet`` (uint8).

    The noise comes from a CPU generator seeded with ``seed``, so the same call gives the
    same images on any device. An unconditional generator makes ``sum(counts)`` images;
    with one class they all get label 0, otherwise ``label_fn(images)`` (the detector's
    prediction) labels them.
    """
    from augforge.grid import to_uint8

    device = resolve_device(device) if device is not None else next(generator.parameters()).device
    counts = np.asarray(counts, int)
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    rng = torch.Generator().manual_seed(int(seed))
    was_training = generator.training
    generator.eval()
    chunks = []
    try:
        for i in range(0, n, batch_size):
            y = torch.from_numpy(labels[i : i + batch_size])
            z = torch.randn(len(y), generator.latent_dim, generator=rng)
            x = generator(z.to(device), y.to(device) if generator.conditional else None)
            chunks.append(to_uint8(x))
    finally:
        generator.train(was_training)
    size = getattr(generator, "image_size", None) or 0
    images = np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)
    if jpeg_quality:
        images = jpeg_roundtrip(images, jpeg_quality, jpeg_side)
    if not generator.conditional and len(class_names) > 1:
        if label_fn is None:
            raise EvaluationError("an unconditional generator over several classes needs label_fn (the detector) to label its images")
        labels = np.asarray(label_fn(images), np.int64) if n else labels
    return ImageSet(images, labels.astype(np.int64), list(class_names))


def load_inception(path, device=None, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """Feature function of a local TorchScript Inception-v3: ``uint8[N, H, W, 3] -> float64[N, F]``.

    The file format is NVIDIA's ``inception-2015-12-05.pt`` (the network behind the FID
    numbers of StyleGAN2-ADA/3 and clean-fid): ``net(x, return_features=True)`` with ``x``
    uint8 ``[N, 3, H, W]`` in 0..255, resized to 299 px inside the network, returning the
    2,048-d pool features. Only a file the user points to is read; nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"--inception-weights {path}: no such file. Point it to a local TorchScript Inception-v3 "
                              f"(e.g. NVIDIA's inception-2015-12-05.pt); augforge never downloads weights")
    device = resolve_device(device)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.13, but it is the format the file comes in
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # any unreadable file: say what was expected
        raise EvaluationError(f"{path}: not a TorchScript file ({type(exc).__name__}: {exc}); expected a module saved with "
                              f"torch.jit.save whose forward(x_uint8_nchw, return_features=True) returns features") from None

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).to(device)
                try:
                    f = net(x, return_features=True)
                except Exception as exc:
                    raise EvaluationError(f"{path}: calling it as net(uint8 [N,3,H,W], return_features=True) failed: "
                                          f"{type(exc).__name__}: {exc}") from None
                out.append(f.reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    return features


# --------------------------------------------------------------------------------------------
# Context handed to evaluators


@dataclass
class EvalContext:
    """What evaluators may use besides the image sets.

    ``features(s)`` / ``probs(s)``: the detector's embedding / class probabilities for an
    ``ImageSet`` (memoised per set object). ``sample(counts)``: more generated images (fresh
    noise each call; None when no generator is at hand). ``new_classifier()``: an untrained
    detector of the same kind, for evaluators that train their own (augmentation-gain).
    ``real_val``: the lesion-grouped validation split (early stopping). ``baselines``: False
    during training, where evaluators skip their real-vs-real reference numbers.
    ``inception``: ``uint8[N, H, W, 3] -> float64[N, F]`` from a local Inception file
    (``--inception-weights``), or None; evaluators that support it add ``*_inception`` keys
    computed through ``inception_features(s)``.
    """

    detector: Classifier
    device: torch.device
    class_names: list[str]
    seed: int = 0
    classifier: str = DEFAULT_CLASSIFIER
    image_size: int = 64
    real_val: ImageSet | None = None
    sampler: Callable[[np.ndarray, int], ImageSet] | None = None
    baselines: bool = True
    inception: Callable[[np.ndarray], np.ndarray] | None = None
    _memo: dict = field(default_factory=dict, repr=False)
    _draws: int = 0

    def _cached(self, kind: str, images: ImageSet, fn):
        key = (kind, id(images))
        if key not in self._memo:
            self._memo[key] = (images, fn(images.images))  # hold the set: ids stay unique
        return self._memo[key][1]

    def features(self, images: ImageSet) -> np.ndarray:
        return self._cached("features", images, lambda x: extract_features(self.detector, x, self.device))

    def probs(self, images: ImageSet) -> np.ndarray:
        return self._cached("probs", images, lambda x: predict_proba(self.detector, x, self.device))

    def inception_features(self, images: ImageSet) -> np.ndarray:
        if self.inception is None:
            raise EvaluationError("no Inception network loaded: pass --inception-weights FILE (a local TorchScript "
                                  "Inception-v3 such as NVIDIA's inception-2015-12-05.pt; nothing is downloaded)")
        return self._cached("inception", images, self.inception)

    def forget(self, images: ImageSet) -> None:
        for kind in ("features", "probs", "inception"):
            self._memo.pop((kind, id(images)), None)

    def sample(self, counts) -> ImageSet:
        if self.sampler is None:
            raise EvaluationError("this evaluation has no generator to sample more images from")
        self._draws += 1
        return self.sampler(np.asarray(counts, int), self.seed + 1000 * self._draws)

    def new_classifier(self, num_classes: int | None = None, *, seed: int | None = None, classifier: str | None = None,
                       image_size: int | None = None, **options) -> Classifier:
        """An untrained classifier (default: the detector's kind). With ``seed`` its initial
        weights come from that seed alone, not from whatever ran before, so two evaluations
        (e.g. of two generators) start their real-only detectors from the same weights."""
        def build():
            return registry.build("classifier", classifier or self.classifier, image_size=image_size or self.image_size,
                                  num_classes=num_classes or len(self.class_names), **options)

        if seed is None:
            return build()
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream where it was
            torch.manual_seed(seed)
            return build()


def select_evaluators(metrics: list[str] | None, options: dict[str, dict] | None = None) -> list:
    """Build the named evaluators (all cheap ones when ``metrics`` is None).

    ``options`` maps an evaluator name to constructor keywords (``--set NAME.KEY=VALUE`` on the
    command line); options for an evaluator that is not selected are an error, not ignored.
    """
    available = registry.tables()["evaluator"]
    options = options or {}
    if not metrics:
        names = [n for n in available if getattr(available[n].cls, "cheap", True)]  # registration order
    else:
        names = list(dict.fromkeys(metrics))
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; available: {', '.join(sorted(available))}")
    stray = [n for n in options if n not in names]
    if stray:
        raise ConfigError(f"options given for evaluator(s) not selected: {', '.join(stray)}; selected: {', '.join(names)} "
                          f"(add them with --metrics)")
    return [registry.build("evaluator", n, **options.get(n, {})) for n in names]


def parse_evaluator_options(items) -> dict[str, dict]:
    """``["augmentation-gain.epochs=4", ...]`` -> ``{"augmentation-gain": {"epochs": 4}}``.

    Values are JSON when they parse as JSON (numbers, booleans, lists), else strings.
    """
    out: dict[str, dict] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, arg = key.strip().rpartition(".")
        if not sep or not dot or not name or not arg:
            raise ConfigError(f"--set {item!r}: expected EVALUATOR.KEY=VALUE, e.g. augmentation-gain.epochs=4")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[arg] = value
    return out


def run_evaluators(evaluators, real_train, generated, real_test, context, progress=None) -> dict[str, EvalResult]:
    """Run each evaluator; a metric key produced twice is an error (plugins must not clash)."""
    results, seen = {}, {}
    for ev in evaluators:
        t0 = time.perf_counter()
        res = ev.evaluate(real_train, generated, real_test, context)
        if not isinstance(res, EvalResult):
            raise EvaluationError(f"evaluator {ev.name!r} returned {type(res).__name__}, not an EvalResult")
        for k in res.metrics:
            if k in seen:
                raise EvaluationError(f"metric {k!r} is produced by both {seen[k]!r} and {ev.name!r}")
            seen[k] = ev.name
        res.metrics = {k: float(v) for k, v in res.metrics.items()}
        res.metrics[f"seconds_{ev.name.replace('-', '_')}"] = time.perf_counter() - t0
        results[ev.name] = res
        if progress:
            progress(ev.name, res)
    return results


# --------------------------------------------------------------------------------------------
# During training


def _stratified(labels: np.ndarray, per_class: int, rng) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(labels == c), min(per_class, int(np.sum(labels == c))), replace=False)
           for c in np.unique(labels)]
    return np.sort(np.concatenate(idx))


def make_training_evaluator(cfg, real: ImageSet, device, *, n_per_class: int | None = None, real_per_class: int = 250):
    """A cheap evaluator for the training loop: ``fn(generator) -> {metric: value}``.

    Uses the evaluator named ``cfg.train.eval_metric`` (default ``kid``; a metric key such as
    ``fid`` or ``detection_rate`` also works) in the cached detector's feature space, on a
    fixed class-stratified subset of ``real`` (at most ``real_per_class`` images per class)
    and a fixed noise set of ``n_per_class`` generated images per class (default: about 500
    in all), so successive calls differ only by the generator. The detector is trained (or
    loaded) once, here. The returned function has ``.metric`` (the key to compare) and
    ``.direction`` ("minimize"/"maximize") for keeping the best checkpoint; the dict it
    returns always holds ``cfg.train.eval_metric``.
    """
    name = cfg.train.eval_metric
    table = registry.tables()["evaluator"]
    by_objective = {e.cls.objective: n for n, e in table.items()}
    ev_name = name if name in table else by_objective.get(name)
    if ev_name is None:
        raise ConfigError(f"train.eval_metric {name!r} is neither an evaluator nor a metric; evaluators: {', '.join(sorted(table))}")
    evaluator = registry.build("evaluator", ev_name)
    if not getattr(evaluator, "cheap", True):
        raise ConfigError(f"train.eval_metric {name!r} is expensive ({ev_name} is not cheap); pick kid, fid, precision-recall, ...")
    extras = []
    for extra in (e.strip() for e in cfg.train.eval_extra.split(",") if e.strip()):
        if extra not in table:
            raise ConfigError(f"train.eval_extra: unknown evaluator {extra!r}; evaluators: {', '.join(sorted(table))}")
        if not getattr(table[extra].cls, "cheap", True):
            raise ConfigError(f"train.eval_extra: {extra} is expensive (not cheap); it belongs in `augforge evaluate`")
        if extra != ev_name:
            extras.append(registry.build("evaluator", extra))
    device = resolve_device(device)
    arrays, splits = load_data(cfg)
    detector = get_detector(cfg, arrays, splits, device=device)
    rng = np.random.default_rng(0)
    real_sub = real.subset(_stratified(np.asarray(real.labels), real_per_class, rng))
    test = split_sets(arrays, splits, ("test",))["test"]
    classes = list(real.class_names)
    per = n_per_class or max(8, 512 // max(1, len(classes)))
    ctx = EvalContext(detector, device, classes, seed=0, image_size=int(cfg.data.image_size), baselines=False)
    ctx.features(real_sub)  # once: the real side never changes

    def evaluate(generator) -> dict[str, float]:
        gen = sample_images(generator, np.full(len(classes), per), classes, seed=12345, device=device,
                            label_fn=lambda im: predict_proba(detector, im, device).argmax(1))
        try:
            metrics = dict(evaluator.evaluate(real_sub, gen, test, ctx).metrics)
            for ev in extras:
                metrics.update(ev.evaluate(real_sub, gen, test, ctx).metrics)
        finally:
            ctx.forget(gen)
        metrics.setdefault(name, metrics[evaluator.objective])
        return {k: float(v) for k, v in metrics.items()}

    evaluate.metric, evaluate.direction, evaluate.evaluator = name, evaluator.direction, ev_name
    return evaluate


# --------------------------------------------------------------------------------------------
# Whole evaluations


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
) -> Evaluation:
    """Evaluate a generator (anything with the ``Generator`` call signature) against the data
    and split of ``cfg``; write the report to ``out_dir`` (None: no files) and log to ``tracker``
    (None: no tracking). ``source`` describes what is evaluated (shown in the report).
    ``options``: constructor keywords per evaluator name; ``inception_weights``: a local
    TorchScript Inception file for the ``*_inception`` variants of FID/KID."""
    say = echo or (lambda msg: None)
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

    def sampler(counts, draw_seed):
        return sample_images(generator, counts, classes, seed=draw_seed, device=device, jpeg_quality=jpeg_quality,
                             jpeg_side=jpeg_side, label_fn=label_fn)

    generator = generator.to(device) if hasattr(generator, "to") else generator
    generated = sampler(np.full(len(classes), n_per_class), seed)
    ctx = EvalContext(detector, device, classes, seed=seed, classifier=classifier, image_size=int(cfg.data.image_size),
                      real_val=sets["val"], sampler=sampler, inception=inception)
    results = run_evaluators(evaluators, sets["train"], generated, sets["test"], ctx,
                             progress=lambda n, r: say(f"{n}: " + ", ".join(f"{k}={v:.4g}" for k, v in list(r.metrics.items())[:6])))
    flat: dict[str, float] = {}
    for res in results.values():
        flat.update(res.metrics)
    flat.update({f"detector_{k}": float(v) for k, v in info["metrics"].items()})
    summary = {
        **source, "dataset": cfg.data.name, "image_size": int(cfg.data.image_size), "classes": classes,
        "split_seed": cfg.data.split_seed, "split_sizes": {k: len(v) for k, v in sets.items()},
        "n_per_class": n_per_class, "seed": seed, "jpeg_quality": jpeg_quality, "jpeg_side": jpeg_side, "classifier": classifier,
        "detector_path": info["path"], "conditional": bool(getattr(generator, "conditional", True)),
        "evaluator_options": options or {}, "inception_weights": str(inception_weights) if inception_weights else None,
    }
    report = None
    if out_dir is not None:
        from augforge.evaluation.report import write_report

        report = write_report(Path(out_dir), summary=summary, metrics=flat, results=results, detector_info=info,
                              real=sets["test"], generated=generated, detector_probs=ctx.probs(generated))
    run_id = None
    if tracker is not None:
        tracker.log_metrics({f"eval/{k}": v for k, v in flat.items()}, step=source.get("step"))
        tracker.set_tags({"augforge.eval.metrics": ",".join(results), "augforge.eval.jpeg_quality": str(jpeg_quality or "none")})
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
    from augforge.checkpoint import load_checkpoint, load_generator
    from augforge.config import RunConfig

    state = load_checkpoint(path)
    generator, _ = load_generator(state)
    cfg = RunConfig.from_json_dict(state["config"])
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
    near_copy_mask = _metric_function("near_copy_mask")
    arrays, splits = load_data(cfg)
    sets = split_sets(arrays, splits, ("train", "test"))
    return near_copy_mask(images, sets["train"].images, baseline=sets["test"].images,
                          baseline_groups=sets["test"].groups, train_groups=sets["train"].groups, quantile=quantile)


def _metric_function(name: str):
    """A pure function from the module that registers the ``memorization`` evaluator (the core
    does not import plugin modules by name)."""
    import sys

    cls = registry.get("evaluator", "memorization")
    return getattr(sys.modules[cls.__module__], name)
