"""The data pipeline: decode once, crop+resize, cache as uint8 arrays, lesion-grouped splits.

``load_arrays(cfg)`` builds the configured dataset plugin, decodes every image once
(centre-crop to a square, Lanczos resize), scores it with the paper-A filters, and caches the
result as ``uint8[N, S, S, 3]`` in ``images.npy`` under a folder keyed by the dataset's
fingerprint and the options. Later calls memory-map that file and never touch a JPEG.
``make_splits`` makes lesion-grouped, class-stratified, seed-deterministic splits;
``make_sampler`` balances classes; ``AUGMENTATIONS`` names albumentations pipelines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from augforge import envvars, registry
from augforge.envvars import check_image_size
from augforge.errors import ConfigError, DataError
from augforge.interfaces import Dataset, ImageSet

# --------------------------------------------------------------------------------------------
# Class vocabulary

#: canonical class vocabulary (HAM10000 dx codes, plus ISIC 2019's scc and unk)
CLASS_NAMES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df", "scc", "unk"]

CLASS_DESCRIPTIONS = {
    "nv": "melanocytic nevus",
    "mel": "melanoma (in situ and invasive)",
    "bkl": "benign keratosis-like (seborrheic keratosis, solar lentigo, lichen-planus-like keratosis)",
    "bcc": "basal-cell carcinoma",
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "vasc": "vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
    "df": "dermatofibroma",
    "scc": "squamous-cell carcinoma (invasive)",
    "unk": "none of the others / unknown (ISIC 2019 UNK; ISIC 2020 'unknown')",
}

#: synonym -> canonical name. Matching ignores case, '_', '-', "'" and repeated spaces.
#: Only what is listed here maps; anything else is an error naming the value (or, with
#: skip_bad, a counted skip), never a guess.
SYNONYMS: dict[str, str] = {
    # nv
    "nevus": "nv", "naevus": "nv", "nevi": "nv", "melanocytic nevus": "nv", "melanocytic nevi": "nv",
    "melanocytic naevus": "nv", "melanocytic naevi": "nv",
    # mel
    "melanoma": "mel", "malignant melanoma": "mel", "melanoma in situ": "mel", "melanoma invasive": "mel",
    "melanoma, invasive": "mel", "invasive melanoma": "mel",
    # bkl
    "benign keratosis": "bkl", "benign keratosis like": "bkl", "benign keratosis like lesions": "bkl",
    "pigmented benign keratosis": "bkl", "seborrheic keratosis": "bkl", "seborrhoeic keratosis": "bkl",
    "solar lentigo": "bkl", "lichenoid keratosis": "bkl", "lichen planus like keratosis": "bkl", "lplk": "bkl",
    # bcc
    "basal cell carcinoma": "bcc",
    # akiec
    "ak": "akiec", "actinic keratosis": "akiec", "actinic keratoses": "akiec", "solar keratosis": "akiec",
    "intraepithelial carcinoma": "akiec", "bowens disease": "akiec", "bowen disease": "akiec",
    "squamous cell carcinoma in situ": "akiec",
    "actinic keratoses and intraepithelial carcinoma": "akiec",
    # vasc
    "vascular lesion": "vasc", "vascular lesions": "vasc", "vascular": "vasc", "angioma": "vasc",
    "angiokeratoma": "vasc", "hemangioma": "vasc", "haemangioma": "vasc", "pyogenic granuloma": "vasc",
    "hemorrhage": "vasc", "haemorrhage": "vasc",
    # df
    "dermatofibroma": "df",
    # scc
    "squamous cell carcinoma": "scc", "squamous cell carcinoma, invasive": "scc", "invasive squamous cell carcinoma": "scc",
    # unk
    "unknown": "unk", "other": "unk", "none of the others": "unk",
    "cafe au lait macule": "unk", "atypical melanocytic proliferation": "unk",
}


def normalize_label(value: object) -> str:
    """Lower-case, drop apostrophes, turn '_'/'-' into spaces, collapse whitespace."""
    s = str(value).strip().lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", s)).strip()


_LOOKUP = {normalize_label(k): v for k, v in SYNONYMS.items()} | {c: c for c in CLASS_NAMES}


def canonical_class(value: object) -> str | None:
    """The canonical class name for ``value`` (a name or documented synonym), else None."""
    return _LOOKUP.get(normalize_label(value))


def valid_labels_hint() -> str:
    return f"valid: {', '.join(CLASS_NAMES)} (or a synonym listed in augforge.data.SYNONYMS / README 'Data')"


def records_labels_hint(labels) -> str:
    """The fix for a dataset plugin whose ``records()`` labels are not canonical class names."""
    mapped = {v: canonical_class(v) for v in labels if canonical_class(v)}
    how = f" (e.g. {', '.join(f'{k!r} -> {v!r}' for k, v in mapped.items())})" if mapped else ""
    return (f"records() must return canonical names: {', '.join(CLASS_NAMES)}; map synonyms with "
            f"augforge.data.canonical_class{how}")


def parse_classes(classes: list[str] | str | None) -> list[str] | None:
    """``"mel,bcc"`` or ``["melanoma", "BCC"]`` -> canonical names; None/""/[] -> None (all)."""
    if classes is None:
        return None
    items = [c for c in (classes.split(",") if isinstance(classes, str) else classes)]
    items = [str(c).strip() for c in items if str(c).strip()]
    if not items:
        return None
    out = []
    for c in items:
        name = canonical_class(c)
        if name is None:
            raise ConfigError(f"unknown class {c!r}; {valid_labels_hint()}")
        if name not in out:
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# Arrays

#: bump when decoding/resizing/scoring changes, so old caches are not reused
PIPELINE_VERSION = 2
SKIPPED_COLUMNS = ["file", "row", "reason", "label"]


@dataclass
class LesionArrays:
    """Decoded images ``uint8[N, H, W, 3]`` with labels; ``meta`` row i describes image i.

    ``skipped`` lists what was left out (file, row, reason): unreadable files and bad rows
    (with skip_bad) and images dropped by the filters.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    meta: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SKIPPED_COLUMNS))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, index: np.ndarray) -> "LesionArrays":
        return LesionArrays(
            self.images[index], self.labels[index], self.class_names, self.meta.iloc[index].reset_index(drop=True), self.skipped
        )

    def image_set(self) -> ImageSet:
        return ImageSet(np.ascontiguousarray(self.images), self.labels, self.class_names, self.meta["group"].to_numpy())


