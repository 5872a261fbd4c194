"""The images a study draws from (a folder, a dataset, an ONNX generator) and how each becomes a blinded PNG.

Blinding: decode to RGB, centre crop, Lanczos resize to ``size`` px, optionally one JPEG round trip
at a fixed quality, then an *uncompressed* PNG (zlib level 0, no ancillary chunks), so every file of
a study has exactly the same size and header bytes (see ``study.py``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from augforge.errors import ConfigError, DataError


@dataclass(frozen=True)
class Item:
    """One candidate image: its class, lesion group, provenance and a loader for its pixels."""

    label: str
    group: str
    source: str
    load: Callable[[], np.ndarray]


def _class(value, where: str) -> str:
    """The canonical class name (``augforge.data`` vocabulary and synonyms) or a DataError."""
    from augforge.data import canonical_class, valid_labels_hint

    name = canonical_class(value)
    if name is None:
        raise DataError(f"{where}: unknown class {str(value)!r}; {valid_labels_hint()}")
    return name


def folder_items(root: str | os.PathLike) -> list[Item]:
    """Images of a folder, labelled by a metadata CSV (image_id + dx) or by class sub-folders.

    Understands ``augforge generate`` output (metadata.csv + PNGs) and HAM10000's own layout
    (HAM10000_metadata.csv + images/); a ``lesion_id`` column, when present, is the group.
    """
    import pandas as pd

    from augforge.imageio import IMAGE_EXTENSIONS, read_rgb

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    csvs = sorted(p for p in root.glob("*.csv") if "metadata" in p.name.lower())
    items: list[Item] = []
    if csvs:
        meta = pd.read_csv(csvs[0], dtype=str, keep_default_na=False)
        missing = {"image_id", "dx"} - set(meta.columns)
        if missing:
            raise DataError(f"{csvs[0]}: needs columns image_id and dx (missing {sorted(missing)})")
        by_stem: dict[str, list[Path]] = {}
        for p in files:
            by_stem.setdefault(p.stem, []).append(p)
        for i, row in meta.iterrows():
            paths = by_stem.get(row["image_id"], [])
            if len(paths) != 1:
                raise DataError(
                    f"{csvs[0]} row {i + 2}: image_id {row['image_id']!r} matches "
                    + (f"{len(paths)} files ({', '.join(map(str, paths))}); ids must name one file" if paths else f"no image file under {root}")
                )
            path = paths[0]
            group = row.get("lesion_id") or row["image_id"]
            items.append(Item(_class(row["dx"], f"{csvs[0]} row {i + 2}"), group, str(path), lambda p=path: read_rgb(p)))
        return items
    for p in files:
        if p.parent == root:
            raise DataError(
                f"{p}: no metadata CSV (image_id, dx) in {root}, so every image must sit in a class sub-folder"
            )
        label = _class(p.relative_to(root).parts[0], f"{p}: class sub-folder")
        items.append(Item(label, str(p), str(p), lambda p=p: read_rgb(p)))
    return items


def dataset_items(cfg) -> list[Item]:
    """Records of a dataset plugin (``cfg.data.name`` with ``cfg.dataset`` kwargs)."""
    from augforge.data import build_dataset

    dataset = build_dataset(cfg)
    records = dataset.records()
    return [
        Item(_class(r["label"], f"dataset {dataset.name}"), str(r["group"]), f"{dataset.name}:{r['image_id']}",
             lambda r=r: dataset.load_image(r))
        for _, r in records.iterrows()
    ]


def onnx_items(onnx_path: str | os.PathLike, per_class: int, seed: int, classes: Iterable[str] = ()) -> list[Item]:
    """``per_class`` images of each of ``classes`` (default: every class) from an exported
    generator, through the torch-free ``augforge.runtime``."""
    try:
        from augforge.runtime import SyntheticLesions
    except ImportError as exc:
        raise ConfigError(f"--onnx needs augforge.runtime ({exc}); pass a folder from `augforge generate` instead") from None
    from augforge.data import parse_classes

    classes = parse_classes(list(classes))
    try:
        if classes:
            ds = SyntheticLesions(str(onnx_path), counts={c: per_class for c in classes}, seed=seed)
        else:
            ds = SyntheticLesions(str(onnx_path), per_class=per_class, seed=seed)
    except ValueError as exc:  # the runtime's RuntimeModelError: bad file or unknown class
        raise DataError(f"{onnx_path}: {exc}") from None
    names = list(ds.class_names)
    items = []
    for i in range(len(ds)):
        image, label = ds[i]
        image = np.asarray(image, dtype=np.uint8)
        items.append(Item(_class(names[int(label)], str(onnx_path)), f"onnx:{i}", f"{Path(onnx_path).name}#{i}", lambda x=image: x))
    return items


def pick(items: list[Item], classes: list[str], per_class: int, rng: np.random.Generator, what: str) -> list[Item]:
    """``per_class`` random items of each class, at most one per lesion group while groups last."""
    out = []
    for c in classes:
        pool = [it for it in items if it.label == c]
        if len(pool) < per_class:
            raise DataError(f"{what}: class {c!r} has {len(pool)} image(s), --per-class asks for {per_class}")
        order = rng.permutation(len(pool))
        seen, first, rest = set(), [], []
        for i in order:
            (rest if pool[i].group in seen else first).append(pool[i])
            seen.add(pool[i].group)
        out += (first + rest)[:per_class]
    return out


# --------------------------------------------------------------------------------------------
# Encoding


def encode_png(rgb: np.ndarray, size: int, jpeg_quality: int | None = None) -> bytes:
    """The one re-encoding every study image goes through (see the module docstring)."""
    from augforge.data import square_resize

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"expected uint8[H, W, 3] RGB pixels, got {rgb.dtype}{list(rgb.shape)}")
    if rgb.shape[:2] != (size, size):
        rgb = square_resize(rgb, size)
    im = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if jpeg_quality:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=jpeg_quality, subsampling=0)
        im = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    im.save(out, "PNG", compress_level=0)
    return out.getvalue()


def png_chunks(data: bytes) -> list[tuple[str, int]]:
    """(type, length) of every chunk of a PNG file, for blinding checks."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    out, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        out.append((data[pos + 4 : pos + 8].decode("latin-1"), length))
        pos += 12 + length
    return out
