"""The evaluation report: one folder with ``report.md``, ``figures/*.png``, ``tables/*.csv``,
``metrics.json`` and ``summary.json``. Only the core writes files; evaluators return arrays."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from augforge.grid import make_grid, save_png
from augforge.interfaces import ImageSet

#: the issue's targets for the `modern` preset (detection rate is compared per class with
#: the detector's recall on real held-out images)
TARGETS = {"memorization": 0.01, "c2st_accuracy": 0.75}
TARGET_CLASSES = ("nv", "mel", "bkl", "bcc")
#: paper B, Table III (detection rate of 100 generated images per class)
PAPER_B = {"nv": 0.6341, "mel": 0.1163, "bkl": 0.1613, "bcc": 0.2973}


def real_vs_generated_sheet(real: ImageSet, generated: ImageSet, per_class: int = 8, seed: int = 0) -> np.ndarray:
    """One row per class: ``per_class`` real held-out images, a gap, ``per_class`` generated ones."""
    rng = np.random.default_rng(seed)
    size = generated.images.shape[1]
    blank = np.full((size, size, 3), 255, np.uint8)
    tiles, labels = [], []
    for c, name in enumerate(generated.class_names):
        row = []
        for s in (real, generated):
            idx = np.flatnonzero(np.asarray(s.labels) == c)
            pick = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
            imgs = [s.images[i] if s.images.shape[1] == size else _resize(s.images[i], size) for i in pick]
            row += imgs + [blank] * (per_class - len(imgs))
            if s is real:
                row.append(blank)  # the gap between real (left) and generated (right)
        tiles += row
        labels.append(name)
    return make_grid(np.stack(tiles), 2 * per_class + 1, row_labels=labels)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.LANCZOS))


def confusion_png(confusion: np.ndarray, class_names: list[str], path: Path, title: str, xlabel: str = "predicted", ylabel: str = "true") -> Path:
    """Row-normalised confusion matrix with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), class_names, rotation=45)
    ax.set_yticks(range(cm.shape[0]), class_names[: cm.shape[0]])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (int, np.integer)):
        return str(v)
    v = float(v)
    return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3e}"


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.1f}%"


def _md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) if not isinstance(v, str) else v for v in row) + " |")
    return "\n".join(lines)


def targets_table(metrics: dict[str, float], class_names: list[str]) -> pd.DataFrame:
    """Per target class: generated detection rate next to the detector's real held-out recall
    (and paper B's figure); the rate should be at least the real recall."""
    rows = []
    for name in class_names:
        if name not in TARGET_CLASSES or f"detection_rate_{name}" not in metrics:
            continue
        rate, real = metrics[f"detection_rate_{name}"], metrics.get(f"real_recall_{name}", float("nan"))
        rows.append({"class": name, "generated detection rate": _pct(rate), "real held-out recall": _pct(real),
                     "paper B": _pct(PAPER_B.get(name)), "meets target": "yes" if rate >= real else "no"})
    return pd.DataFrame(rows)