def square_resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize with a Lanczos filter (antialiased downscale)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(rgb[top : top + s, left : left + s]))
    if s == size:
        return np.asarray(crop, dtype=np.uint8)
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8)


def build_dataset(cfg) -> Dataset:
    """Build ``cfg.data.name`` with ``cfg.dataset`` kwargs; passes ``cfg.data.skip_bad`` on."""
    kwargs = dict(cfg.dataset)
    if cfg.data.skip_bad and "skip_bad" in registry.signature_params(registry.get("dataset", cfg.data.name)):
        kwargs.setdefault("skip_bad", True)
    return registry.build("dataset", cfg.data.name, **kwargs)


def cache_root(cfg) -> Path:
    """``$AUGFORGE_CACHE_DIR`` when set, else ``cfg.data.cache_dir``."""
    return Path(envvars.get("AUGFORGE_CACHE_DIR") or cfg.data.cache_dir)


def cache_dir_for(cfg, dataset: Dataset) -> Path:
    from augforge.data import filters
    size = int(cfg.data.image_size)
    parts = [dataset.name, dataset.fingerprint(), size, bool(cfg.data.skip_bad), PIPELINE_VERSION, filters.VERSION]
    key = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]
    return cache_root(cfg) / f"{dataset.name}-{size}px-{key}"


def _skips_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=SKIPPED_COLUMNS).fillna("")
    return df.astype(str)


