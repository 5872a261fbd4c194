"""The folder dataset: one sub-folder per class, folder names are class names or synonyms."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.data import canonical_class, valid_labels_hint
from augforge.errors import DataError
from augforge.imageio import IMAGE_EXTENSIONS
from augforge_plugins.files import RECORD_COLUMNS, FileDataset


class Folder(FileDataset):
    """One sub-folder per class: ``root/<class>/*.jpg``; folder names are class names or synonyms.

    Files may sit in nested folders inside a class folder. The image id is the path relative
    to ``root`` without extension; the group is the image (no lesion ids in this layout).
    """

    name = "folder"
    description = "one sub-folder per class (names or synonyms); no lesion grouping"

    def __init__(self, *, root: str, classes=None, max_per_class: int = 0, seed: int = 0, skip_bad: bool = False):
        super().__init__(root=root, classes=classes, max_per_class=max_per_class, seed=seed, skip_bad=skip_bad)

    def scan(self) -> pd.DataFrame:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder; --root must hold one sub-folder per class")
        rows = []
        by_stem: dict[str, list[tuple[str, Path]]] = {}
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subdirs:
            raise DataError(f"{self.root}: no class sub-folders; put images in {self.root}/<class>/ (e.g. mel/, nv/)")
        for d in subdirs:
            label = canonical_class(d.name)
            if label is None:
                self.bad(d, d.name, f"{d}: folder name {d.name!r} is not a class", f"rename it; {valid_labels_hint()}")
                continue
            if self.classes is not None and label not in self.classes:
                continue
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
                for name in sorted(filenames):
                    if name.startswith(".") or name in ("Thumbs.db", "desktop.ini"):
                        continue
                    path = Path(dirpath) / name
                    rel = path.relative_to(self.root)
                    if path.suffix.lower() not in IMAGE_EXTENSIONS:
                        self.bad(path, str(rel), f"{path}: not an image file (extension {path.suffix or 'none'})",
                                 f"move it out of the class folder; images end in {', '.join(IMAGE_EXTENSIONS)}", label)
                        continue
                    image_id = str(rel.with_suffix("")).replace(os.sep, "/")
                    rows.append({"image_id": image_id, "label": label, "group": image_id, "source": str(path), "row": str(rel), "folder": d.name})
                    by_stem.setdefault(path.stem, []).append((label, path))
        df = pd.DataFrame(rows, columns=[*RECORD_COLUMNS, "folder"])
        # the same file name under two classes is one image with two labels
        conflict = {s for s, v in by_stem.items() if len({lab for lab, _ in v}) > 1}
        if conflict:
            drop = np.zeros(len(df), bool)
            for s in sorted(conflict):
                paths = [p for _, p in by_stem[s]]
                self.bad(paths[0], s, f"{s!r} appears under several classes: {', '.join(str(p.relative_to(self.root)) for p in paths)}",
                         "an image has one label: keep it in one class folder")
                drop |= df["source"].isin([str(p) for p in paths]).to_numpy()
            df = df[~drop]
        dup = df["image_id"].duplicated(keep=False)  # a.jpg and a.png in the same folder
        if dup.any():
            drop = np.zeros(len(df), bool)
            for image_id, grp in df[dup].groupby("image_id"):
                self.bad(grp["source"].iloc[0], image_id, f"{image_id!r} has several files: {', '.join(grp['source'])}", "keep one",
                         grp["label"].iloc[0])
                drop[[df.index.get_loc(i) for i in grp.index[1:]]] = True
            df = df[~drop]
        return df.reset_index(drop=True)
