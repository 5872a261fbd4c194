"""Torch-free sampling from an exported augforge generator, for downstream training pipelines.

Imports only numpy and onnxruntime (never torch, not even indirectly), so it runs in any
pipeline, including ones built on other frameworks::

    from augforge.runtime import SyntheticLesions, mix

    synth = SyntheticLesions("generator.onnx", counts={"mel": 500, "bcc": 300}, seed=0)
    image, label = synth[0]                  # uint8 [H, W, 3], int (index into synth.class_names)
    train_set = mix(real_train, synth, ratio=0.5, seed=0)   # 1 synthetic per 2 real items

``SyntheticLesions`` is map-style (``len`` and ``[i]``), so it works as a PyTorch ``Dataset``
(with any number of ``DataLoader`` workers), with a plain ``for`` loop, or by index. Item ``i``
is the same image whatever the access order, worker count or process: the noise of the j-th
image of class k comes from ``(seed, k, j)`` and images are computed in fixed chunks of
``CHUNK`` items.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: ``metadata_props["format"]`` of files written by ``augforge export`` (which imports it from here)
FORMAT = "augforge-generator/1"
CHUNK = 64  # images computed per onnxruntime call; fixed so results never depend on batching


class RuntimeModelError(ValueError):
    """The ONNX file, a class name or a label cannot be used as given."""


class OnnxGenerator:
    """One exported augforge generator: ``sample(labels, z) -> images``.

    ``class_names``, ``latent_dim``, ``image_size``, ``conditional`` and ``metadata`` come from
    the file's metadata; a file without augforge metadata is rejected.
    """

    def __init__(self, onnx_path: str | os.PathLike, providers: Sequence[str] | None = None, threads: int | None = None):
        self.path = os.fspath(onnx_path)
        if not os.path.isfile(self.path):
            raise RuntimeModelError(f"ONNX file {self.path} does not exist; write one with `augforge export`")
        self._providers = list(providers or ["CPUExecutionProvider"])
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
        if self.conditional and not self.class_names:
            raise RuntimeModelError(f"{self.path}: conditional generator without class names; re-export it")

    # onnxruntime sessions cannot be pickled: DataLoader workers rebuild theirs lazily.
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

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

    def class_index(self, name: str | int) -> int:
        """Class name (or index) -> index; unknown names fail listing the valid ones."""
        if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
            self.check_labels([int(name)])
            return int(name)
        if name not in self.class_names:
            raise RuntimeModelError(f"unknown class {name!r}; this generator makes: {', '.join(self.class_names) or '(unconditional)'}")
        return self.class_names.index(name)

    def check_labels(self, labels) -> np.ndarray:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
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
        labels, ordinals = np.asarray(labels, np.int64), np.asarray(ordinals, np.int64)
        out = [self.sample(labels[i : i + chunk], item_noise(seed, labels[i : i + chunk], ordinals[i : i + chunk], self.latent_dim))
               for i in range(0, len(labels), chunk)]
        return np.concatenate(out) if out else np.zeros((0, self.image_size, self.image_size, 3), np.uint8)

    def sample(self, labels, z: np.ndarray) -> np.ndarray:
        """Images for ``z`` (float32 [n, latent]) and ``labels`` (ints; ignored when unconditional).

        Returns uint8 [n, H, W, 3] (whatever layout the file outputs).
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


