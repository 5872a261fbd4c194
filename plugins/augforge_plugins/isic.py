"""The isic dataset: ISIC archive exports and ISIC 2018/2019/2020 challenge ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from augforge.data import canonical_class, valid_labels_hint
from augforge.errors import DataError
from augforge_plugins.files import FileDataset, index_images


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
