"""What evaluator plugins see (``EvalContext``), choosing and running them, and the cheap evaluator used during training."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from augforge import registry
from augforge.evaluation.classify import extract_features, predict_proba, resolve_device
from augforge.errors import ConfigError, EvaluationError
from augforge.interfaces import Classifier, EvalResult, ImageSet
from augforge.evaluation.detector import DEFAULT_CLASSIFIER, get_detector, load_data, split_sets
from augforge.evaluation.sampling import sample_images


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
    computed through ``inception_features(s)``. ``realism(s)``: the generator's own
    discriminator's logit per image of ``s`` (higher = judged more real), or None when no
    discriminator is at hand (an ONNX file exported without one).
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
    realism: Callable[[ImageSet], np.ndarray] | None = None
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