def _one_line(exc: Exception, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float [n, 3, H, W] in [-1, 1] -> uint8 [n, H, W, 3] (the same rounding as ``--uint8``)."""
    x = np.clip(images, -1.0, 1.0)
    x = np.round((x + 1.0) * 127.5).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def item_noise(seed: int, labels, ordinals, latent_dim: int) -> np.ndarray:
    """Noise of the ``ordinals``-th images of classes ``labels`` under ``seed``.

    Keyed per class, so the first N images of a class are the same whatever the other
    classes' counts (and ``augforge generate`` can draw replacements for dropped images).
    """
    return np.stack([
        np.random.default_rng([seed, int(k), int(j)]).standard_normal(latent_dim, dtype=np.float32)
        for k, j in zip(labels, ordinals)
    ]) if len(labels) else np.zeros((0, latent_dim), np.float32)


class SyntheticLesions:
    """A map-style dataset of generated lesions: ``ds[i] -> (image, label)``.

    - ``counts={"mel": 500, "bcc": 300}`` or ``per_class=N`` (every class) say how many images;
      items are ordered by class as given.
    - ``output="uint8"``: ``image`` is uint8 [H, W, 3] (what PIL and albumentations take);
      ``output="float"``: float32 [3, H, W] in [-1, 1] (the generator's own scale).
    - ``transform(image) -> anything`` is applied last (e.g. an albumentations pipeline wrapped
      as ``lambda im: pipe(image=im)["image"]``).
    - ``label`` is the index into ``class_names``; ``label_map={"mel": 1, ...}`` emits the ids
      of another dataset's vocabulary instead (needed by ``mix``).
    """

    def __init__(self, onnx_path: str | os.PathLike, counts: Mapping[str, int] | None = None, per_class: int | None = None,
                 seed: int = 0, transform: Callable[[np.ndarray], Any] | None = None, output: str = "uint8",
                 label_map: Mapping[str, int] | None = None, threads: int | None = None, cache_chunks: int = 4):
        if output not in ("uint8", "float"):
            raise RuntimeModelError(f"output must be 'uint8' or 'float', got {output!r}")
        self.generator = OnnxGenerator(onnx_path, threads=threads)
        g = self.generator
        plan = g.plan(counts, per_class)
        self.counts = dict(plan)
        self.class_names = g.output_classes
        self.seed, self.transform, self.output = int(seed), transform, output
        empty = [np.zeros(0, np.int64)]
        self._model_labels = np.concatenate(
            [np.full(n, g.model_label(name), np.int64) for name, n in plan] + empty
        )
        self._ordinals = np.concatenate([np.arange(n, dtype=np.int64) for _, n in plan] + empty)
        if label_map is not None:
            missing = [name for name, _ in plan if name not in label_map]
            if missing:
                raise RuntimeModelError(f"label_map lacks class(es) {missing}; it maps: {sorted(label_map)}")
            out = [np.full(n, int(label_map[name]), np.int64) for name, n in plan]
        else:
            out = [np.full(n, self.class_names.index(name), np.int64) for name, n in plan]
        self.labels = np.concatenate(out + empty)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_chunks = cache_chunks

    def __len__(self) -> int:
        return len(self.labels)

    def _chunk(self, c: int) -> np.ndarray:
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        index = np.arange(c * CHUNK, min((c + 1) * CHUNK, len(self)))
        images = self.generator.render(self.seed, self._model_labels[index], self._ordinals[index])
        self._cache[c] = images
        while len(self._cache) > self._cache_chunks:
            self._cache.popitem(last=False)
        return images

    def image(self, i: int) -> np.ndarray:
        """The uint8 [H, W, 3] image of item ``i`` (before ``output`` and ``transform``)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} synthetic images")
        i %= n
        return self._chunk(i // CHUNK)[i % CHUNK]

    def __getitem__(self, i: int):
        img = self.image(int(i))
        if self.output == "float":
            img = (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1).copy()
        else:
            img = img.copy()
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[int(i) % len(self)])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def batches(self, batch_size: int = CHUNK):
        """Yield ``(uint8 [b, H, W, 3], int64 [b])`` in item order, without ``transform``."""
        for start in range(0, len(self), batch_size):
            idx = range(start, min(start + batch_size, len(self)))
            yield np.stack([self.image(i) for i in idx]), self.labels[start : start + len(idx)].copy()


class Mixed:
    """Real and synthetic items interleaved in a seeded order; ``is_synthetic(i)`` says which."""

    def __init__(self, real, synthetic, n_synthetic: int, seed: int):
        self.real, self.synthetic = real, synthetic
        rng = np.random.default_rng(seed)
        synth_items = rng.choice(len(synthetic), size=n_synthetic, replace=False) if n_synthetic else np.zeros(0, np.int64)
        # (source, index) pairs: source 0 = real, 1 = synthetic; one seeded shuffle of both
        self._items = np.concatenate([
            np.stack([np.zeros(len(real), np.int64), np.arange(len(real))], 1),
            np.stack([np.ones(n_synthetic, np.int64), synth_items.astype(np.int64)], 1),
        ])
        self._items = self._items[rng.permutation(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int):
        src, j = self._items[i]
        return (self.synthetic if src else self.real)[int(j)]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def is_synthetic(self, i: int) -> bool:
        return bool(self._items[i][0])

    @property
    def n_synthetic(self) -> int:
        return int(self._items[:, 0].sum())


def mix(real_dataset, synthetic: SyntheticLesions, ratio: float, seed: int = 0) -> Mixed:
    """Every item of ``real_dataset`` plus ``round(ratio * len(real_dataset))`` synthetic items.

    ``ratio`` is synthetic items per real item (0.5: one synthetic image for every two real
    ones), drawn without replacement from ``synthetic`` and shuffled in with the real items,
    both by ``seed``. Both datasets must return items in the same form (set ``synthetic``'s
    ``transform``/``output``) with labels in one vocabulary (``label_map``).
    """
    if not np.isfinite(ratio) or ratio < 0:
        raise RuntimeModelError(f"ratio must be a number >= 0 (synthetic items per real item), got {ratio}")
    n = int(round(ratio * len(real_dataset)))
    if n > len(synthetic):
        raise RuntimeModelError(
            f"ratio {ratio} needs {n} synthetic items but the sampler holds {len(synthetic)}; "
            f"make it larger (per_class/counts) or lower the ratio"
        )
    return Mixed(real_dataset, synthetic, n, seed)
