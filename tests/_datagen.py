"""Tiny dataset trees in every real layout, written into a test's tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

HAM_CLASSES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]


def write_image(path: Path, colour=(180, 120, 90), size=(40, 30), fmt: str | None = None, seed: int = 0) -> Path:
    """A small lesion-ish picture: a disc of ``colour`` on skin, some noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3), np.float32)
    img[:] = (225, 180, 160)
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    img[disc] = colour
    img += rng.normal(0, 4, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, format=fmt)
    return path


def class_colour(label: str) -> tuple[int, int, int]:
    k = HAM_CLASSES.index(label) if label in HAM_CLASSES else 7
    return (40 + 25 * k, 160 - 15 * k, 60 + 20 * (k % 3))


def make_ham(root: Path, layout: str = "parts", per_class: dict[str, int] | None = None, views: int = 2) -> pd.DataFrame:
    """HAM10000 layout: metadata CSV + images in part_1/part_2 ("parts"), images/ or root ("flat")."""
    per_class = per_class or {"nv": 6, "mel": 4, "bcc": 4}
    rows, n = [], 0
    for label, count in per_class.items():
        for i in range(count):
            lesion = f"HAM_{label}_{i // views:04d}"
            image_id = f"ISIC_{n:07d}"
            rows.append({"lesion_id": lesion, "image_id": image_id, "dx": label, "dx_type": "histo", "age": "50.0",
                         "sex": "male", "localization": "back"})
            folder = {"parts": f"HAM10000_images_part_{1 + n % 2}", "images": "images", "flat": "."}[layout]
            write_image(root / folder / f"{image_id}.jpg", class_colour(label), seed=n)
            n += 1
    df = pd.DataFrame(rows)
    df.to_csv(root / "HAM10000_metadata.csv", index=False)
    return df


def make_isic_archive(root: Path) -> pd.DataFrame:
    """ISIC archive export: metadata.csv (isic_id, diagnosis, benign_malignant, patient_id, lesion_id) + images/."""
    diags = ["nevus", "melanoma", "basal cell carcinoma", "seborrheic keratosis", "actinic keratosis", "Solar lentigo"]
    rows = []
    for i in range(12):
        d = diags[i % len(diags)]
        bm = "malignant" if d in ("melanoma", "basal cell carcinoma") else "benign"
        rows.append({"isic_id": f"ISIC_{i:07d}", "attribution": "test", "benign_malignant": bm, "diagnosis": d,
                     "patient_id": f"IP_{i // 3:03d}", "lesion_id": f"IL_{i // 2:03d}"})
        write_image(root / "images" / f"ISIC_{i:07d}.jpg", class_colour("mel" if d == "melanoma" else "nv"), seed=i)
    df = pd.DataFrame(rows)
    df.to_csv(root / "metadata.csv", index=False)
    return df


def make_isic2019(root: Path, akiec_column: str = "AK") -> pd.DataFrame:
    """ISIC 2019 challenge: one-hot ground truth + ISIC_2019_Training_Metadata.csv (lesion_id)."""
    cols = ["MEL", "NV", "BCC", akiec_column, "BKL", "DF", "VASC", "SCC", "UNK"]
    if akiec_column == "AKIEC":  # 2018 task 3 has no SCC/UNK
        cols = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    rows, meta = [], []
    for i in range(len(cols) * 2):
        hot = cols[i % len(cols)]
        rows.append({"image": f"ISIC_{i:07d}", **{c: "1.0" if c == hot else "0.0" for c in cols}})
        meta.append({"image": f"ISIC_{i:07d}", "age_approx": "55", "anatom_site_general": "back",
                     "lesion_id": f"BCN_{i // 2:07d}" if i % 3 else "", "sex": "female"})
        write_image(root / "ISIC_2019_Training_Input" / f"ISIC_{i:07d}.jpg", seed=i)
    df = pd.DataFrame(rows)
    df.to_csv(root / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame(meta).to_csv(root / "ISIC_2019_Training_Metadata.csv", index=False)
    return df


def make_isic2020(root: Path, with_diagnosis: bool = True) -> pd.DataFrame:
    """ISIC 2020 challenge: image_name, patient_id, lesion_id, ..., diagnosis, benign_malignant, target; jpeg/train/."""
    diags = ["unknown", "nevus", "melanoma", "seborrheic keratosis", "lentigo NOS", "melanoma"]
    rows = []
    for i, d in enumerate(diags * 2):
        if d == "lentigo NOS" and with_diagnosis:
            d = "solar lentigo"
        rows.append({"image_name": f"ISIC_{i:07d}", "patient_id": f"IP_{i // 4:07d}", "lesion_id": f"IL_{i:07d}", "sex": "male",
                     "age_approx": "45.0", "anatom_site_general_challenge": "torso", "diagnosis": d,
                     "benign_malignant": "malignant" if d == "melanoma" else "benign", "target": "1" if d == "melanoma" else "0"})
        write_image(root / "jpeg" / "train" / f"ISIC_{i:07d}.jpg", seed=i)
    df = pd.DataFrame(rows)
    if not with_diagnosis:
        df = df.drop(columns=["diagnosis"])
    df.to_csv(root / "ISIC_2020_Training_GroundTruth.csv", index=False)
    return df


def make_folder(root: Path, per_class: dict[str, int] | None = None) -> None:
    """One sub-folder per class, folder names as synonyms: melanoma/, nevus/, BCC/."""
    per_class = per_class or {"melanoma": 4, "nevus": 5, "BCC": 3}
    n = 0
    for folder, count in per_class.items():
        for i in range(count):
            ext = ".png" if i % 2 else ".jpg"
            write_image(root / folder / f"img_{n:03d}{ext}", seed=n)
            n += 1
