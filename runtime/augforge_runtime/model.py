"""One exported augforge generator behind onnxruntime: ``OnnxGenerator.sample(labels, z) -> images``.

The file's contract travels in its ONNX ``metadata_props`` (written by ``augforge export``):
``format``, ``class_names``, ``latent_dim`` and ``latent_distribution`` (z ~ N(0, 1)),
``image_size``, ``output_layout`` and ``value_range``. Imports only numpy and onnxruntime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from augforge_runtime.errors import RuntimeModelError

#: ``metadata_props["format"]`` of files written by ``augforge export`` (which imports it from here)
FORMAT = "augforge-generator/1"
#: what the generator's ``z`` input expects; written into every exported file
LATENT_DISTRIBUTION = "standard_normal"
CHUNK = 64  # images per onnxruntime call in bulk rendering (``render``); bounds memory, not results


class OnnxGenerator:
    """One exported augforge generator: ``sample(labels, z) -> images``.

    ``source`` is an ONNX file or, when mlflow is installed, a registered model
    (``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``, resolved in ``tracking_uri``).
    ``providers`` are onnxruntime execution providers in order of preference
    (default ``["CPUExecutionProvider"]``; e.g. ``["CUDAExecutionProvider", "CPUExecutionProvider"]``).
    ``class_names``, ``latent_dim``, ``image_size``, ``conditional`` and ``metadata`` come from
    the file's metadata; a file without augforge metadata is rejected.
    """

    def __init__(self, source: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None,
                 tracking_uri: str | None = None):
        self.source = os.fspath(source)
        self.model_version = None  # the registry's ModelVersion when ``source`` is a models:/ URI
        if self.source.startswith("models:/"):
            from augforge_runtime.registry import resolve_model

            resolved = resolve_model(self.source, tracking_uri)
            self.path, self.model_version = str(resolved.path), resolved
        else:
            self.path = self.source
        if not os.path.isfile(self.path):
            raise RuntimeModelError(f"ONNX file {self.path} does not exist; write one with `augforge export`")
        self._providers = _check_providers(providers)
        self._threads = threads
        self._session = None
        meta = self._load_session().get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise RuntimeModelError(
                f"{self.path} has no augforge metadata (format {meta.get('format')!r}, expected {FORMAT!r}); "
                "export the generator with `augforge export` (plain ONNX models lack class names, latent size and layout)"
            )
        self.metadata: dict[str, str] = dict(meta)
        try:
            self.class_names: list[str] = list(json.loads(meta["class_names"]))
            self.latent_dim = int(meta["latent_dim"])
            self.image_size = int(meta["image_size"])
            self.conditional = bool(json.loads(meta["conditional"]))
            self.uint8_output = meta["output_layout"].startswith("NHWC")
        except (KeyError, ValueError) as exc:
            raise RuntimeModelError(f"{self.path}: augforge metadata is incomplete or malformed ({exc!r}); re-export it") from None
        latent = meta.get("latent_distribution", LATENT_DISTRIBUTION)  # files from before the key: always N(0, 1)
        if latent != LATENT_DISTRIBUTION:
            raise RuntimeModelError(f"{self.path}: latent_distribution {latent!r} is not one this runtime draws ({LATENT_DISTRIBUTION})")
        if self.conditional and not self.class_names:
            raise RuntimeModelError(f"{self.path}: conditional generator without class names; re-export it")

    # onnxruntime sessions cannot be pickled: DataLoader workers rebuild theirs lazily.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses (onnxruntime drops unavailable ones)."""
        return list(self._load_session().get_providers())

    def _load_session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self._threads:
                opts.intra_op_num_threads = self._threads
            try:
                self._session = ort.InferenceSession(self.path, sess_options=opts, providers=self._providers)
            except Exception as exc:  # not ONNX, truncated, or from a newer ONNX than this onnxruntime reads
                raise RuntimeModelError(f"cannot load {self.path} with onnxruntime {ort.__version__}: {_one_line(exc)}") from None
        return self._session

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the uint8 images this generator's items hold."""
        return (self.image_size, self.image_size, 3)

    def class_index(self, name: str | int) -> int:
        """Class name (or index) -> index; unknown names fail listing the valid ones."""
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            self.check_labels([int(name)])
            return int(name)
        if name not in self.class_names:
            raise RuntimeModelError(f"unknown class {name!r}; this generator makes: {', '.join(self.class_names) or '(unconditional)'}")
        return self.class_names.index(name)

    def check_labels(self, labels) -> np.ndarray:
        """int64 labels, refused before they reach the graph when not whole numbers in range."""
        raw = np.asarray(labels).reshape(-1)
        if raw.size and not (np.issubdtype(raw.dtype, np.integer) or
                             (np.issubdtype(raw.dtype, np.floating) and np.all(np.isfinite(raw)) and np.all(raw == np.round(raw)))):
            raise RuntimeModelError(f"labels must be whole numbers (class indices), got {raw[:5].tolist()} ({raw.dtype})")
        labels = raw.astype(np.int64)
        if not self.conditional:
            return labels
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            valid = ", ".join(f"{i}={n}" for i, n in enumerate(self.class_names))
            raise RuntimeModelError(f"label {int(bad[0])} out of range; valid labels: {valid}")
        return labels

    @property
    def output_classes(self) -> list[str]:
        """Names of what this generator makes; an unconditional one makes one class (its
        training class when it had one, else ``synthetic``)."""
        if self.conditional or len(self.class_names) == 1:
            return list(self.class_names)
        return ["synthetic"]

    def model_label(self, name: str) -> int:
        """The ``label`` input for class ``name`` (0 for an unconditional generator)."""
        if self.conditional:
            return self.class_index(name)
        if name not in self.output_classes:
            raise RuntimeModelError(f"unknown class {name!r}; this unconditional generator makes only: {self.output_classes[0]}")
        return 0

    def plan(self, counts: Mapping[str, int] | None = None, per_class: int | None = None) -> list[tuple[str, int]]:
        """Check ``counts={"mel": 500, ...}`` or ``per_class=N`` -> ``[(class name, count), ...]``."""
        if (counts is None) == (per_class is None):
            raise RuntimeModelError("give exactly one of counts={'mel': 500, ...} or per_class=N")
        if counts is None:
            counts = {name: per_class for name in self.output_classes}
        plan = []
        for name, n in counts.items():
            self.model_label(name)
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise RuntimeModelError(f"count for {name!r} must be an integer >= 0, got {n!r}")
            plan.append((name, int(n)))
        return plan

    def render(self, seed: int, labels, ordinals, chunk: int = CHUNK) -> np.ndarray:
        """uint8 [n, H, W, 3]: image ``ordinals[i]`` of class ``labels[i]`` under ``seed``.

        The same (seed, label, ordinal) always gives the same image: this is how both
        ``SyntheticLesions`` and ``augforge generate`` draw.
        """
        labels, ordinals = self.check_labels(labels), np.asarray(ordinals, np.int64)
        out = [self.sample(labels[i : i + chunk], item_noise(seed, labels[i : i + chunk], ordinals[i : i + chunk], self.latent_dim))
               for i in range(0, len(labels), chunk)]
        return np.concatenate(out) if out else np.zeros((0, *self.image_shape), np.uint8)

    def sample(self, labels, z: np.ndarray) -> np.ndarray:
        """Images for ``z`` (float32 [n, latent], drawn from N(0, 1)) and ``labels`` (ints;
        ignored when unconditional). Returns uint8 [n, H, W, 3] (whatever layout the file outputs).
        """
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise RuntimeModelError(f"z must be float32 [n, {self.latent_dim}], got {list(z.shape)}")
        feeds = {"z": z}
        if self.conditional:
            labels = self.check_labels(labels)
            if len(labels) != len(z):
                raise RuntimeModelError(f"{len(labels)} labels for {len(z)} noise vectors")
            feeds["label"] = labels
        try:
            out = self._load_session().run(["image"], feeds)[0]
        except RuntimeModelError:
            raise
        except Exception as exc:  # e.g. INVALID_ARGUMENT: a graph that does not match its augforge metadata
            raise RuntimeModelError(
                f"{self.path}: onnxruntime cannot run the generator ({_one_line(exc)}); the graph does not match its "
                "augforge metadata (inputs z[n, latent_dim], label[n] -> image): re-export it with `augforge export`"
            ) from None
        return out if self.uint8_output else to_uint8(out)


