"""A self-contained example study from procedurally drawn lesions (no data, no model needed).

Used by the tests, the load benchmark and the docs screenshots. The two folders imitate the two
real inputs on purpose, differences included: "real" is HAM10000-like (200x150 JPEG with EXIF,
HAM10000_metadata.csv with lesion_id), "generated" is ``augforge generate``-like (64 px PNG
with a text chunk, metadata.csv). A study must come out blinded anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

#: per class: lesion RGB, colour spread, border irregularity
LOOKS = {
    "nv": ((125, 80, 55), 12, 0.06),
    "mel": ((85, 50, 40), 30, 0.10),
    "bkl": ((150, 110, 80), 20, 0.12),
    "bcc": ((190, 120, 120), 18, 0.10),
    "akiec": ((185, 105, 90), 20, 0.12),
    "vasc": ((170, 50, 70), 15, 0.08),
    "df": ((140, 95, 80), 10, 0.05),
}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, radius: float) -> np.ndarray:
    """Zero-mean, unit-ish noise with features about ``radius`` px wide."""
    field = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    out = np.asarray(field.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
    return (out - out.mean()) / (out.std() + 1e-6)


def draw_lesion(rng: np.random.Generator, label: str = "nv", height: int = 150, width: int = 200) -> np.ndarray:
    """One dermoscopy-like picture: skin, a soft irregular pigmented lesion, vignette."""
    colour, spread, wobble = LOOKS.get(label, LOOKS["nv"])
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    s = min(height, width)
    cy, cx = height / 2 + rng.normal(0, 0.06) * s, width / 2 + rng.normal(0, 0.06) * s
    theta = np.arctan2(yy - cy, xx - cx)
    r = rng.uniform(0.22, 0.36) * s * (1 + sum(rng.uniform(0, wobble) * np.sin(k * theta + rng.uniform(0, 6.3)) for k in range(2, 7)))
    d = np.hypot(yy - cy, xx - cx) / r
    mask = np.clip(1.25 - d, 0, 1) ** 0.7 * (1 + 0.15 * _smooth_noise(rng, height, width, s / 14))
    mask = np.clip(mask, 0, 1)[..., None]
    skin = np.array([226, 178, 150], np.float32) + rng.normal(0, 8, 3)
    lesion = np.array(colour, np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 4, 3)
    blotch = _smooth_noise(rng, height, width, s / 10)[..., None] * spread
    img = skin * (1 - mask) + (lesion + blotch) * mask
    img *= 1 + 0.025 * _smooth_noise(rng, height, width, 2.0)[..., None]  # skin texture
    img *= (1 - 0.35 * np.clip(np.hypot(yy - height / 2, xx - width / 2) / (0.75 * max(height, width)), 0, 1) ** 3)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_real_folder(root: str | os.PathLike, classes=("mel", "bcc"), n_per_class: int = 10, seed: int = 0) -> Path:
    """HAM10000-like: images/ISIC_*.jpg (200x150, quality 85, EXIF) + HAM10000_metadata.csv."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 1))
    rows, n = [], 0
    for c in classes:
        for i in range(n_per_class):
            image_id = f"ISIC_{9000000 + n:07d}"
            exif = Image.Exif()
            exif[0x010F], exif[0x0110] = "DermaCam", "DC-2000"  # Make, Model
            Image.fromarray(draw_lesion(rng, c)).save(root / "images" / f"{image_id}.jpg", quality=85, exif=exif)
            rows.append({"lesion_id": f"HAM_{n // 2:07d}", "image_id": image_id, "dx": c})
            n += 1
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def write_generated_folder(root: str | os.PathLike, classes=("mel", "bcc"), n_per_class: int = 10, seed: int = 0, size: int = 64) -> Path:
    """``augforge generate``-like: <image_id>.png (size px, with a text chunk) + metadata.csv."""
    from PIL import PngImagePlugin

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng((seed, 2))
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "augforge generate")
    rows = []
    for c in classes:
        for i in range(n_per_class):
            image_id = f"gen_{c}_{i:05d}"
            big = Image.fromarray(draw_lesion(rng, c, 96, 96))
            big.resize((size, size), Image.Resampling.BILINEAR).save(root / f"{image_id}.png", pnginfo=info)
            rows.append({"image_id": image_id, "dx": c})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return root


def make_study(out: str | os.PathLike, work: str | os.PathLike, per_class: int = 4, classes=("mel", "bcc"), seed: int = 0, size: int | None = None, extra: int = 2):
    """Write both folders under ``work`` and a study at ``out``; returns ``study.Created``."""
    from augforge.turing import study as st

    work = Path(work)
    real = write_real_folder(work / "real", classes, per_class + extra, seed)
    gen = write_generated_folder(work / "generated", classes, per_class + extra, seed)
    return st.create_study(
        out, st.folder_items(real), st.folder_items(gen), per_class=per_class, classes=classes, seed=seed,
        size=size, real_desc=f"folder {real}", generated_desc=f"folder {gen}",
    )
