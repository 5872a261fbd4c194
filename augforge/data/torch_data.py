"""What a torch training loop reads: the class-balanced sampler, named albumentations pipelines, the Dataset view."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from augforge.data.cache import LesionArrays
from augforge.errors import ConfigError


def make_sampler(labels, balance: bool, seed: int) -> torch.utils.data.Sampler | None:
    """None (plain shuffling) unless ``balance``: then each draw picks every class equally often."""
    if not balance:
        return None
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    weights = torch.as_tensor(1.0 / counts[labels], dtype=torch.double)
    generator = torch.Generator().manual_seed(int(seed))
    return torch.utils.data.WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


def _aug_flip():
    import albumentations as A

    return [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]


def _aug_dermoscopy():
    import albumentations as A

    # Dermoscopy has no "up": flips and 90-degree turns are free; colour jitter stays small
    # because colour is diagnostic (blue-white veil, red vessels).
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5),
    ]


def _aug_dermoscopy_strong():
    import albumentations as A

    return _aug_dermoscopy() + [
        A.Affine(scale=(0.9, 1.1), rotate=(-180, 180), border_mode=0, p=0.5),
        A.GaussianBlur(blur_limit=(3, 3), p=0.1),
    ]


#: name -> factory of a list of albumentations transforms (None: no augmentation)
AUGMENTATIONS: dict[str, Callable[[], list] | None] = {
    "none": None,
    "flip": _aug_flip,
    "dermoscopy": _aug_dermoscopy,
    "dermoscopy-strong": _aug_dermoscopy_strong,
}


def make_augmentation(name: str, seed: int = 0):
    """The named albumentations pipeline (``A.Compose``), or None for ``"none"``/``""``."""
    if not name or name == "none":
        return None
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {name!r}; available: {', '.join(AUGMENTATIONS)}")
    import albumentations as A

    return A.Compose(AUGMENTATIONS[name](), seed=int(seed))


class TorchImages(torch.utils.data.Dataset):
    """Cached uint8 images as float ``[3, H, W]`` tensors in [-1, 1] with int64 labels.

    ``augment`` names an ``AUGMENTATIONS`` pipeline applied to the uint8 image first.
    """

    def __init__(self, arrays: LesionArrays, augment: str | None = None, seed: int = 0):
        self.arrays = arrays
        self.augment = make_augmentation(augment or "none", seed)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        img, label = self.arrays[i]
        if self.augment is not None:
            img = self.augment(image=np.ascontiguousarray(img))["image"]
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)
        return x, label
