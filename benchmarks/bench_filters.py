"""Precision/recall of paper A's filters (augforge.data.filters) on hand-labelled real images.

Labels: benchmarks/filter_labels.csv (image_id, filter, label, set, sample), made by looking
at contact sheets of ../shared/data/ham10000-200x150 (see benchmarks/README.md, "Filters").
"tune" images chose the thresholds; "holdout" images were labelled afterwards and never
used to tune. "unsure" labels are left out. Writes benchmarks/out/filters.json.

    python benchmarks/bench_filters.py [--root ../shared/data/ham10000-200x150]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from augforge.data import filters  # noqa: E402
from augforge.imageio import read_rgb  # noqa: E402


def pr(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = int((pred & truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "n": int(len(truth)), "positives": int(truth.sum()), "flagged": int(pred.sum()), "tp": tp, "fp": fp, "fn": fn,
        "precision": tp / (tp + fp) if tp + fp else float("nan"), "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(HERE.parent.parent / "shared" / "data" / "ham10000-200x150"))
    ap.add_argument("--all", action="store_true", help="also count flags over every image in the folder")
    args = ap.parse_args()
    root = Path(args.root)
    if not root.is_dir():
        print(f"skipped: no real sample at {root} (pass --root)")
        return
    labels = pd.read_csv(HERE / "filter_labels.csv")
    labels = labels[labels["label"] != "unsure"]
    scores = {}
    for image_id in sorted(set(labels["image_id"])):
        rgb = read_rgb(root / "images" / f"{image_id}.jpg")
        scores[image_id] = (filters.framed_score(rgb), filters.marks_score(rgb))
    result: dict = {"thresholds": {"framed": filters.FRAMED_THRESHOLD, "marks": filters.MARKS_THRESHOLD}}
    rows = []
    for (flt, subset), df in labels.groupby(["filter", "set"]):
        col = 0 if flt == "framed" else 1
        thr = filters.FRAMED_THRESHOLD if flt == "framed" else filters.MARKS_THRESHOLD
        pred = np.array([scores[i][col] >= thr for i in df["image_id"]])
        targets = {"framed": df["label"] == "yes"} if flt == "framed" else {
            "ink": df["label"] == "ink",
            "ink or ruler": df["label"].isin(["ink", "ruler"]),
        }
        for target, truth in targets.items():
            m = pr(pred, truth.to_numpy())
            result[f"{flt}/{target}/{subset}"] = m
            rows.append((flt, target, subset, m))
    if args.all:
        ids = sorted(p.stem for p in (root / "images").glob("*.jpg"))
        s = np.array([(filters.framed_score(r), filters.marks_score(r)) for r in (read_rgb(root / "images" / f"{i}.jpg") for i in ids)])
        result["all_images"] = {"n": len(ids), "framed_flagged": int((s[:, 0] >= filters.FRAMED_THRESHOLD).sum()),
                                "marks_flagged": int((s[:, 1] >= filters.MARKS_THRESHOLD).sum())}
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "filters.json").write_text(json.dumps(result, indent=2))
    print("| filter | positive class | set | images | positives | flagged | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for flt, target, subset, m in rows:
        print(f"| {flt} | {target} | {subset} | {m['n']} | {m['positives']} | {m['flagged']} | {m['precision']:.2f} | {m['recall']:.2f} |")
    if "all_images" in result:
        print(f"\nall {result['all_images']['n']} images: framed flagged {result['all_images']['framed_flagged']}, "
              f"marks flagged {result['all_images']['marks_flagged']}")


if __name__ == "__main__":
    main()
