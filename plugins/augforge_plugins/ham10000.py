"""The ham10000 dataset: HAM10000 (ISIC 2018 task 3) in its distributed layout."""

from __future__ import annotations


import pandas as pd

from augforge.errors import DataError
from augforge_plugins.files import RECORD_COLUMNS, FileDataset, index_images


class HAM10000(FileDataset):
    """HAM10000 (ISIC 2018 task 3) in its distributed layout.

    ``root`` holds ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex,
    localization) and the images in ``HAM10000_images_part_1/`` + ``HAM10000_images_part_2/``,
    ``images/``, ``HAM10000_images/`` or ``root`` itself. ``root`` may also be the CSV file.
    Splits group by ``lesion_id``.
    """

    name = "ham10000"
    description = "HAM10000: HAM10000_metadata.csv + image folders; grouped by lesion_id"
    CSV = "HAM10000_metadata.csv"
    IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "images", "HAM10000_images", ".")

    def __init__(self, *, root: str, classes=None, max_per_class: int = 0, seed: int = 0, skip_bad: bool = False):
        super().__init__(root=root, classes=classes, max_per_class=max_per_class, seed=seed, skip_bad=skip_bad)

    def scan(self) -> pd.DataFrame:
        csv = self.root if self.root.suffix.lower() == ".csv" else self.root / self.CSV
        base = csv.parent
        if not base.is_dir():
            raise DataError(f"{base}: no such folder; --root must be the HAM10000 folder (with {self.CSV})")
        df = self.read_csv(csv, ["lesion_id", "image_id", "dx"], "HAM10000 metadata")
        empty = df["image_id"] == ""
        for row in df.loc[empty, "row"]:
            self.bad(csv, row, f"{csv.name} {row}: empty image_id", "fill it in or remove the row")
        df = df[~empty]
        df = self.map_labels(df, "dx", csv)
        df = self.drop_duplicate_ids(df, csv, "image_id")
        dirs = [base / d for d in self.IMAGE_DIRS]
        where = ", ".join(f"{d.name if d != base / '.' else '.'}/" for d in dirs if d.is_dir()) or f"{base} (no image folders)"
        df = self.attach_images(df, index_images(dirs, recursive=False), where, csv)
        group = df["lesion_id"].where(df["lesion_id"] != "", df["image_id"])
        extra = [c for c in df.columns if c not in RECORD_COLUMNS and c not in ("lesion_id", "dx")]
        out = pd.DataFrame({"image_id": df["image_id"], "label": df["label"], "group": group, "source": df["source"], "row": df["row"],
                            "lesion_id": df["lesion_id"], "dx": df["dx"]})
        for c in extra:
            out[c] = df[c]
        return out
