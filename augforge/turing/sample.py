"""A self-contained example study (no data, no model needed), for tests, benchmarks and docs.

Images come from the ``synthetic-lesions`` dataset plugin (procedurally drawn, through the
registry). The two folders imitate the two real inputs on purpose, differences included:
"real" is HAM10000-like (200x150 JPEG with EXIF, ``HAM10000_metadata.csv`` with lesion_id),
"generated" is ``augforge generate``-like (64 px PNG with a text chunk, ``metadata.csv``),
drawn with another seed. A study must come out blinded anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image, PngImagePlugin


def _drawings(classes, n_per_class: int, size: int, seed: int):
    """(record, uint8 image) pairs from the synthetic-lesions plugin, class by class."""
    from augforge import registry

    ds = registry.build("dataset", "synthetic-lesions", classes=list(classes), n_per_class=n_per_class, image_size=size, seed=seed)
    for _, rec in ds.records().iterrows():
        yield rec, ds.load_image(rec)


def write_real_folder(root: str | os.PathLike, classes=("mel", "bcc"), n_per_class: int = 10, seed: int = 0) -> Path:
    """HAM10000-like: images/ISIC_*.jpg (200x150, quality 85, EXIF) + HAM10000_metadata.csv."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "DermaCam", "DC-2000"  # Make, Model
    rows = []
    for n, (rec, img) in enumerate(_drawings(classes, n_per_class, 200, seed)):
        image_id = f"ISIC_{9000000 + n:07d}"
        Image.fromarray(img[25:175]).save(root / "images" / f"{image_id}.jpg", quality=85, exif=exif)
        rows.append({"lesion_id": rec["group"], "image_id": image_id, "dx": rec["label"]})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def write_generated_folder(root: str | os.PathLike, classes=("mel", "bcc"), n_per_class: int = 10, seed: int = 0, size: int = 64) -> Path:
    """``augforge generate``-like: <image_id>.png (size px, with a text chunk) + metadata.csv."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "augforge generate")
    rows = []
    for i, (rec, img) in enumerate(_drawings(classes, n_per_class, size, seed + 1000)):
        image_id = f"gen_{rec['label']}_{i:05d}"
        Image.fromarray(img).save(root / f"{image_id}.png", pnginfo=info)
        rows.append({"image_id": image_id, "dx": rec["label"]})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def make_study(out: str | os.PathLike, work: str | os.PathLike, per_class: int = 4, classes=("mel", "bcc"), seed: int = 0,
               size: int | None = None, extra: int = 2):
    """Write both folders under ``work`` and a study at ``out``; returns ``study.Created``."""
    from augforge.turing import items as turing_items
    from augforge.turing import study as st

    work = Path(work)
    real = write_real_folder(work / "real", classes, per_class + extra, seed)
    gen = write_generated_folder(work / "generated", classes, per_class + extra, seed)
    return st.create_study(
        out, turing_items.folder_items(real), turing_items.folder_items(gen), per_class=per_class, classes=classes, seed=seed,
        size=size, real_desc=f"folder {real}", generated_desc=f"folder {gen}",
    )
