"""Tiny fake components and conformance checks that plugin authors can reuse.

In a plugin's own tests, one line runs every check on every component the plugin registers::

    from augforge import testing
    test_augforge_conformance = testing.conformance_tests("my_plugin")  # entry-point name

or check one component at a time (each builds it through the registry, like the core does)::

    testing.check_generator("my-gan")
    testing.check_discriminator("my-gan")
    testing.check_export("my-gan")            # ONNX export + onnxruntime round trip
    testing.check_evaluator("my-metric")
    testing.check_dataset("my-data", root="tests/data")

A failed check raises ``AssertionError`` saying what was seen, what was expected and the fix.
``augforge.testing`` is itself a plugin module (``augforge.plugins.register(augforge.testing)``)
providing ``fake-blobs`` (dataset), ``fake`` (generator, discriminator, classifier) for fast tests.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from torch import nn

from augforge import registry
from augforge.interfaces import Classifier, Dataset, Discriminator, EvalResult, Generator, ImageSet
from augforge.plugins import hookimpl

# --------------------------------------------------------------------------------------------
# Fakes


class FakeBlobs(Dataset):
    """Coloured discs on a flat background; class i has hue i. Made in memory, deterministic."""

    name = "fake-blobs"
    description = "test fake: coloured discs, no files"

    def __init__(self, *, classes: list[str] | None = None, n_per_class: int = 16, size: int = 40, seed: int = 0):
        self.classes = list(classes or ["nv", "mel"])
        self.n_per_class, self.size, self.seed = n_per_class, size, seed

    def records(self) -> pd.DataFrame:
        rows = [
            {"image_id": f"FAKE_{c}_{i:04d}", "label": c, "group": f"L_{c}_{i // 2}", "source": ""}
            for c in self.classes
            for i in range(self.n_per_class)
        ]
        return pd.DataFrame(rows)

    def load_image(self, record) -> np.ndarray:
        k = self.classes.index(record["label"])
        i = int(record["image_id"].rsplit("_", 1)[1])
        rng = np.random.default_rng((self.seed, k, i))
        yy, xx = np.mgrid[: self.size, : self.size]
        cy, cx = rng.uniform(0.35, 0.65, 2) * self.size
        r = rng.uniform(0.2, 0.3) * self.size
        img = np.full((self.size, self.size, 3), (220, 180, 160), np.uint8)
        colour = np.array([60 + 150 * (k % 2), 40 + 60 * k % 200, 90], np.uint8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = colour
        return img

    def fingerprint(self) -> str:
        return json.dumps([self.classes, self.n_per_class, self.size, self.seed])


class FakeGenerator(Generator):
    name = "fake"
    description = "test fake: linear + 1 conv"

    def __init__(self, *, image_size: int = 16, num_classes: int = 0, latent_dim: int = 8, width: int = 8):
        super().__init__()
        self.image_size, self.num_classes, self.latent_dim = image_size, num_classes, latent_dim
        self.embed = nn.Embedding(max(num_classes, 1), latent_dim)
        self.fc = nn.Linear(latent_dim, width * (image_size // 4) ** 2)
        self.width = width
        self.out = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self, z, labels=None):
        if self.conditional:
            z = z * self.embed(labels)
        s = self.image_size // 4
        return self.out(self.fc(z).view(-1, self.width, s, s))

    @classmethod
    def search_space(cls, trial):
        return {"width": trial.suggest_categorical("width", [4, 8])}


class FakeDiscriminator(Discriminator):
    name = "fake"
    description = "test fake: 1 conv + linear"

    def __init__(self, *, image_size: int = 16, num_classes: int = 0, width: int = 8):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        self.conv = nn.Sequential(nn.Conv2d(3, width, 4, 4), nn.LeakyReLU(0.2), nn.Flatten())
        self.fc = nn.Linear(width * (image_size // 4) ** 2, 1)
        self.embed = nn.Embedding(max(num_classes, 1), width * (image_size // 4) ** 2)

    def forward(self, images, labels=None):
        h = self.conv(images)
        out = self.fc(h).squeeze(1)
        if self.conditional:
            out = out + (self.embed(labels) * h).sum(1)  # projection discriminator term
        return out


class FakeClassifier(Classifier):
    name = "fake"
    description = "test fake: 1 conv + pooled linear"

    def __init__(self, *, image_size: int = 16, num_classes: int = 2, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


@hookimpl
def augforge_register_classifiers():
    return [FakeClassifier]


@hookimpl
def augforge_register_datasets():
    return [FakeBlobs]


@hookimpl
def augforge_register_generators():
    return [FakeGenerator]


@hookimpl
def augforge_register_discriminators():
    return [FakeDiscriminator]


# --------------------------------------------------------------------------------------------
# Conformance checks (plain functions: call them from any test framework)


def _expect(ok: bool, message: str) -> None:
    if not ok:  # not `assert`: the checks must also run under `python -O`
        raise AssertionError(message)


def _roundtrip(obj, kind: str, name: str):
    config = json.loads(json.dumps(obj.config))
    _expect(config == obj.config, f"{kind} {name}: config {obj.config} is not JSON round-trippable (after JSON: "
                                  f"{config}); constructor options must be str/int/float/bool/None/lists/dicts")
    return registry.build(kind, name, **config)


def _size(kind: str, name: str, image_size: int | None) -> int:
    sizes = registry.declared_image_sizes(registry.get(kind, name))
    return image_size or (sizes[0] if sizes else 32)


def check_generator(name: str, image_size: int | None = None, num_classes: int = 3, latent_dim: int | None = None) -> None:
    """Build generator ``name`` conditional and unconditional and check its contract.

    ``image_size`` defaults to the first of the class's ``image_sizes``.
    """
    from augforge.model_checks import check_models

    image_size = _size("generator", name, image_size)
    for k in (0, num_classes):
        kwargs = {"image_size": image_size, "num_classes": k}
        if latent_dim is not None:
            kwargs["latent_dim"] = latent_dim
        torch.manual_seed(0)
        g = registry.build("generator", name, **kwargs).eval()
        _expect(g.conditional == (k > 0), f"generator {name}: conditional={g.conditional} with num_classes={k}; "
                                          f"expected {k > 0} (store num_classes as self.num_classes)")
        z, labels = g.example_inputs(batch=3)
        _expect(tuple(z.shape) == (3, g.latent_dim), f"generator {name}: example_inputs(3) gave z of shape "
                                                     f"{tuple(z.shape)}; expected (3, {g.latent_dim})")
        _expect((labels is None) == (k == 0), f"generator {name}: example_inputs gave labels={labels}; expected labels "
                                              f"exactly when conditional (num_classes={k})")
        with torch.no_grad():
            x = g(z, labels)
        want = (3, 3, image_size, image_size)
        _expect(tuple(x.shape) == want, f"generator {name}: output shape {tuple(x.shape)} at image_size={image_size}; "
                                        f"expected {want}")
        _expect(x.dtype == torch.float32, f"generator {name}: output dtype {x.dtype}; expected torch.float32")
        d = _FakeD()
        try:
            check_models(g, d, image_size=image_size, num_classes=k, latent_dim=g.latent_dim, device="cpu")
        except Exception as exc:  # the same check the training loop runs before step 1
            raise AssertionError(str(exc)) from None
        g2 = _roundtrip(g, "generator", name)
        g2.load_state_dict(g.state_dict())
        with torch.no_grad():
            diff = float((g2.eval()(z, labels) - x).abs().max())
        _expect(diff <= 1e-6, f"generator {name}: rebuilt from its config with the same weights, output differs by "
                              f"{diff:.3g}; expected <= 1e-6 (is some state outside the constructor options and weights?)")
        _check_search_space(type(g), "generator", name, kwargs)


class _FakeD(nn.Module):
    """Stands in for a discriminator when only the generator is checked."""

    def forward(self, images, labels=None):
        return images.mean((1, 2, 3))


def check_discriminator(name: str, image_size: int | None = None, num_classes: int = 3) -> None:
    image_size = _size("discriminator", name, image_size)
    for k in (0, num_classes):
        d = registry.build("discriminator", name, image_size=image_size, num_classes=k)
        x = torch.rand(4, 3, image_size, image_size) * 2 - 1
        labels = torch.arange(4) % k if k else None
        out = d(x, labels)
        _expect(tuple(out.shape) == (4,), f"discriminator {name}: logits shape {tuple(out.shape)} for 4 images; "
                                          f"expected (4,) (flatten the last layer)")
        out.sum().backward()  # must be differentiable w.r.t. its parameters
        _roundtrip(d, "discriminator", name)
        _check_search_space(type(d), "discriminator", name, {"image_size": image_size, "num_classes": k})


def _check_search_space(cls, kind: str, name: str, base_kwargs: dict) -> None:
    import optuna

    trial = optuna.create_study().ask()
    space = cls.search_space(trial)
    registry.bind(kind, name, **{**base_kwargs, **space})


def check_export(name: str, image_size: int | None = None, num_classes: int = 3) -> None:
    """Export generator ``name`` to ONNX (conditional and not) and compare onnxruntime with PyTorch."""
    import tempfile
    from pathlib import Path

    from augforge.export import export_onnx, read_metadata

    image_size = _size("generator", name, image_size)
    for k in (0, num_classes):
        torch.manual_seed(0)
        g = registry.build("generator", name, image_size=image_size, num_classes=k).eval()
        classes = [f"class{i}" for i in range(k)]
        with tempfile.TemporaryDirectory() as tmp:
            path = export_onnx(g, Path(tmp) / "g.onnx", {"class_names": classes, "image_size": image_size})
            meta = read_metadata(path)
        for key, want in (("image_size", str(image_size)), ("num_classes", str(k)), ("latent_dim", str(g.latent_dim))):
            _expect(meta.get(key) == want, f"generator {name}: exported metadata {key}={meta.get(key)!r}; expected {want!r}")


def _image_sets(n: int = 12, size: int = 32, classes=("nv", "mel")) -> tuple[ImageSet, ImageSet, ImageSet]:
    rng = np.random.default_rng(0)
    def one():
        labels = np.arange(n) % len(classes)
        return ImageSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels, list(classes),
                        groups=np.array([f"L{i}" for i in range(n)]))
    return one(), one(), one()


def check_evaluator(name: str, image_size: int = 32, **options) -> None:
    """Run evaluator ``name`` on tiny random image sets and check what it hands back."""
    import math

    from augforge import plugins
    from augforge.evaluation import EvalContext

    cls = registry.get("evaluator", name)
    ev = registry.build("evaluator", name, **options)
    _roundtrip(ev, "evaluator", name)
    real_train, generated, real_test = _image_sets(size=image_size)
    pm = plugins.get_plugin_manager()
    added = pm.get_plugin("augforge.testing") is None and "fake" not in registry.names("classifier")
    if added:  # context.new_classifier() builds by name: the fake classifier must be registered
        plugins.register(__import__(__name__, fromlist=["_"]), name="augforge.testing")
    try:
        torch.manual_seed(0)
        detector = FakeClassifier(image_size=image_size, num_classes=2)
        context = EvalContext(detector, torch.device("cpu"), list(real_train.class_names), seed=0, classifier="fake",
                              image_size=image_size, real_val=real_test,
                              sampler=lambda counts, seed: _image_sets(int(sum(counts)), image_size)[1])
        result = ev.evaluate(real_train, generated, real_test, context)
    finally:
        if added:
            pm.unregister(name="augforge.testing")
            registry.reset()
    _expect(isinstance(result, EvalResult), f"evaluator {name}: evaluate() returned {type(result).__name__}; "
                                            f"expected augforge.interfaces.EvalResult(metrics={{...}})")
    bad = {k: v for k, v in result.metrics.items() if not isinstance(k, str) or not isinstance(v, (int, float))
           or isinstance(v, bool)}
    _expect(not bad, f"evaluator {name}: metrics {bad} are not str -> float; expected e.g. {{'{cls.objective}': 0.5}}")
    _expect(cls.objective in result.metrics, f"evaluator {name}: objective {cls.objective!r} is not among the metrics "
                                             f"{sorted(result.metrics)}; set `objective` to one of them")
    _expect(math.isfinite(result.metrics[cls.objective]) or math.isnan(result.metrics[cls.objective]),
            f"evaluator {name}: {cls.objective}={result.metrics[cls.objective]}; expected a finite number (or NaN)")
    for key, fig in result.figures.items():
        _expect(isinstance(fig, np.ndarray) and fig.dtype == np.uint8 and fig.ndim == 3 and fig.shape[2] == 3,
                f"evaluator {name}: figure {key!r} is {getattr(fig, 'dtype', type(fig).__name__)}"
                f"{list(getattr(fig, 'shape', []))}; expected uint8[H, W, 3]")
    for key, table in result.tables.items():
        _expect(isinstance(table, pd.DataFrame), f"evaluator {name}: table {key!r} is {type(table).__name__}; "
                                                 f"expected a pandas.DataFrame")


def check_dataset(name: str, **kwargs) -> None:
    """Build dataset ``name`` and check its records, labels and first image."""
    from augforge.data import CLASS_NAMES, records_labels_hint

    ds = registry.build("dataset", name, **kwargs)
    rec = ds.records()
    for col in ("image_id", "label", "group", "source"):
        _expect(col in rec.columns, f"dataset {name}: records() lacks column {col!r}; has {list(rec.columns)}; "
                                    f"expected at least image_id, label, group, source")
    _expect(len(rec) > 0, f"dataset {name}: records() is empty with options {kwargs}; expected at least one row")
    dup = rec["image_id"][rec["image_id"].duplicated()].tolist()
    _expect(not dup, f"dataset {name}: duplicate image_id(s) {dup[:5]}; expected each id once")
    bad = sorted({str(v) for v in rec["label"]} - set(CLASS_NAMES))
    _expect(not bad, f"dataset {name}: label(s) {bad[:5]}; {records_labels_hint(bad)}")
    img = ds.load_image(rec.iloc[0])
    _expect(isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3,
            f"dataset {name}: load_image gave {getattr(img, 'dtype', type(img).__name__)}{list(getattr(img, 'shape', []))}; "
            f"expected uint8[H, W, 3] RGB")
    again = registry.build("dataset", name, **kwargs).fingerprint()
    _expect(ds.fingerprint() == again, f"dataset {name}: fingerprint() changed between two identical builds "
                                       f"({ds.fingerprint()!r} then {again!r}); expected a stable string")


# --------------------------------------------------------------------------------------------
# One line for a plugin's own pytest suite


def conformance_tests(plugin: str, *, options: dict[str, dict] | None = None):
    """A pytest test, parametrised over every component plugin ``plugin`` registers::

        test_augforge_conformance = testing.conformance_tests("my_plugin")

    ``plugin`` is the entry-point name (``augforge plugins`` lists it). ``options`` maps a
    component name to constructor options the checks need (e.g. a dataset's ``root``).
    Generators are also exported to ONNX and compared with onnxruntime.
    """
    import pytest

    checks = {"generator": (check_generator, check_export), "discriminator": (check_discriminator,),
              "evaluator": (check_evaluator,), "dataset": (check_dataset,)}
    cases = [(kind, name, fn) for kind, entries in registry.tables().items() for name, e in sorted(entries.items())
             if e.plugin == plugin for fn in checks.get(kind, ())]
    if not cases:
        known = sorted({e.plugin for entries in registry.tables().values() for e in entries.values()})
        raise AssertionError(f"plugin {plugin!r} registers no components; registered plugins: {', '.join(known)}")
    extra = options or {}

    @pytest.mark.parametrize("kind,name,check", cases, ids=[f"{fn.__name__}[{n}]" for _, n, fn in cases])
    def test_conformance(kind, name, check):
        kwargs = extra.get(name, {}) if kind in ("dataset", "evaluator") else {}
        check(name, **kwargs)

    return test_conformance