def _decode_one(dataset: Dataset, record: dict, size: int, default_loader: bool):
    """Decode one record: (image S x S x 3, framed score, marks score) or a DataError."""
    from augforge.data import filters
    from augforge.imageio import read_rgb

    if default_loader and record.get("source"):
        rgb = read_rgb(record["source"], min_side=2 * size)  # JPEG DCT scaling, still >= 2x oversampled
    else:
        rgb = dataset.load_image(pd.Series(record))
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        got = f"{getattr(rgb, 'dtype', type(rgb))}{getattr(rgb, 'shape', '')}"
        raise DataError(f"dataset {dataset.name!r}: load_image({record['image_id']}) returned {got}, want uint8[H, W, 3]")
    if min(rgb.shape[:2]) < 8:
        where = record.get("source") or record["image_id"]
        raise DataError(f"{where}: image is only {rgb.shape[1]}x{rgb.shape[0]} pixels; replace it or pass --skip-bad")
    return (square_resize(rgb, size), *filters.scores(rgb))


@contextmanager
def _progress(total: int, description: str, enabled: bool):
    """Yield ``advance()`` for a rich progress bar on stderr (a no-op when disabled)."""
    if not enabled:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def _decode_workers(n: int) -> int:
    # PIL releases the GIL while decoding and resizing, so threads scale without pickling.
    return 1 if n < 256 else max(1, min(8, os.cpu_count() or 1))


