"""Random vs sequential access to ``augforge_runtime.SyntheticLesions``: time and images rendered.

A shuffling DataLoader reads items in random order. This measures one pass over ``--n`` items
(default 2,000) read in order, in a shuffled order one by one, and in a shuffled order in
DataLoader-sized batches (``__getitems__``), with the default cache and with a cache far
smaller than the data; ``rendered / n`` is the number of onnxruntime images computed per item
(the target is <= 2). The generator is ``--onnx`` or, by default, a freshly initialised
``--family`` at ``--size`` px exported once (speed does not depend on trained weights).
Writes benchmarks/out/runtime_access.json.

    python benchmarks/bench_runtime_access.py [--onnx generator.onnx] [--n 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _export(family: str, size: int, out: Path) -> Path:
    import torch

    from augforge import registry
    from augforge.export import export_onnx

    torch.manual_seed(0)
    classes = ["nv", "mel", "bcc"]
    g = registry.build("generator", family, image_size=size, num_classes=len(classes), latent_dim=64)
    return export_onnx(g, out / f"{family}-{size}.onnx", {"class_names": classes})


def _pass(ds, order: np.ndarray, batch: int | None) -> float:
    t0 = time.perf_counter()
    if batch:
        for start in range(0, len(order), batch):
            ds.__getitems__(order[start : start + batch].tolist())
    else:
        for i in order:
            ds[int(i)]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--onnx", default="", help="an exported generator (default: export --family at --size)")
    ap.add_argument("--family", default="cdcgan")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64, help="DataLoader batch size for the batched pass")
    ap.add_argument("--small-cache-mb", type=float, default=0.5, help="the small cache (MB) for the bounded rows")
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()

    from augforge_runtime import DEFAULT_CACHE_MB, SyntheticLesions

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.onnx) if args.onnx else _export(args.family, args.size, Path(tmp))
        probe = SyntheticLesions(path, per_class=0)
        k = len(probe.class_names)
        counts = {c: args.n // k + (1 if j < args.n % k else 0) for j, c in enumerate(probe.class_names)}
        order = np.random.default_rng(0).permutation(args.n)
        rows = []
        for name, cache_mb, shuffled, batch in [
            ("sequential", DEFAULT_CACHE_MB, False, None),
            ("shuffled, one by one", DEFAULT_CACHE_MB, True, None),
            ("shuffled, batches", DEFAULT_CACHE_MB, True, args.batch),
            ("shuffled, one by one, small cache", args.small_cache_mb, True, None),
            ("shuffled, batches, small cache", args.small_cache_mb, True, args.batch),
        ]:
            ds = SyntheticLesions(path, counts=counts, seed=0, threads=args.threads, cache_mb=cache_mb)
            seconds = _pass(ds, order if shuffled else np.arange(args.n), batch)
            rows.append({"access": name, "cache_mb": cache_mb, "batch": batch or 1, "n": args.n, "seconds": round(seconds, 2),
                         "items_per_s": round(args.n / seconds, 1), "rendered": ds.rendered,
                         "rendered_per_item": round(ds.rendered / args.n, 3)})
            print(f"{name:36s} cache {cache_mb:6.1f} MB: {seconds:6.2f} s, {args.n / seconds:7.1f} items/s, "
                  f"rendered {ds.rendered} ({ds.rendered / args.n:.2f} per item)", flush=True)
        px = probe.generator.image_size
    result = {"onnx": str(args.onnx) or f"{args.family} {args.size}px (random init)", "image_size": px, "threads": args.threads,
              "rows": rows, "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()}}
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "runtime_access.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n| access | cache MB | batch | items | s | items/s | rendered | per item |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['access']} | {r['cache_mb']:g} | {r['batch']} | {r['n']} | {r['seconds']} | {r['items_per_s']} | "
              f"{r['rendered']} | {r['rendered_per_item']} |")


if __name__ == "__main__":
    main()
