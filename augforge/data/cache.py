"""Decode once, crop + resize, score, cache as uint8 arrays keyed by the dataset's fingerprint.

``load_arrays(cfg)`` builds the configured dataset plugin, decodes every image once
(centre-crop to a square, Lanczos resize), scores it with the paper-A filters, and caches the
result as ``uint8[N, S, S, 3]`` in ``images.npy``; later calls memory-map that file and never
touch a JPEG.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from augforge import envvars, registry
from augforge.envvars import check_image_size
from augforge.errors import DataError
from augforge.interfaces import Dataset, ImageSet
from augforge.data.classes import CLASS_NAMES, records_labels_hint


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
