"""Realism scores without torch: the discriminator exported beside a generator, and filtered draws.

``augforge export --with-discriminator --out G.onnx`` writes ``G.discriminator.onnx`` and names
it in G's metadata (``discriminator_file``, ``discriminator_sha256``). ``discriminator_for(gen)``
finds and checks it (beside the generator file, or in ``extra_files/`` of a registered model's
download); ``realistic_draws`` draws ``ceil(n / keep)`` images of a class, scores them and keeps
the best ``n`` with the same ranking ``augforge generate --filter realism`` uses
(``augforge_runtime.selection.select``), so both keep the same images for the same seed.
Imports only numpy and onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from augforge_runtime.errors import RuntimeModelError
from augforge_runtime.model import CHUNK, OnnxGenerator, _check_providers, _one_line
from augforge_runtime.selection import SelectionError, kept_count, select

#: ``metadata_props["format"]`` of discriminator files written by ``augforge export --with-discriminator``
DISCRIMINATOR_FORMAT = "augforge-discriminator/1"
SUFFIX = ".discriminator.onnx"


def discriminator_path_for(generator_path: str | os.PathLike) -> Path:
    """Where ``augforge export --with-discriminator`` writes the discriminator of ``G.onnx``: ``G.discriminator.onnx``."""
    p = Path(generator_path)
    return p.with_name((p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name) + SUFFIX)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class OnnxDiscriminator:
    """One exported discriminator: ``score(images, labels) -> float32[n]`` logits (higher = more real).

    ``images`` are uint8 [n, H, W, 3] (what ``OnnxGenerator.render`` returns); ``labels`` the
    generator's class indices (ignored when unconditional).
    """

    def __init__(self, path: str | os.PathLike, providers=None, threads: int | None = None):
        import onnxruntime as ort

        self.path = str(path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(self.path, sess_options=opts, providers=_check_providers(providers))
        except Exception as exc:
            raise RuntimeModelError(f"cannot load discriminator {self.path}: {_one_line(exc)}") from None
        meta = dict(self._session.get_modelmeta().custom_metadata_map)
        if meta.get("format") != DISCRIMINATOR_FORMAT:
            raise RuntimeModelError(f"{self.path} is not an augforge discriminator (format {meta.get('format')!r}, "
                                    f"expected {DISCRIMINATOR_FORMAT!r}); write one with `augforge export --with-discriminator`")
        self.metadata = meta
        self.image_size = int(meta["image_size"])
        self.conditional = bool(json.loads(meta["conditional"]))
        self.num_classes = int(meta["num_classes"])

    def score(self, images: np.ndarray, labels=None, chunk: int = CHUNK) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        want = (self.image_size, self.image_size, 3)
        if images.ndim != 4 or images.shape[1:] != want:
            raise RuntimeModelError(f"images must be uint8 [n, {want[0]}, {want[1]}, 3], got {list(images.shape)}")
        feeds_labels = None
        if self.conditional:
            feeds_labels = np.asarray(labels, np.int64).reshape(-1)
            if len(feeds_labels) != len(images):
                raise RuntimeModelError(f"{len(feeds_labels)} labels for {len(images)} images")
            if feeds_labels.size and (feeds_labels.min() < 0 or feeds_labels.max() >= self.num_classes):
                raise RuntimeModelError(f"labels must be in 0..{self.num_classes - 1}, got {sorted(set(feeds_labels.tolist()))[:5]}")
        out = []
        for i in range(0, len(images), chunk):
            feeds = {"image": images[i : i + chunk]}
            if feeds_labels is not None:
                feeds["label"] = feeds_labels[i : i + chunk]
            out.append(self._session.run(["realism"], feeds)[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def discriminator_for(gen: OnnxGenerator, providers=None, threads: int | None = None) -> OnnxDiscriminator:
    """The discriminator named in ``gen``'s metadata, checked against its recorded digest."""
    name = gen.metadata.get("discriminator_file")
    if not name:
        raise RuntimeModelError(f"{gen.path} names no discriminator: re-export it with `augforge export --with-discriminator` "
                                "(realism scores need the training run's discriminator)")
    here = Path(gen.path).parent
    for candidate in (here / name, here / "extra_files" / name):  # beside it, or in a registered model's download
        if candidate.is_file():
            digest = gen.metadata.get("discriminator_sha256")
            if digest and _sha256(candidate) != digest:
                raise RuntimeModelError(f"{candidate} is not the discriminator {gen.path} was exported with (sha256 differs); "
                                        "re-export both with `augforge export --with-discriminator`")
            return OnnxDiscriminator(candidate, providers=providers, threads=threads)
    raise RuntimeModelError(f"{gen.path} names discriminator {name!r}, but it is not beside it ({here / name}); "
                            "copy it along with the generator or re-export with `augforge export --with-discriminator`")


def realistic_draws(gen: OnnxGenerator, disc: OnnxDiscriminator, seed: int, label: int, n: int, keep: float):
    """The ``n`` most realistic of ``ceil(n / keep)`` draws of class ``label`` under ``seed``.

    Returns ``(ordinals int64[n], realism float32[n], rank float[n])`` in ordinal order: image
    ``ordinals[i]`` is ``gen.render(seed, [label], [ordinals[i]])``; ``rank`` is the within-class
    percentile rank of its realism among the draws (``score_rank`` in ``metadata.csv``).
    """
    try:
        kept_count(1, keep)  # checks the share
    except SelectionError as exc:
        raise RuntimeModelError(str(exc)) from None
    m = math.ceil(n / keep)
    ordinals = np.arange(m, dtype=np.int64)
    labels = np.full(m, label, np.int64)
    scores = np.concatenate([disc.score(gen.render(seed, labels[i : i + CHUNK], ordinals[i : i + CHUNK]), labels[i : i + CHUNK])
                             for i in range(0, m, CHUNK)]) if m else np.zeros(0, np.float32)
    # class key 0: the same call (and tie-break order) as augforge generate's per-class selection
    sel = select(np.zeros(m, int), {"realism": scores}, counts={0: n}, seed=seed)
    return ordinals[sel.indices], scores[sel.indices], sel.combined[sel.indices]
