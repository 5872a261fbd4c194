"""``SyntheticLesions``: a map-style dataset of generated lesions with bounded, fast random access."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from augforge_runtime.errors import RuntimeModelError
from augforge_runtime.model import CHUNK, OnnxGenerator

#: default size of the per-process image cache, in MB (2**20 bytes); at 64 px one image is 12 KB
DEFAULT_CACHE_MB = 128
READ_AHEAD = 32  # images rendered together when items are read in order (one onnxruntime call)


class SyntheticLesions:
    """A map-style dataset of generated lesions: ``ds[i] -> (image, label)``.

    - ``source``: an ONNX file from ``augforge export``, or ``models:/NAME@ALIAS`` when mlflow
      is installed (``tracking_uri`` names the store; default ``MLFLOW_TRACKING_URI`` or
      ``./mlruns/mlflow.db``).
    - ``counts={"mel": 500, "bcc": 300}`` or ``per_class=N`` (every class) say how many images;
      items are ordered by class as given.
    - ``output="uint8"``: ``image`` is uint8 [H, W, 3] (what PIL and albumentations take);
      ``output="float"``: float32 [3, H, W] in [-1, 1] (the generator's own scale).
    - ``transform(image) -> anything`` is applied last (e.g. an albumentations pipeline wrapped
      as ``lambda im: pipe(image=im)["image"]``).
    - ``label`` is the index into ``class_names``; ``label_map={"mel": 1, ...}`` emits the ids
      of another dataset's vocabulary instead (``mix`` checks them).
    - ``providers``: onnxruntime execution providers (default CPU); ``threads``: its intra-op threads.
    - ``cache_mb``: rendered images kept per process (LRU), ``DEFAULT_CACHE_MB`` = 128 MB by default.
    - ``filter="realism"``, ``keep=0.5``: each class draws ``ceil(n / keep)`` images, the
      discriminator exported beside the generator (``augforge export --with-discriminator``)
      scores them, and the ``n`` most realistic are the items (rendered once at construction to
      score them); the same images ``augforge generate --filter realism --keep 0.5`` writes.
      ``scores`` then holds each item's realism rank (pass it to ``mix`` with a filtered policy).

    Item ``i`` is the same image whatever the access order, worker count or process: its noise
    comes from ``(seed, class, j)`` for the j-th image of its class, and an exported generator
    maps each (z, label) row on its own (a test checks that batching does not change a pixel).
    Access is cheap in any order: an uncached item is rendered alone, items read in order are
    rendered ``READ_AHEAD`` at a time, and a DataLoader batch (``__getitems__``) in one call, so a
    shuffled pass renders each image once. ``rendered`` counts the images computed so far.
    """

    def __init__(self, source: str | os.PathLike, counts: Mapping[str, int] | None = None, per_class: int | None = None,
                 seed: int = 0, transform: Callable[[np.ndarray], Any] | None = None, output: str = "uint8",
                 label_map: Mapping[str, int] | None = None, threads: int | None = None,
                 providers: Sequence[str] | None = None, cache_mb: float = DEFAULT_CACHE_MB, tracking_uri: str | None = None,
                 filter: str | None = None, keep: float = 0.5):
        if output not in ("uint8", "float"):
            raise RuntimeModelError(f"output must be 'uint8' or 'float', got {output!r}")
        if not np.isfinite(cache_mb) or cache_mb < 0:
            raise RuntimeModelError(f"cache_mb must be a number of megabytes >= 0, got {cache_mb!r}")
        self.generator = OnnxGenerator(source, providers=providers, threads=threads, tracking_uri=tracking_uri)
        g = self.generator
        plan = g.plan(counts, per_class)
        self.counts = dict(plan)
        self.class_names = g.output_classes
        self.seed, self.transform, self.output = int(seed), transform, output
        empty = [np.zeros(0, np.int64)]
        self._model_labels = np.concatenate([np.full(n, g.model_label(name), np.int64) for name, n in plan] + empty)
        if filter is None:
            self._ordinals = np.concatenate([np.arange(n, dtype=np.int64) for _, n in plan] + empty)
            self.scores = None
        elif filter == "realism":  # draw n / keep per class, keep the n the exported discriminator finds most real
            from augforge_runtime.realism import discriminator_for, realistic_draws

            disc = discriminator_for(g, providers=providers, threads=threads)
            kept = [realistic_draws(g, disc, self.seed, g.model_label(name), n, keep) for name, n in plan]
            self._ordinals = np.concatenate([k[0] for k in kept] + empty)
            #: per item: the within-class percentile rank of its realism among the draws (for filtered ``mix`` policies)
            self.scores = np.concatenate([k[2] for k in kept] + [np.zeros(0)])
            self.realism = np.concatenate([k[1] for k in kept] + [np.zeros(0, np.float32)])
        else:
            raise RuntimeModelError(f"filter={filter!r}: the runtime filters by 'realism' (the discriminator exported beside "
                                    "the generator); label and novelty need the detector and the training data: "
                                    "use `augforge generate --filter`")
        self.filter, self.keep = filter, (keep if filter else None)
        self.label_map = dict(label_map) if label_map is not None else None
        if label_map is not None:
            missing = [name for name, _ in plan if name not in label_map]
            if missing:
                raise RuntimeModelError(f"label_map lacks class(es) {missing}; it maps: {sorted(label_map)}")
            out = [np.full(n, int(label_map[name]), np.int64) for name, n in plan]
        else:
            out = [np.full(n, self.class_names.index(name), np.int64) for name, n in plan]
        self.labels = np.concatenate(out + empty)
        #: label id -> class name, in the vocabulary this dataset emits
        self.label_names = {int(label_map[name]) if label_map is not None else self.class_names.index(name): name
                            for name, _ in plan}
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0  # bytes held
        self._last = -2  # last index read, to detect in-order reading
        self.rendered = 0

    # DataLoader workers (spawned ones receive a pickle) start with an empty cache of their own
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"], state["_cached"] = OrderedDict(), 0
        return state

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.generator.image_shape

    def _index(self, i) -> int:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} synthetic images")
        return i % n

    def _render(self, index: np.ndarray) -> np.ndarray:
        images = self.generator.render(self.seed, self._model_labels[index], self._ordinals[index])
        self.rendered += len(index)
        for i, img in zip(index.tolist(), images):
            self._put(i, img)
        return images

    def _put(self, i: int, img: np.ndarray) -> None:
        if img.nbytes > self.cache_bytes:
            return
        self._cache[i] = img
        self._cached += img.nbytes
        while self._cached > self.cache_bytes:
            self._cached -= self._cache.popitem(last=False)[1].nbytes

    def _get(self, i: int) -> np.ndarray | None:
        img = self._cache.get(i)
        if img is not None:
            self._cache.move_to_end(i)
        return img

    def images(self, indices) -> np.ndarray:
        """uint8 [n, H, W, 3] of items ``indices``, the uncached ones rendered together."""
        idx = np.asarray([self._index(i) for i in np.asarray(indices).reshape(-1)], np.int64)
        out = np.empty((len(idx), *self.image_shape), np.uint8)
        todo = []
        for k, i in enumerate(idx.tolist()):
            img = self._get(i)
            if img is None:
                todo.append(k)
            else:
                out[k] = img
        if todo:
            want = np.unique(idx[todo])
            got = dict(zip(want.tolist(), self._render(want)))
            for k in todo:
                out[k] = got[int(idx[k])]
        return out

    def image(self, i: int) -> np.ndarray:
        """The uint8 [H, W, 3] image of item ``i`` (before ``output`` and ``transform``)."""
        i = self._index(i)
        img = self._get(i)
        if img is None:
            # reading in order: render the next items in one call (as many as the cache holds, at
            # most READ_AHEAD); else just this one
            ahead = min(READ_AHEAD, self.cache_bytes // int(np.prod(self.image_shape))) if i == self._last + 1 else 1
            stop = min(len(self), i + max(ahead, 1))
            img = self._render(np.arange(i, stop))[0]
        self._last = i
        return img

    def _item(self, i: int, img: np.ndarray):
        if self.output == "float":
            img = (img.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1).copy()
        else:
            img = img.copy()
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])

    def __getitem__(self, i: int):
        i = self._index(i)
        return self._item(i, self.image(i))

    def __getitems__(self, indices: Sequence[int]) -> list:
        """A batch of items (``torch.utils.data.DataLoader`` calls this for each batch)."""
        idx = [self._index(i) for i in indices]
        return [self._item(i, img) for i, img in zip(idx, self.images(idx))]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def batches(self, batch_size: int = CHUNK):
        """Yield ``(uint8 [b, H, W, 3], int64 [b])`` in item order, without ``transform``."""
        for start in range(0, len(self), batch_size):
            idx = np.arange(start, min(start + batch_size, len(self)))
            yield self.images(idx), self.labels[idx].copy()

    def save_pngs(self, folder: str | os.PathLike, indices=None) -> Path:
        """Write items as ``folder/<i>.png`` plus ``labels.csv`` (``index,label,class``); needs Pillow
        (``pip install augforge-runtime[png]``). For HAM10000-style folders use ``augforge generate``."""
        try:
            from PIL import Image
        except ImportError:
            raise RuntimeModelError("save_pngs needs Pillow: pip install 'augforge-runtime[png]'") from None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        idx = np.arange(len(self)) if indices is None else np.asarray([self._index(i) for i in indices], np.int64)
        rows = ["index,label,class"]
        for start in range(0, len(idx), CHUNK):
            part = idx[start : start + CHUNK]
            for i, img in zip(part.tolist(), self.images(part)):
                Image.fromarray(img).save(folder / f"{i}.png")
                label = int(self.labels[i])
                rows.append(f"{i},{label},{self.label_names[label]}")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
        return folder
