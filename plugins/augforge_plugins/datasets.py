"""File-based dataset plugins: ``ham10000``, ``isic`` and ``folder``.

Each reads a real distributed layout and returns records (image_id, label, group, source,
row + metadata); the core decodes, caches and splits. Labels go through one vocabulary
(``augforge.data.CLASS_NAMES`` and its documented ``SYNONYMS``); a value outside it is a
``DataError`` naming the file, line and value, or with ``skip_bad=True`` a counted skip
listed in ``self.skipped`` (the core writes it to ``skipped.csv``). Never a guessed label.

Common keyword arguments: ``root`` (folder, or the CSV file itself), ``classes`` (list or
comma-separated string of names/synonyms; None = all), ``max_per_class`` (0 = no cap; a
seeded random subset per class), ``seed``, ``skip_bad``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.data import CLASS_NAMES, canonical_class, parse_classes, valid_labels_hint
from augforge.errors import ConfigError, DataError
from augforge.imageio import IMAGE_EXTENSIONS
from augforge.interfaces import Dataset
from augforge.plugins import hookimpl

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


# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------

#: ISIC challenge one-hot columns -> canonical class (2018 task 3 uses AKIEC, 2019 AK)
ONEHOT = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc", "SCC": "scc", "UNK": "unk"}
ID_COLUMNS = ("isic_id", "image", "image_name", "image_id")
DIAGNOSIS_COLUMNS = ("diagnosis", "dx", "diagnosis_3")


class ISIC(FileDataset):
    """ISIC archive exports and ISIC 2018/2019/2020 challenge ground truth.

    The label CSV is ``csv`` (relative to ``root`` or absolute), or the one CSV in ``root``
    that has an id column (isic_id, image, image_name or image_id) and labels:

    - one-hot challenge columns (2019: MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK; 2018:
      AKIEC): exactly one 1 per row;
    - a diagnosis column (``diagnosis``, ``dx`` or ``diagnosis_3``; first non-empty), mapped
      through the vocabulary; ``label_map`` adds your own ``{"value": "class"}`` pairs;
      ``target`` (2020) and ``benign_malignant`` are cross-checked against it;
    - 2020's ``target`` alone: 1 -> mel, 0 -> unk (benign, type not given).

    ``benign_malignant`` alone names no class and is refused. Groups: ``patient_id`` when
    present (stricter), else ``lesion_id``, else the image; a second CSV in ``root`` with the
    id column and lesion_id/patient_id (e.g. ISIC_2019_Training_Metadata.csv) supplies them.
    Images are found by id anywhere under ``root``, or under ``images`` (a sub-folder, e.g.
    ``jpeg/train``) when copies elsewhere would make an id ambiguous.
    """

    name = "isic"
    description = "ISIC archive metadata / 2018-2020 challenge ground-truth CSVs; grouped by patient/lesion"

    def __init__(self, *, root: str, csv: str = "", images: str = "", label_map: dict | None = None, classes=None,
                 max_per_class: int = 0, seed: int = 0, skip_bad: bool = False):
        super().__init__(root=root, classes=classes, max_per_class=max_per_class, seed=seed, skip_bad=skip_bad)
        self.csv, self.images = csv, images
        self.label_map = dict(label_map or {})
        for value, target in self.label_map.items():
            if canonical_class(target) is None:
                raise DataError(f"label_map[{value!r}] = {target!r} is not a class; {valid_labels_hint()}")

    @staticmethod
    def _header(path: Path) -> list[str]:
        try:
            return [c.strip().lstrip("\ufeff") for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns]
        except Exception:
            return []

    @staticmethod
    def _has_labels(cols: list[str]) -> bool:
        return sum(c in ONEHOT for c in cols) >= 2 or any(c in cols for c in (*DIAGNOSIS_COLUMNS, "target", "benign_malignant"))

    def _find_csvs(self) -> tuple[Path, Path | None]:
        """The label CSV, and a CSV with lesion/patient ids for the same images if one is beside it."""
        if self.root.suffix.lower() == ".csv":
            return self.root, None
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such folder; --root must be the ISIC folder or its CSV")
        csvs = sorted(p for p in self.root.glob("*.csv") if not p.name.startswith("."))
        headers = {p: self._header(p) for p in csvs}
        if self.csv:
            label = [Path(self.csv) if Path(self.csv).is_absolute() else self.root / self.csv]
        else:
            label = [p for p in csvs if any(c in headers[p] for c in ID_COLUMNS) and self._has_labels(headers[p])]
        if len(label) != 1:
            found = ", ".join(p.name for p in csvs) or "none"
            raise DataError(
                f"{self.root}: {'no' if not label else 'several'} label CSV(s) found (CSV files: {found}); "
                f"name one with csv=FILE (--set dataset.csv=FILE); it needs an id column ({', '.join(ID_COLUMNS)}) "
                f"and labels (one-hot MEL,NV,...; diagnosis; or target)"
            )
        groups = [p for p in csvs if p != label[0] and any(c in headers[p] for c in ID_COLUMNS)
                  and any(c in headers[p] for c in ("lesion_id", "patient_id")) and not self._has_labels(headers[p])]
        return label[0], (groups[0] if len(groups) == 1 else None)

    def scan(self) -> pd.DataFrame:
        csv, groups_csv = self._find_csvs()
        cols = self._header(csv) if csv.is_file() else []
        id_col = next((c for c in ID_COLUMNS if c in cols), ID_COLUMNS[0])
        df = self.read_csv(csv, [id_col], "an ISIC label CSV")
        if not self._has_labels(list(df.columns)):
            raise DataError(
                f"{csv}: no label columns; found: {', '.join(c for c in df.columns if c != 'row')}. An ISIC label CSV needs "
                f"one-hot MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK columns, a diagnosis column ({', '.join(DIAGNOSIS_COLUMNS)}) or target"
            )
        df = df.rename(columns={id_col: "image_id"}) if id_col != "image_id" else df
        empty = df["image_id"] == ""
        for row in df.loc[empty, "row"]:
            self.bad(csv, row, f"{csv.name} {row}: empty {id_col}", "fill it in or remove the row")
        df = df[~empty]
        if groups_csv is not None:
            df = self._merge_groups(df, groups_csv)
        df = self._labels(df, csv)
        df = self.drop_duplicate_ids(df, csv, "image_id")
        base = csv.parent if self.root.suffix.lower() == ".csv" else self.root
        if self.images:
            base = Path(self.images) if Path(self.images).is_absolute() else base / self.images
            if not base.is_dir():
                raise DataError(f"images={self.images!r}: {base} is not a folder")
        df = self.attach_images(df, index_images([base], recursive=True), f"{base} and its sub-folders", csv)
        group = df["image_id"].copy()
        for col in ("lesion_id", "patient_id"):  # later wins: patient beats lesion
            if col in df.columns:
                group = df[col].where(df[col] != "", group)
        out = pd.DataFrame({"image_id": df["image_id"], "label": df["label"], "group": group, "source": df["source"], "row": df["row"]})
        for c in df.columns:
            if c not in out.columns and c not in ONEHOT and c != "label_value":
                out[c] = df[c]
        return out

    def _merge_groups(self, df: pd.DataFrame, groups_csv: Path) -> pd.DataFrame:
        cols = self._header(groups_csv)
        gid = next(c for c in ID_COLUMNS if c in cols)
        g = pd.read_csv(groups_csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        g.columns = [c.strip() for c in g.columns]
        keep = [c for c in ("lesion_id", "patient_id") if c in g.columns and c not in df.columns]
        if not keep:
            return df
        g = g[[gid, *keep]].drop_duplicates(gid).rename(columns={gid: "image_id"})
        return df.merge(g, on="image_id", how="left").fillna({c: "" for c in keep})

    def _labels(self, df: pd.DataFrame, csv: Path) -> pd.DataFrame:
        onehot = [c for c in df.columns if c in ONEHOT]
        if len(onehot) >= 2:
            labels, ok = [], []
            for _, r in df.iterrows():
                try:
                    vals = {c: float(r[c]) for c in onehot if r[c] != ""}
                except ValueError:
                    vals = None
                ones = [c for c, v in (vals or {}).items() if v == 1.0]
                clean = vals is not None and all(v in (0.0, 1.0) for v in vals.values()) and len(ones) == 1
                if not clean:
                    shown = ", ".join(f"{c}={r[c]}" for c in onehot)
                    self.bad(csv, r["row"], f"{csv.name} {r['row']} (image {r['image_id']}): one-hot columns must hold exactly one 1 and the rest 0, found {shown}",
                             "fix the row")
                    labels.append(None)
                    ok.append(False)
                    continue
                labels.append(ONEHOT[ones[0]])
                ok.append(True)
            return self.selected(df.assign(label=labels)[np.array(ok, bool)])
        diag_cols = [c for c in DIAGNOSIS_COLUMNS if c in df.columns]
        if diag_cols:
            value = df[diag_cols[0]]
            for c in diag_cols[1:]:
                value = value.where(value != "", df[c])
            df = self.map_labels(df.assign(label_value=value), "label_value", csv, self.label_map, shown="/".join(diag_cols))
            return self._cross_check(df, csv)
        if "target" in df.columns:
            bad = ~df["target"].isin(["0", "1", "0.0", "1.0"])
            for _, r in df[bad].iterrows():
                self.bad(csv, r["row"], f"{csv.name} {r['row']} (image {r['image_id']}): target {r['target']!r} is not 0 or 1", "fix the value")
            df = df[~bad]
            return self.selected(df.assign(label=np.where(df["target"].astype(float) == 1.0, "mel", "unk")))
        raise DataError(
            f"{csv}: only benign_malignant labels; benign/malignant names no lesion class. Export the archive "
            f"metadata with the diagnosis field, or map values yourself with a folder layout"
        )

    def _cross_check(self, df: pd.DataFrame, csv: Path) -> pd.DataFrame:
        """A diagnosis that contradicts target / benign_malignant is a bad row, never a guess."""
        ok = np.ones(len(df), bool)
        for k, (_, r) in enumerate(df.iterrows()):
            why = None
            if "target" in df.columns and r["target"] in ("0", "1", "0.0", "1.0"):
                if (float(r["target"]) == 1.0) != (r["label"] == "mel"):
                    why = f"target={r['target']} contradicts diagnosis {r['label_value']!r}"
            if "benign_malignant" in df.columns:
                bm = r["benign_malignant"].lower()
                if (bm == "benign" and r["label"] in ("mel", "bcc", "scc")) or (bm == "malignant" and r["label"] in ("nv", "bkl", "df", "vasc")):
                    why = f"benign_malignant={r['benign_malignant']!r} contradicts diagnosis {r['label_value']!r}"
            if why:
                self.bad(csv, r["row"], f"{csv.name} {r['row']} (image {r['image_id']}): {why}", "fix one of the two columns")
                ok[k] = False
        return df[ok]


# --------------------------------------------------------------------------------------------


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


@hookimpl
def augforge_register_datasets():
    return [HAM10000, ISIC, Folder]


__all__ = ["HAM10000", "ISIC", "Folder", "FileDataset", "CLASS_NAMES", "index_images"]
