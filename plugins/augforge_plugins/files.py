"""The common part of the file-based datasets: reading CSV indexes, finding image files, labels through one vocabulary.

Labels go through augforge.data.CLASS_NAMES and its documented SYNONYMS; a value outside it is a
DataError naming the file, line and value, or with skip_bad=True a counted skip listed in
self.skipped (the core writes it to skipped.csv). Never a guessed label.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.data import canonical_class, parse_classes, valid_labels_hint
from augforge.errors import ConfigError, DataError
from augforge.imageio import IMAGE_EXTENSIONS
from augforge.interfaces import Dataset


RECORD_COLUMNS = ["image_id", "label", "group", "source", "row"]


class FileDataset(Dataset):
    """Shared machinery: class selection, per-class cap, skips, cached records."""

    def __init__(self, *, root: str, classes=None, max_per_class: int = 0, seed: int = 0, skip_bad: bool = False):
        self.root = Path(os.path.expanduser(str(root)))
        self.classes = parse_classes(classes)
        if max_per_class is not None and int(max_per_class) < 0:
            raise ConfigError(f"max_per_class={max_per_class}: use 0 (no cap) or a positive number")
        self.max_per_class = int(max_per_class or 0)
        self.seed = int(seed)
        self.skip_bad = bool(skip_bad)
        self.skipped: list[dict] = []
        self._records: pd.DataFrame | None = None

    # -- subclasses implement ------------------------------------------------------------
    def scan(self) -> pd.DataFrame:
        """All usable rows (RECORD_COLUMNS + metadata); report bad ones with ``self.bad``."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------
    def bad(self, file: str | os.PathLike, row: str, message: str, fix: str, label: str = "") -> None:
        """Raise ``DataError(message; fix)``, or with skip_bad record a counted skip."""
        if not self.skip_bad:
            raise DataError(f"{message}; {fix} (or pass --skip-bad to skip and report it)")
        self.skipped.append({"file": str(file), "row": str(row), "reason": message, "label": label or ""})

    def records(self) -> pd.DataFrame:
        if self._records is None:
            self.skipped = []
            df = self.scan()
            if self.classes is not None:
                df = df[df["label"].isin(self.classes)]
            if self.max_per_class:
                rng = np.random.default_rng(self.seed)
                keep = []
                for _, idx in df.groupby("label", sort=True).groups.items():
                    idx = np.array(sorted(idx))
                    keep.extend(idx if len(idx) <= self.max_per_class else rng.choice(idx, self.max_per_class, replace=False))
                df = df.loc[sorted(keep)]
            self._records = df.reset_index(drop=True)
        return self._records

    # -- helpers -------------------------------------------------------------------------
    def read_csv(self, path: Path, required: list[str], what: str) -> pd.DataFrame:
        """Read a CSV as strings; fail naming the missing column(s) and the ones found."""
        if not path.is_file():
            raise DataError(f"{path}: not found; {what} needs it (check --root)")
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path}: empty CSV file; {what} needs a header with {', '.join(required)}") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV ({exc}); fix the file") from None
        df.columns = [c.strip() for c in df.columns]
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(df.columns) or '(none)'}. "
                f"{what} needs {', '.join(required)}"
            )
        for c in df.columns:
            df[c] = df[c].str.strip()
        df["row"] = [f"line {i + 2}" for i in range(len(df))]  # line 1 is the header
        return df

    def drop_duplicate_ids(self, df: pd.DataFrame, csv: Path, id_col: str) -> pd.DataFrame:
        """Repeated ids: error naming both lines; with skip_bad keep one only if labels agree."""
        dup = df[id_col].duplicated(keep=False)
        if not dup.any():
            return df
        drop = np.zeros(len(df), bool)
        for image_id, grp in df[dup].groupby(id_col, sort=False):
            lines = ", ".join(grp["row"])
            agree = grp["label"].nunique() == 1
            self.bad(csv, lines, f"{csv.name}: image id {image_id!r} appears on {lines}"
                     + ("" if agree else f" with different labels ({', '.join(grp['label'])})"),
                     "keep one row per image", label=grp["label"].iloc[0] if agree else "")
            pos = [df.index.get_loc(i) for i in grp.index]
            drop[pos if not agree else pos[1:]] = True
        return df[~drop]

    def map_labels(self, df: pd.DataFrame, col: str, csv: Path, extra: dict[str, str] | None = None, shown: str = "") -> pd.DataFrame:
        """Map column ``col`` (called ``shown`` in messages) into ``label``; unknown values are bad rows."""
        extra = {k.strip().lower(): v for k, v in (extra or {}).items()}
        labels, ok = [], []
        for value, row, image_id in zip(df[col], df["row"], df["image_id"]):
            name = canonical_class(extra[value.strip().lower()]) if value.strip().lower() in extra else canonical_class(value)
            if name is None:
                what = f"empty {shown or col}" if not value else f"unknown {shown or col} {value!r}"
                self.bad(csv, row, f"{csv.name} {row} (image {image_id}): {what}", f"{valid_labels_hint()}; fix the value")
            labels.append(name)
            ok.append(name is not None)
        df = df.assign(label=labels)
        return self.selected(df[np.array(ok, bool)])

    def selected(self, df: pd.DataFrame) -> pd.DataFrame:
        """Only the chosen classes (before images are looked up: others cannot fail)."""
        return df if self.classes is None else df[df["label"].isin(self.classes)]

    def attach_images(self, df: pd.DataFrame, index: dict[str, list[str]], where: str, csv: Path) -> pd.DataFrame:
        """Set ``source`` from an id -> files index; missing or ambiguous files are bad rows."""
        sources, ok = [], []
        for image_id, row, label in zip(df["image_id"], df["row"], df["label"]):
            paths = index.get(image_id, [])
            if len(paths) == 1:
                sources.append(paths[0])
                ok.append(True)
                continue
            if not paths:
                self.bad(csv, row, f"{csv.name} {row}: no image file for {image_id!r} (looked for {image_id}.jpg/.png/... in {where})",
                         "put the file there or remove the row", label)
            else:
                self.bad(csv, row, f"{csv.name} {row}: image {image_id!r} found more than once: {', '.join(paths)}",
                         "keep one copy", label)
            sources.append("")
            ok.append(False)
        df = df.assign(source=sources)
        return df[np.array(ok, bool)]


def index_images(dirs: list[Path], recursive: bool) -> dict[str, list[str]]:
    """File stem -> image file paths (by extension) under ``dirs``; hidden files/folders skipped."""
    index: dict[str, list[str]] = {}
    seen: set[str] = set()
    for d in dirs:
        if not d.is_dir():
            continue
        top = os.path.normpath(str(d))
        walker = os.walk(top) if recursive else [(top, [], os.listdir(top))]
        for dirpath, dirnames, filenames in walker:
            dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
            for name in sorted(filenames):
                stem, ext = os.path.splitext(name)
                if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                if path not in seen:
                    seen.add(path)
                    index.setdefault(stem, []).append(path)
    return index