def _check_providers(providers: Sequence[str] | None) -> list[str]:
    """Named onnxruntime providers, refused up front when this onnxruntime build has none of them."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    import onnxruntime as ort

    available = ort.get_available_providers()
    names = [p[0] if isinstance(p, tuple) else p for p in providers]  # (name, options) pairs are allowed
    if not any(n in available for n in names):
        raise RuntimeModelError(
            f"none of providers {names} is available in this onnxruntime build; available: {', '.join(available)} "
            "(GPU: install onnxruntime-gpu instead of onnxruntime)"
        )
    return list(providers)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [n, 3, H, W] in [-1, 1] -> uint8 [n, H, W, 3] (the same rounding as ``--uint8``)."""
    x = np.clip(images, -1.0, 1.0)
    x = np.round((x + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def item_noise(seed: int, labels, ordinals, latent_dim: int) -> np.ndarray:
    """Noise (N(0, 1), float32) of the ``ordinals``-th images of classes ``labels`` under ``seed``.

    Keyed per class, so the first N images of a class are the same whatever the other
    classes' counts (and ``augforge generate`` can draw replacements for dropped images).
    """
    return np.stack([
        np.random.default_rng([seed, int(k), int(j)]).standard_normal(latent_dim, dtype=np.float32)
        for k, j in zip(labels, ordinals)
    ]) if len(labels) else np.zeros((0, latent_dim), np.float32)


def _one_line(exc: Exception, limit: int = 300) -> str:
    """An exception as one line of at most ``limit`` characters (onnxruntime's are multi-line)."""
    return " ".join(str(exc).split())[:limit] or type(exc).__name__
