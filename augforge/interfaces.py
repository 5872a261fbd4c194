"""Base classes for the components plugins provide.

Every component class has a ``name`` class attribute (the registry key) and a keyword-only
constructor whose signature *is* its config schema: ``augforge.registry.build`` binds the
keyword arguments, rejects unknown ones, and stores the bound values as ``instance.config``
(a JSON-able dict saved in checkpoints and logged to tracking). Facts that come from the
data (``image_size``, ``num_classes``, ``latent_dim``) are injected by the core.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn


# --------------------------------------------------------------------------------------------
# Data


class Dataset:
    """An index of labelled lesion images: the plugin says *what* the images are.

    The core (``augforge.data``) does the I/O-heavy rest: decode once, crop, resize, cache as
    a uint8 array, split by lesion, sample, augment. Items of the prepared dataset are
    ``(image, label)`` pairs (``augforge.data.LesionArrays``).

    Subclasses take keyword-only arguments; the common ones are ``root`` (folder or file),
    ``classes`` (names from ``augforge.data.CLASS_NAMES`` or synonyms), ``max_per_class``,
    ``seed`` and ``skip_bad``.
    """

    name: ClassVar[str]
    #: one line for ``augforge plugins``
    description: ClassVar[str] = ""

    def records(self) -> pd.DataFrame:
        """Return one row per image, in a deterministic order.

        Required columns: ``image_id`` (unique str), ``label`` (canonical class name),
        ``group`` (lesion or patient id; the image id when unknown — splits never separate a
        group), ``source`` (file path, or ``""`` when ``load_image`` makes the pixels).
        Extra columns (age, sex, localization, ...) are kept as metadata.
        Raise ``augforge.errors.DataError`` naming the file/row and the fix for bad input.
        """
        raise NotImplementedError

    def load_image(self, record: pd.Series) -> np.ndarray:
        """Return the RGB pixels of one record as ``uint8[H, W, 3]``.

        The default decodes ``record.source`` safely (``augforge.imageio.read_rgb``).
        """
        from augforge.imageio import read_rgb

        return read_rgb(record["source"])

    def fingerprint(self) -> str:
        """Return a string that changes whenever the images or labels could change.

        Used in the cache key. The default hashes the config and each source's size and
        modification time.
        """
        h = hashlib.sha256(json.dumps(getattr(self, "config", {}), sort_keys=True, default=str).encode())
        h.update(self.name.encode())
        records = self.records()
        cols = [c for c in ("image_id", "label", "group", "source") if c in records.columns]
        h.update(pd.util.hash_pandas_object(records[cols].astype(str), index=False).to_numpy().tobytes())
        for src in records["source"]:
            if src:
                try:
                    st = os.stat(src)
                except OSError:
                    h.update(f"{src}:missing".encode())
                    continue
                h.update(f"{src}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


@dataclass
class ImageSet:
    """A set of images handed to evaluators: ``uint8[N, H, W, 3]`` RGB plus int labels."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    #: lesion/patient ids (real sets) so privacy checks can group by lesion; None for generated
    groups: np.ndarray | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"ImageSet.images must be uint8[N, H, W, 3], got {self.images.dtype}{list(self.images.shape)}"
            )
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index) -> "ImageSet":
        groups = None if self.groups is None else self.groups[index]
        return ImageSet(self.images[index], self.labels[index], self.class_names, groups)


# --------------------------------------------------------------------------------------------
# Models