def _write_cache(dataset: Dataset, records: pd.DataFrame, size: int, skip_bad: bool, target: Path, progress: bool) -> None:
    """Decode all records into ``target`` (atomically: a temp folder renamed at the end)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    n = len(records)
    # all.npy is a memory map: running out of disk while filling it kills the process (SIGBUS), so check first
    envvars.check_free_space(
        target.parent, n * size * size * 3, f"the decode cache of {n} images at {size}px",
        "free space, point AUGFORGE_CACHE_DIR at a bigger disk, or lower data.image_size / dataset.max_per_class",
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        images = np.lib.format.open_memmap(tmp / "all.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
        ok = np.zeros(n, bool)
        scores = np.full((n, 2), np.nan, np.float32)
        skipped: list[dict] = []
        rows = records.to_dict("records")

        default_loader = type(dataset).load_image is Dataset.load_image

        def work(i):
            try:
                return i, _decode_one(dataset, rows[i], size, default_loader), None
            except DataError as exc:
                return i, None, exc

        workers = _decode_workers(n)
        with _progress(n, f"decoding {dataset.name} ({n} images, once)", progress) as advance:
            pool = ThreadPoolExecutor(workers) if workers > 1 else None
            try:
                results = pool.map(work, range(n), chunksize=32) if pool else map(work, range(n))
                for i, out, err in results:
                    advance()
                    if err is not None:
                        if not skip_bad:
                            raise err
                        rec = rows[i]
                        skipped.append({"file": rec.get("source") or "", "row": rec.get("row", rec["image_id"]),
                                        "reason": str(err), "label": rec["label"]})
                        continue
                    images[i], scores[i, 0], scores[i, 1] = out
                    ok[i] = True
            finally:
                if pool:
                    pool.shutdown(cancel_futures=True)
        images.flush()
        del images
        meta = records.copy()
        meta["framed_score"], meta["marks_score"] = scores[:, 0].round(4), scores[:, 1].round(5)
        if ok.all():
            os.replace(tmp / "all.npy", tmp / "images.npy")
        else:
            envvars.check_free_space(tmp, int(ok.sum()) * size * size * 3, "the decode cache without skipped images",
                                     "free space or point AUGFORGE_CACHE_DIR at a bigger disk")
            src = np.load(tmp / "all.npy", mmap_mode="r")
            dst = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(int(ok.sum()), size, size, 3))
            dst[:] = src[ok]
            dst.flush()
            del src, dst
            os.remove(tmp / "all.npy")
            meta = meta[ok]
        meta.to_csv(tmp / "meta.csv", index=False)
        _skips_frame(skipped).to_csv(tmp / "skipped.csv", index=False)
        info = {"dataset": dataset.name, "config": getattr(dataset, "config", {}), "image_size": size, "n": int(ok.sum()),
                "skipped": len(skipped), "pipeline_version": PIPELINE_VERSION}
        (tmp / "info.json").write_text(json.dumps(info, indent=2, default=str))
        try:
            os.replace(tmp, target)  # atomic: a reader sees no cache or a whole one
        except OSError:
            if not (target / "images.npy").exists():
                raise
            # another process finished the same cache first; theirs is identical
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_meta(path: Path) -> pd.DataFrame:
    header = pd.read_csv(path, nrows=0).columns
    key_cols = [c for c in ("image_id", "label", "group", "source", "row") if c in header]
    na = {c: [""] for c in header if c not in key_cols}
    meta = pd.read_csv(path, dtype={c: str for c in key_cols}, keep_default_na=False, na_values=na)
    return meta


def load_arrays(cfg, progress: bool = True) -> LesionArrays:
    """Decode every image of the configured dataset once and cache it; later calls memory-map.

    With ``cfg.data.skip_bad`` unreadable files and bad rows are skipped and listed in
    ``skipped`` (also ``skipped.csv`` in the cache folder); otherwise the first one raises
    ``DataError``. ``cfg.data.drop_framed`` / ``drop_marks`` drop images the filters flag
    (``augforge.data.filters``), listed in ``skipped`` with their score.
    """
    from augforge.data import filters
    dataset = build_dataset(cfg)
    records = dataset.records()
    size = check_image_size(cfg.data.image_size)
    if len(records) == 0:
        raise DataError(f"dataset {dataset.name!r} has no images with the given options {getattr(dataset, 'config', {})}")
    unknown = sorted(set(records["label"]) - set(CLASS_NAMES))
    if unknown:
        raise DataError(f"dataset {dataset.name!r}: records() returned label(s) {unknown}; {records_labels_hint(unknown)}")
    cache = cache_dir_for(cfg, dataset)
    if not (cache / "images.npy").exists():
        _write_cache(dataset, records, size, bool(cfg.data.skip_bad), cache, progress)
    images = np.load(cache / "images.npy", mmap_mode="r")
    meta = _read_meta(cache / "meta.csv")
    skips = [_skips_frame(getattr(dataset, "skipped", []) or []), _skips_frame(pd.read_csv(cache / "skipped.csv", dtype=str, keep_default_na=False).to_dict("records"))]
    keep = np.ones(len(meta), bool)
    drops: list[dict] = []
    for flag, col, threshold, what in (
        (cfg.data.drop_framed, "framed_score", filters.FRAMED_THRESHOLD, "round microscope frame"),
        (cfg.data.drop_marks, "marks_score", filters.MARKS_THRESHOLD, "ink mark / ruler"),
    ):
        if flag:
            hit = meta[col].to_numpy() >= threshold
            for i in np.flatnonzero(hit & keep):
                drops.append({"file": meta.at[i, "source"], "row": meta.at[i, "image_id"], "reason": f"dropped: {what} (score {meta.at[i, col]:.3f} >= {threshold})", "label": meta.at[i, "label"]})
            keep &= ~hit
    conflicts = conflicting_lesions(meta[keep])
    if conflicts and cfg.data.skip_bad:
        for i in np.flatnonzero(keep & meta["lesion_id"].astype(str).isin(conflicts).to_numpy()):
            lesion = str(meta.at[i, "lesion_id"])
            drops.append({"file": meta.at[i, "source"], "row": meta.at[i, "image_id"], "label": meta.at[i, "label"],
                          "reason": f"dropped: lesion {lesion} has conflicting diagnoses ({', '.join(conflicts[lesion])})"})
            keep[i] = False
    elif conflicts:
        shown = ", ".join(f"{k}: {'/'.join(v)}" for k, v in list(conflicts.items())[:5])
        print(f"warning: {len(conflicts)} lesion(s) with conflicting diagnoses ({shown}{', ...' if len(conflicts) > 5 else ''}) "
              f"in dataset {dataset.name!r}; each stays whole in one split; fix the labels or pass --skip-bad to drop them",
              file=sys.stderr)
    skips.append(_skips_frame(drops))
    if not keep.all():
        index = np.flatnonzero(keep)
        images, meta = images[index], meta.iloc[index].reset_index(drop=True)
    present = set(meta["label"])
    class_names = [c for c in CLASS_NAMES if c in present]
    labels = np.array([class_names.index(x) for x in meta["label"]], dtype=np.int64)
    skipped = pd.concat([s for s in skips if len(s)], ignore_index=True) if any(len(s) for s in skips) else _skips_frame([])
    return LesionArrays(images, labels, class_names, meta, skipped)


def conflicting_lesions(meta: pd.DataFrame) -> dict[str, list[str]]:
    """``lesion_id`` -> its labels, for lesions whose images carry more than one diagnosis.

    Only the ``lesion_id`` column counts (HAM10000, ISIC): a patient group may hold lesions
    of several classes, one lesion may not.
    """
    if "lesion_id" not in meta.columns or not len(meta):
        return {}
    frame = meta[["lesion_id", "label"]].astype(str)
    frame = frame[frame["lesion_id"] != ""]
    labels = frame.groupby("lesion_id", sort=True)["label"].agg(lambda x: sorted(set(x)))
    return {k: v for k, v in labels.items() if len(v) > 1}


# --------------------------------------------------------------------------------------------
# Splits


def make_splits(arrays: LesionArrays, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Lesion-grouped, class-stratified, seed-deterministic split into train/val/test.

    Every image of a group (lesion/patient) lands in the same split. Per class, the groups
    (labelled by their rarest class when mixed) are shuffled with ``seed`` and dealt to test,
    then val, while that brings the split's image count closer to its share of the class.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1), sum below 1")
    groups = arrays.meta["group"].astype(str).to_numpy()
    labels = np.asarray(arrays.labels)
    counts = np.bincount(labels, minlength=len(arrays.class_names))
    frame = pd.DataFrame({"group": groups, "label": labels})
    # a mixed group counts for its rarest class: rare classes are the hard ones to stratify
    g_label = frame.assign(n=counts[labels]).sort_values(["n", "label"]).groupby("group", sort=True)["label"].first()
    g_size = frame.groupby("group", sort=True).size()
    rng = np.random.default_rng(seed)
    which: dict[str, str] = {}
    for k in sorted(g_label.unique()):
        gs = np.array(sorted(g_label.index[g_label.to_numpy() == k]))
        rng.shuffle(gs)
        total = int(g_size[gs].sum())
        targets = {"test": total * test_fraction, "val": total * val_fraction}
        have = {"test": 0, "val": 0}
        for g in gs:
            sz = int(g_size[g])
            dest = "train"
            for s in ("test", "val"):
                if abs(have[s] + sz - targets[s]) < abs(have[s] - targets[s]):
                    dest = s
                    break
            if dest != "train":
                have[dest] += sz
            which[g] = dest
    assign = np.array([which[g] for g in groups])
    return {s: np.flatnonzero(assign == s) for s in ("train", "val", "test")}


def splits_frame(arrays: LesionArrays, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per image: image_id, label, group, split, source."""
    split = np.empty(len(arrays), dtype=object)
    for name, idx in splits.items():
        split[idx] = name
    m = arrays.meta
    return pd.DataFrame({"image_id": m["image_id"], "label": m["label"], "group": m["group"], "split": split, "source": m["source"]})


def load_splits(cfg, out_dir: str | os.PathLike | None = None, progress: bool = True) -> tuple[LesionArrays, dict[str, np.ndarray]]:
    """``load_arrays`` + ``make_splits``; with ``out_dir``, write ``splits.csv`` and ``skipped.csv`` there."""
    arrays = load_arrays(cfg, progress=progress)
    splits = make_splits(arrays, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_csv(splits_frame(arrays, splits), out / "splits.csv")
        _atomic_csv(arrays.skipped, out / "skipped.csv")
    return arrays, splits


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Sampling and augmentation


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
