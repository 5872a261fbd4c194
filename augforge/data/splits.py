"""Lesion-grouped, class-stratified, seed-deterministic splits (a lesion never spans two splits)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.errors import ConfigError
from augforge.data.cache import LesionArrays, load_arrays


def make_splits(arrays: LesionArrays, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Lesion-grouped, class-stratified, seed-deterministic split into train/val/test.

    Every image of a group (lesion/patient) lands in the same split. Per class, the groups
    (labelled by their rarest class when mixed) are shuffled with ``seed`` and dealt to test,
    then val, while that brings the split's image count closer to its share of the class.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction}, test_fraction={test_fraction}: each in [0, 1), sum below 1")
    groups = arrays.meta["group"].astype(str).to_numpy()
    labels = np.asarray(arrays.labels)
    counts = np.bincount(labels, minlength=len(arrays.class_names))
    frame = pd.DataFrame({"group": groups, "label": labels})
    # a mixed group counts for its rarest class: rare classes are the hard ones to stratify
    g_label = frame.assign(n=counts[labels]).sort_values(["n", "label"]).groupby("group", sort=True)["label"].first()
    g_size = frame.groupby("group", sort=True).size()
    rng = np.random.default_rng(seed)
    which: dict[str, str] = {}
    for k in sorted(g_label.unique()):
        gs = np.array(sorted(g_label.index[g_label.to_numpy() == k]))
        rng.shuffle(gs)
        total = int(g_size[gs].sum())
        targets = {"test": total * test_fraction, "val": total * val_fraction}
        have = {"test": 0, "val": 0}
        for g in gs:
            sz = int(g_size[g])
            dest = "train"
            for s in ("test", "val"):
                if abs(have[s] + sz - targets[s]) < abs(have[s] - targets[s]):
                    dest = s
                    break
            if dest != "train":
                have[dest] += sz
            which[g] = dest
    assign = np.array([which[g] for g in groups])
    return {s: np.flatnonzero(assign == s) for s in ("train", "val", "test")}


def splits_frame(arrays: LesionArrays, splits: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per image: image_id, label, group, split, source."""
    split = np.empty(len(arrays), dtype=object)
    for name, idx in splits.items():
        split[idx] = name
    m = arrays.meta
    return pd.DataFrame({"image_id": m["image_id"], "label": m["label"], "group": m["group"], "split": split, "source": m["source"]})


def load_splits(cfg, out_dir: str | os.PathLike | None = None, progress: bool = True) -> tuple[LesionArrays, dict[str, np.ndarray]]:
    """``load_arrays`` + ``make_splits``; with ``out_dir``, write ``splits.csv`` and ``skipped.csv`` there."""
    arrays = load_arrays(cfg, progress=progress)
    splits = make_splits(arrays, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _atomic_csv(splits_frame(arrays, splits), out / "splits.csv")
        _atomic_csv(arrays.skipped, out / "skipped.csv")
    return arrays, splits


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