class Generator(nn.Module):
    """Maps noise (and a class label when conditional) to images in [-1, 1].

    Constructor: keyword-only, with at least ``image_size: int`` (pixels, square),
    ``num_classes: int = 0`` (0 means unconditional) and ``latent_dim: int``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: image sizes (pixels) this family supports; () = not declared. When declared, the core
    #: refuses other sizes before any data is read (``augforge plugins show NAME`` lists them)
    image_sizes: ClassVar[tuple[int, ...]] = ()
    config: dict[str, Any]
    latent_dim: int
    num_classes: int

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``float[B, 3, H, W]`` images in [-1, 1]; ``labels`` is ``int64[B]`` or None."""
        raise NotImplementedError

    def example_inputs(self, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(z, labels)`` for export and tests (labels None when unconditional)."""
        z = torch.randn(batch, self.latent_dim)
        labels = torch.arange(batch) % self.num_classes if self.conditional else None
        return z, labels

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """Return constructor kwargs suggested by an Optuna ``trial`` (``trial.suggest_*``).

        Parameter names are the constructor's keyword names; the core prefixes them with
        ``generator.``. The default searches nothing.
        """
        return {}


class Discriminator(nn.Module):
    """Scores images: ``forward(images, labels=None) -> float[B]`` logits (higher = real).

    Constructor: keyword-only, with at least ``image_size`` and ``num_classes = 0``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    image_sizes: ClassVar[tuple[int, ...]] = ()  # as Generator.image_sizes
    config: dict[str, Any]
    num_classes: int

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def self_supervised_loss(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Optional auxiliary task on real images, a scalar the loop adds to D's loss times
        ``train.ssl_weight`` (e.g. reconstructing the image from D's features, as FastGAN
        does). Discriminators without one refuse ``train.ssl_weight > 0``."""
        raise NotImplementedError(f"discriminator {self.name!r} has no self-supervised task")

    def forward_with_classes(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Optional: ``forward``'s logits ``float[B]`` and class logits ``float[B, num_classes]``
        from the same features, in one pass, for ``train.ac_weight`` (an auxiliary classifier,
        AC-GAN style: D learns the class of real images, G is asked to make fakes D classifies
        as their label). Discriminators without one refuse ``train.ac_weight > 0``."""
        raise NotImplementedError(f"discriminator {self.name!r} has no class head")

    @classmethod
    def search_space(cls, trial) -> dict[str, Any]:
        """As ``Generator.search_space``; names are prefixed with ``discriminator.``."""
        return {}


class Classifier(nn.Module):
    """An image classifier used by evaluators (the "detector") and by augmentation-gain.

    Constructor: keyword-only, with at least ``image_size`` and ``num_classes``.
    ``forward(x)`` takes ``float[B, 3, H, W]`` in [-1, 1] and returns class logits;
    ``features(x)`` returns the penultimate embedding ``float[B, F]`` used for FID/KID etc.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    config: dict[str, Any]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvalResult:
    """What an evaluator hands back; the core logs and writes all of it."""

    metrics: dict[str, float]
    #: name -> uint8[H, W, 3] image (PNG written by the core)
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    #: name -> table (CSV written by the core)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: short facts for the tracked run, e.g. a recommendation (tagged ``augforge.eval.<name>`` by the core;
    #: ``recommended_*`` tags travel on to the registered model version at ``augforge export --register``)
    tags: dict[str, str] = field(default_factory=dict)


class Evaluator:
    """Computes numbers that say how realistic, faithful, private or useful generated images are.

    ``evaluate(real_train, generated, real_test, context)`` receives ``ImageSet``s and an
    ``augforge.evaluation.EvalContext`` (the trained detector, device, seed) and returns an
    ``EvalResult``. Evaluators never write files or log: the core does.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: the metric key a sweep optimises when this evaluator is the objective
    objective: ClassVar[str]
    #: "minimize" or "maximize"
    direction: ClassVar[str] = "minimize"
    #: cheap evaluators run by default and may run during training
    cheap: ClassVar[bool] = True
    config: dict[str, Any]

    def evaluate(self, real_train: ImageSet, generated: ImageSet, real_test: ImageSet, context) -> EvalResult:
        raise NotImplementedError


KINDS: dict[str, type] = {
    "dataset": Dataset,
    "generator": Generator,
    "discriminator": Discriminator,
    "classifier": Classifier,
    "evaluator": Evaluator,
}
