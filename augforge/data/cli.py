"""``augforge data ...``: look at a dataset the way training will see it."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd


@click.group("data")
def data_group():
    """Inspect and prepare datasets (decode-once cache, splits, filters)."""


@data_group.command("inspect")
@click.option("--dataset", "dataset_name", default="synthetic-lesions", show_default=True, help="Dataset plugin name (augforge plugins).")
@click.option("--root", default=None, help="Dataset folder (or its CSV) for file-based datasets.")
@click.option("--classes", default=None, help="Comma-separated class names or synonyms, e.g. mel,bcc (default: all).")
@click.option("--max-per-class", type=int, default=None, help="Cap images per class (seeded random subset).")
@click.option("--image-size", type=int, default=None, help="Cached square size in pixels [default: data.image_size, 64].")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable files and bad rows, listing them in skipped.csv.")
@click.option("--drop-framed", is_flag=True, help="Drop round-framed microscope images (paper A's filter).")
@click.option("--drop-marks", is_flag=True, help="Drop images with ink marks (paper A's filter).")
@click.option("--seed", type=int, default=None, help="Split seed (and the dataset's seed, where it has one).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config override, e.g. --set data.val_fraction=0.2.")
@click.option("--out", "out_dir", default=None, help="Output folder [default: runs/inspect-<dataset>].")
@click.option("--per-class", type=int, default=8, show_default=True, help="Samples per class on the contact sheet.")
def inspect_command(dataset_name, root, classes, max_per_class, image_size, skip_bad, drop_framed, drop_marks, seed, sets, out_dir, per_class):
    """Per-class counts per split, lesions and skips; writes splits.csv and a contact sheet."""
    from rich.console import Console
    from rich.table import Table

    from augforge import config, registry
    from augforge.data import conflicting_lesions, load_splits

    overrides: dict[str, object] = {"data.name": dataset_name}
    params = registry.signature_params(registry.get("dataset", dataset_name))
    for key, value in (("root", root), ("classes", classes), ("max_per_class", max_per_class)):
        if value is not None:
            overrides[f"dataset.{key}"] = value
    if image_size is not None:
        overrides["data.image_size"] = image_size
    for flag, key in ((skip_bad, "skip_bad"), (drop_framed, "drop_framed"), (drop_marks, "drop_marks")):
        if flag:
            overrides[f"data.{key}"] = True
    if seed is not None:
        overrides["data.split_seed"] = seed
        if "seed" in params:
            overrides["dataset.seed"] = seed
    overrides.update(config.parse_set(sets))
    cfg = config.resolve("", overrides)

    out = Path(out_dir or Path(cfg.train.out_dir) / f"inspect-{dataset_name}")
    console = Console(width=120)
    arrays, splits = load_splits(cfg, out_dir=out)

    split_of = np.empty(len(arrays), dtype=object)
    for name, idx in splits.items():
        split_of[idx] = name
    meta = arrays.meta.assign(split=split_of)
    skipped = arrays.skipped
    skip_by_label = _skips_by_label(skipped)

    table = Table(title=f"{dataset_name}: {len(arrays)} images, {meta['group'].nunique()} lesions/groups, {cfg.data.image_size}px")
    for col in ("class", "train", "val", "test", "images", "lesions", "skipped/dropped"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for k, name in enumerate(arrays.class_names):
        m = meta[arrays.labels == k]
        counts = m["split"].value_counts()
        table.add_row(name, *(str(int(counts.get(s, 0))) for s in ("train", "val", "test")), str(len(m)), str(m["group"].nunique()),
                      str(skip_by_label.get(name, 0)))
    counts = meta["split"].value_counts()
    table.add_row("[bold]all", *(f"[bold]{int(counts.get(s, 0))}" for s in ("train", "val", "test")), f"[bold]{len(meta)}",
                  f"[bold]{meta['group'].nunique()}", f"[bold]{len(skipped)}")
    console.print(table)

    groups = {s: set(meta.loc[meta["split"] == s, "group"]) for s in splits}
    shared = len(groups["train"] & groups["val"]) + len(groups["train"] & groups["test"]) + len(groups["val"] & groups["test"])
    console.print(f"lesions/groups shared across splits: {shared}")
    conflicts = conflicting_lesions(arrays.meta)
    dropped = int(skipped["reason"].str.contains("conflicting diagnoses").sum()) if len(skipped) else 0
    if dropped:
        console.print(f"lesions with conflicting diagnoses: dropped by --skip-bad ({dropped} images, listed in skipped.csv)")
    else:
        console.print(f"lesions with conflicting diagnoses: {len(conflicts)}" + (" (kept; pass --skip-bad to drop them)" if conflicts else ""))
    for lesion, labels in list(conflicts.items())[:20]:
        ids = arrays.meta.loc[arrays.meta["lesion_id"].astype(str) == lesion, ["image_id", "label"]]
        console.print(f"  {lesion}: " + ", ".join(f"{r.image_id}={r.label}" for r in ids.itertuples()))
    if len(skipped):
        reasons = skipped["reason"].map(_reason_kind).value_counts()
        console.print(f"skipped or dropped: {len(skipped)} (each listed with its reason in skipped.csv)")
        t = Table()
        t.add_column("reason")
        t.add_column("count", justify="right")
        for reason, n in reasons.items():
            t.add_row(reason, str(n))
        console.print(t)

    sheet = out / "contact_sheet.png"
    contact_sheet(arrays, per_class, seed=cfg.data.split_seed).save(sheet)
    console.print(f"splits:        {out / 'splits.csv'}")
    console.print(f"skipped:       {out / 'skipped.csv'}")
    console.print(f"contact sheet: {sheet}")


#: substring of a skip reason -> its kind in the summary table (first match wins)
REASON_KINDS = [
    ("conflicting diagnoses", "lesion with conflicting diagnoses"),
    ("dropped: round microscope frame", "dropped: round microscope frame"),
    ("dropped: ink mark", "dropped: ink mark / ruler"),
    ("empty file", "empty image file"),
    ("not an image file", "not an image file"),
    ("truncated", "truncated image"),
    ("cannot decode", "corrupt image"),
    ("exceeds the limit", "too many pixels (decompression bomb?)"),
    ("file not found", "image file missing"),
    ("no image file", "image file missing"),
    ("not a class", "unknown class folder"),
    ("unknown", "unknown label"),
    ("empty", "empty label or id"),
    ("one-hot", "inconsistent labels"),
    ("contradicts", "inconsistent labels"),
    ("is not 0 or 1", "inconsistent labels"),
    ("appears", "duplicate id"),
    ("more than once", "duplicate file"),
    ("several files", "duplicate file"),
]


def _reason_kind(reason: str) -> str:
    return next((kind for key, kind in REASON_KINDS if key in reason), "other")


def _skips_by_label(skipped: pd.DataFrame) -> dict[str, int]:
    """Skipped/dropped per class where the class is known (not for rows with a bad label)."""
    known = skipped[skipped["label"].fillna("") != ""] if "label" in skipped.columns else skipped.iloc[:0]
    return known["label"].value_counts().to_dict() if len(known) else {}


def contact_sheet(arrays, per_class: int = 8, seed: int = 0, cell: int | None = None):
    """A grid image: one row per class (label on the left), ``per_class`` random samples."""
    from PIL import Image, ImageDraw

    size = arrays.images.shape[1]
    cell = cell or max(size, 48)
    label_w = 64
    rng = np.random.default_rng(seed)
    sheet = Image.new("RGB", (label_w + per_class * cell, max(1, len(arrays.class_names)) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    for k, name in enumerate(arrays.class_names):
        idx = np.flatnonzero(arrays.labels == k)
        pick = np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False)) if len(idx) else []
        draw.text((4, k * cell + cell // 2 - 10), f"{name}\n{len(idx)}", fill="black")
        for j, i in enumerate(pick):
            im = Image.fromarray(np.asarray(arrays.images[i]))
            if cell != size:
                im = im.resize((cell, cell), Image.Resampling.NEAREST)
            sheet.paste(im, (label_w + j * cell, k * cell))
    return sheet
