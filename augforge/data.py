"""The data pipeline: decode once, crop+resize, cache as uint8 arrays, lesion-grouped splits."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from augforge import registry
from augforge.interfaces import Dataset, ImageSet

#: canonical class vocabulary (HAM10000 dx codes, plus ISIC 2019's scc and unk)
CLASS_NAMES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df", "scc", "unk"]


@dataclass
class LesionArrays:
    """Decoded images ``uint8[N, H, W, 3]`` with labels; ``meta`` row i describes image i."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: pd.DataFrame

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, index: np.ndarray) -> "LesionArrays":
        return LesionArrays(self.images[index], self.labels[index], self.class_names, self.meta.iloc[index].reset_index(drop=True))

    def image_set(self) -> ImageSet:
        return ImageSet(np.ascontiguousarray(self.images), self.labels, self.class_names, self.meta["group"].to_numpy())


def default_fingerprint(dataset: Dataset) -> str:
    h = hashlib.sha256(json.dumps(getattr(dataset, "config", {}), sort_keys=True, default=str).encode())
    h.update(dataset.name.encode())
    for src in dataset.records()["source"]:
        if src:
            st = os.stat(src)
            h.update(f"{src}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize with a Lanczos filter (antialiased downscale)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(rgb[top : top + s, left : left + s])
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def build_dataset(cfg) -> Dataset:
    return registry.build("dataset", cfg.data.name, **cfg.dataset)


def load_arrays(cfg, progress: bool = True) -> LesionArrays:
    """Decode every image of the configured dataset once and cache it; later calls memory-map."""
    dataset = build_dataset(cfg)
    records = dataset.records()
    class_names = list(dict.fromkeys(c for c in CLASS_NAMES if c in set(records["label"])))
    size = cfg.data.image_size
    key = hashlib.sha256(f"{dataset.name}:{dataset.fingerprint()}:{size}".encode()).hexdigest()[:20]
    cache = Path(cfg.data.cache_dir) / f"{dataset.name}-{size}px-{key}"
    if not (cache / "images.npy").exists():
        cache.mkdir(parents=True, exist_ok=True)
        images = np.stack([square_resize(dataset.load_image(r), size) for _, r in records.iterrows()])
        tmp = cache / "images.tmp.npy"
        np.save(tmp, images)
        records.to_csv(cache / "meta.csv", index=False)
        os.replace(tmp, cache / "images.npy")
    images = np.load(cache / "images.npy", mmap_mode="r")
    meta = pd.read_csv(cache / "meta.csv", dtype={"image_id": str, "group": str, "label": str}, keep_default_na=False)
    labels = np.array([class_names.index(x) for x in meta["label"]], dtype=np.int64)
    return LesionArrays(images, labels, class_names, meta)


def make_splits(arrays: LesionArrays, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Lesion-grouped split: every image of a group lands in the same split."""
    rng = np.random.default_rng(seed)
    groups = arrays.meta["group"].to_numpy()
    uniq = np.unique(groups)
    rng.shuffle(uniq)
    n_test, n_val = int(round(len(uniq) * test_fraction)), int(round(len(uniq) * val_fraction))
    which = {g: ("test" if i < n_test else "val" if i < n_test + n_val else "train") for i, g in enumerate(uniq)}
    assign = np.array([which[g] for g in groups])
    return {s: np.flatnonzero(assign == s) for s in ("train", "val", "test")}


class TorchImages(torch.utils.data.Dataset):
    """Cached uint8 images as float ``[3, H, W]`` tensors in [-1, 1] with int64 labels."""

    def __init__(self, arrays: LesionArrays):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        img, label = self.arrays[i]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return x, label