def write_report(
    out_dir: Path,
    *,
    summary: dict,
    metrics: dict[str, float],
    results: dict,
    detector_info: dict,
    real: ImageSet,
    generated: ImageSet,
    detector_probs: np.ndarray,
) -> Path:
    """Write the whole report folder and return the path of ``report.md``."""
    out_dir = Path(out_dir)
    figs, tabs = out_dir / "figures", out_dir / "tables"
    figs.mkdir(parents=True, exist_ok=True)
    tabs.mkdir(parents=True, exist_ok=True)
    names = list(generated.class_names)

    save_png(real_vs_generated_sheet(real, generated, seed=summary.get("seed", 0)), figs / "real_vs_generated.png")
    confusion_png(np.asarray(detector_info["confusion"]), names, figs / "detector_confusion_real_test.png",
                  f"detector on real test images (balanced acc {detector_info['metrics']['balanced_accuracy']:.3f})")
    gen_cm = np.zeros((len(names), len(names)), int)
    np.add.at(gen_cm, (np.asarray(generated.labels), detector_probs.argmax(1)), 1)
    confusion_png(gen_cm, names, figs / "detector_confusion_generated.png", "detector on generated images", ylabel="intended class")
    for res in results.values():
        for fname, img in res.figures.items():
            save_png(img, figs / f"{fname}.png")
        for tname, table in res.tables.items():
            table.to_csv(tabs / f"{tname}.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    jq = summary.get("jpeg_quality")
    side = summary.get("jpeg_side")
    at = f" at the real files' stored resolution ({side} px), then resized back like them" if side else ""
    jpeg_line = (f"generated images were passed through JPEG at quality {jq}{at}, like the real data" if jq
                 else "generated images were **not** JPEG-compressed (the real images are JPEG, about quality 75: "
                      "a confound for feature-space metrics; see `--jpeg-quality`)")
    dm = detector_info["metrics"]
    md = [
        f"# Evaluation: {summary.get('generator') or 'generator'} at step {summary.get('step')}",
        "",
        f"- source: `{summary.get('checkpoint') or summary.get('onnx')}`; run id `{summary.get('run_id')}`",
        f"- data: `{summary['dataset']}` at {summary['image_size']} px, classes {', '.join(names)}; "
        f"lesion-grouped split (seed {summary['split_seed']}): " + ", ".join(f"{k} {v}" for k, v in summary["split_sizes"].items()),
        f"- generated: {summary['n_per_class']} images per class, seed {summary['seed']}; {jpeg_line}",
        f"- compared against the real **{summary.get('split', 'test')}** split",
        f"- detector: `{summary['classifier']}` trained on the real train split (best epoch {detector_info.get('best_epoch')} "
        f"on the val split), cached at `{summary['detector_path']}`",
        *([f"- Inception features (`*_inception` keys): `{summary['inception_weights']}`"] if summary.get("inception_weights") else []),
        *([f"- evaluator options: `{json.dumps(summary['evaluator_options'])}`"] if summary.get("evaluator_options") else []),
        *([f"- filtered: every draw oversampled by 1/{summary['keep']:g}, the best-scored share per class kept by "
           f"{', '.join(summary['filters'])} (`augforge generate --filter` does the same)"] if summary.get("filters") else []),
        "",
        "## Targets",
        "",
        "Detection rate of generated images should reach the detector's recall on real held-out images "
        "of the same class; memorisation <= 1 %; c2st accuracy <= 0.75 (0.5 = indistinguishable).",
        "",
    ]
    tt = targets_table(metrics, names)
    if len(tt):
        md += [_md_table(tt), ""]
    for key, limit in TARGETS.items():
        if key in metrics:
            md.append(f"- `{key}` = {_fmt(metrics[key])} (target <= {limit}): {'met' if metrics[key] <= limit else '**not met**'}")
    md += ["", "## Detector on the real test split", "",
           f"accuracy {dm['accuracy']:.3f}, balanced accuracy {dm['balanced_accuracy']:.3f}, macro AUC {_fmt(dm.get('macro_auc'))}", ""]
    md.append(_md_table(pd.DataFrame([
        {"class": n, "support": int(dm.get(f"support_{n}", 0)), "recall": dm.get(f"recall_{n}"), "precision": dm.get(f"precision_{n}")}
        for n in names
    ])))
    md += ["", "![detector confusion (real test)](figures/detector_confusion_real_test.png)", "",
           "## Real (left) vs generated (right), one row per class", "", "![real vs generated](figures/real_vs_generated.png)", "",
           "![detector on generated](figures/detector_confusion_generated.png)", ""]
    for name, res in results.items():
        md += [f"## {name}", ""]
        rows = [{"metric": k, "value": v} for k, v in res.metrics.items()]
        md += [_md_table(pd.DataFrame(rows)), ""]
        for tname, table in res.tables.items():
            md.append(f"Table: [tables/{tname}.csv](tables/{tname}.csv)")
            if len(table) <= 12:
                md += ["", _md_table(table)]
            md.append("")
        for fname in res.figures:
            md += [f"![{fname}](figures/{fname}.png)", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path
