"""Evaluation benchmarks; results go to benchmarks/out/eval_*.json and stdout (Markdown).

    python benchmarks/bench_eval.py                 # metrics timing + detector (when the data is there)
    python benchmarks/bench_eval.py metrics         # cost of each metric at realistic sizes (no data needed)
    python benchmarks/bench_eval.py detector        # detector on the shared HAM10000 sample, 64 px:
                                                    #   lesion-grouped split vs image-level split (the leak)
    python benchmarks/bench_eval.py runs NAME=CKPT [NAME=CKPT ...] [--jpeg-quality 75]
                                                    # full evaluation of checkpoints, one table
    python benchmarks/bench_eval.py table NAME=REPORT_DIR [NAME=REPORT_DIR ...]
                                                    # the same table from `augforge evaluate --out` folders

The detector part needs ../shared/data/ham10000-200x150 (skipped when absent) and trains two
CPU detectors (a few minutes each on an idle machine; run it with `nice`).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
HAM = ROOT.parent / "shared" / "data" / "ham10000-200x150"


def _save(name: str, payload: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"eval_{name}.json").write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {OUT / f'eval_{name}.json'}")


def bench_metrics() -> None:
    """Seconds per metric for 700 generated vs 6,000 real 128-d features (7 classes, HAM-like mix)."""
    from augforge_plugins import measures as M
    from augforge_plugins import privacy

    rng = np.random.default_rng(0)
    counts = np.array([4023, 669, 660, 308, 197, 85, 68])
    real = rng.normal(size=(counts.sum(), 128))
    real_labels = np.repeat(np.arange(7), counts)
    fake, fake_labels = rng.normal(0.1, 1, (700, 128)), np.repeat(np.arange(7), 100)
    rows = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        fn()
        rows[name] = time.perf_counter() - t0

    timed("fid (class-balanced)", lambda: M.frechet_distance(
        *M.gaussian_stats(real, M.class_balanced_weights(real_labels)), *M.gaussian_stats(fake)))
    timed("kid (per class, 50 subsets)", lambda: [M.kid(real[real_labels == c], fake[fake_labels == c]) for c in range(7)])
    timed("precision-recall (per class, k=3)", lambda: [
        M.precision_recall(real[real_labels == c][:100], fake[fake_labels == c], 3) for c in range(7)])
    timed("density-coverage (per class, k=5)", lambda: [
        M.density_coverage(real[real_labels == c][:100], fake[fake_labels == c], 5) for c in range(7)])
    timed("nearest neighbours 700 x 6000 (feature)", lambda: M.nearest_neighbours(fake, real))
    imgs_r = rng.integers(0, 256, (6000, 64, 64, 3), dtype=np.uint8)
    imgs_f = rng.integers(0, 256, (700, 64, 64, 3), dtype=np.uint8)
    timed("near_copy_mask 700 vs 6000 images (pixel, 32 px)", lambda: privacy.near_copy_mask(imgs_f, imgs_r, baseline=imgs_f[:300]))
    print("\n| metric | seconds |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.2f} |")
    _save("metrics", rows)


def _ham_cfg(image_size: int = 64):
    from augforge import config

    return config.resolve(overrides={"data.name": "ham10000", "dataset.root": str(HAM), "data.image_size": str(image_size)})


def knn_balanced_accuracy(arrays, splits, size: int = 16) -> float:
    """1-nearest-neighbour classifier on downscaled pixels, train -> test: a seconds-cheap
    probe of how much a split leaks (a second photo of a training lesion is its own answer)."""
    from augforge.evaluation.classify import balanced_accuracy
    from augforge_plugins.measures import nearest_neighbours, pixel_vectors

    tr, te = np.asarray(splits["train"]), np.asarray(splits["test"])
    vec = pixel_vectors(np.asarray(arrays.images), size)
    _, nn = nearest_neighbours(vec[te], vec[tr])
    labels = np.asarray(arrays.labels)
    return balanced_accuracy(labels[te], labels[tr][nn], len(arrays.class_names))


def bench_detector(classifier: str = "paper-b-cnn") -> None:
    """Detector balanced accuracy: lesion-grouped split vs image-level split of the same images."""
    if not HAM.is_dir():
        print(f"skip detector: {HAM} not present")
        return
    from augforge import data
    from augforge import evaluation as evaluate
    cfg = _ham_cfg()
    arrays, grouped = evaluate.load_data(cfg)
    # the same images split as if every photo were its own lesion: what paper B's 98% suggests
    by_image = dataclasses.replace(arrays, meta=arrays.meta.assign(group=arrays.meta["image_id"].astype(str)))
    image_level = data.make_splits(by_image, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    lesions = arrays.meta["group"].astype(str).to_numpy()
    result = {"classifier": classifier, "image_size": 64, "class_names": arrays.class_names}
    for name, arr, splits in (("lesion-grouped", arrays, grouped), ("image-level", by_image, image_level)):
        train_lesions = set(lesions[splits["train"]])
        leaked = float(np.mean([g in train_lesions for g in lesions[splits["test"]]]))
        knn = knn_balanced_accuracy(arrays, splits)
        print(f"{name}: test images whose lesion is in train {leaked:.1%}; 1-NN pixel balanced accuracy {knn:.3f}", flush=True)
        t0 = time.perf_counter()
        det = evaluate.get_detector(cfg, arr, splits, classifier=classifier,
                                    progress=lambda e, row: print(f"  [{name}] epoch {e}: {row}", flush=True))
        info = det.detector_info
        result[name] = {
            "seconds": time.perf_counter() - t0, "best_epoch": info["best_epoch"], "test_lesions_seen_in_train": leaked,
            "split_sizes": info["split_sizes"], "knn_pixel_balanced_accuracy": knn, **info["metrics"],
        }
        print(f"{name}: balanced accuracy {info['metrics']['balanced_accuracy']:.3f}, accuracy {info['metrics']['accuracy']:.3f}, "
              f"test images whose lesion is in train {leaked:.1%}", flush=True)
    names = arrays.class_names
    print("\n| split | test images whose lesion is also in train | accuracy | balanced accuracy | macro AUC | "
          + " | ".join(f"recall {n}" for n in names) + " |")
    print("|---|---|---|---|---|" + "---|" * len(names))
    for name in ("lesion-grouped", "image-level"):
        r = result[name]
        print(f"| {name} | {r['test_lesions_seen_in_train']:.1%} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | "
              f"{r['macro_auc']:.3f} | " + " | ".join(f"{r[f'recall_{n}']:.2f}" for n in names) + " |")
    _save(f"detector_{classifier}", result)


def bench_runs(args: list[str]) -> None:
    """``NAME=CHECKPOINT`` pairs -> one row each: the headline metrics of ``evaluate_checkpoint``."""
    from augforge import evaluation as evaluate
    jpeg = None
    if "--jpeg-quality" in args:
        i = args.index("--jpeg-quality")
        jpeg = int(args[i + 1])
        args = args[:i] + args[i + 2:]
    rows = {}
    for item in args:
        name, _, path = item.partition("=")
        t0 = time.perf_counter()
        ev = evaluate.evaluate_checkpoint_full(path, jpeg_quality=jpeg, track=False,
                                               out_dir=OUT / f"eval-{name}", echo=lambda m: print(f"  [{name}] {m}", flush=True))
        rows[name] = {"checkpoint": path, "seconds": time.perf_counter() - t0, "report": str(ev.report), **ev.metrics}
    _save("runs", rows)
    print_table(rows)


def bench_table(args: list[str]) -> None:
    """``NAME=REPORT_DIR`` pairs (folders written by ``augforge evaluate``) -> the same table,
    without evaluating again."""
    rows = {}
    for item in args:
        name, _, folder = item.partition("=")
        metrics_file = Path(folder) / "metrics.json"
        if not metrics_file.is_file():
            raise SystemExit(f"{item}: no {metrics_file}; give NAME=DIR where DIR is an `augforge evaluate --out` folder")
        summary = json.loads((Path(folder) / "summary.json").read_text())
        rows[name] = {"report": str(Path(folder) / "report.md"), "step": summary.get("step"), **json.loads(metrics_file.read_text())}
    _save("table", rows)
    print_table(rows)


def print_table(rows: dict[str, dict]) -> None:
    keys = ["detection_rate", "fid", "fid_real_baseline", "kid", "kid_real_baseline", "precision", "recall", "density",
            "coverage", "c2st_accuracy", "c2st_feature_accuracy", "memorization", "memorization_pixel", "memorization_feature",
            "aug_real_bacc_mean", "aug_real_bacc_std", "aug_mixed_bacc_mean", "aug_mixed_bacc_std",
            "aug_synthetic_bacc_mean", "aug_synthetic_bacc_std", "augmentation_gain"]
    keys = [k for k in keys if any(k in r for r in rows.values())]
    print("\n| metric | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    print("| step | " + " | ".join(str(r.get("step", "")) for r in rows.values()) + " |")
    for k in keys:
        print(f"| {k} | " + " | ".join(f"{r.get(k, float('nan')):.4g}" for r in rows.values()) + " |")
    for c in ("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"):
        print(f"| detection rate {c} (real recall) | " + " | ".join(
            f"{r.get(f'detection_rate_{c}', float('nan')):.1%} ({r.get(f'real_recall_{c}', float('nan')):.1%})" for r in rows.values()) + " |")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "all"
    if what in ("metrics", "all"):
        bench_metrics()
    if what in ("detector", "all"):
        bench_detector(sys.argv[2] if len(sys.argv) > 2 and what == "detector" else "paper-b-cnn")
    if what == "runs":
        bench_runs(sys.argv[2:])
    if what == "table":
        bench_table(sys.argv[2:])
