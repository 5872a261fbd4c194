"""Data cache: images/s of an epoch read from the decode-once cache vs decoding every epoch.

On the real HAM10000 sample (../shared/data/ham10000-200x150, 7,511 JPEGs at 200x150), at
64 px. "decode per epoch" is what a loader without the cache does for every image of every
epoch: JPEG decode + centre crop + Lanczos resize (augforge.imageio.read_rgb +
augforge.data.square_resize, one thread). "cached epoch" reads the memory-mapped uint8 array
written by augforge.data.load_arrays, image by image, and through TorchImages + DataLoader
(batch 64) as training does. Both are warm (files in the OS page cache). Writes
benchmarks/out/cache.json and prints a Markdown table for benchmarks/README.md.

    python benchmarks/bench_cache.py [--root DIR] [--size 64] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(HERE.parent.parent / "shared" / "data" / "ham10000-200x150"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0, help="decode-per-epoch on the first N images only (0 = all)")
    args = ap.parse_args()
    root = Path(args.root)
    if not (root / "HAM10000_metadata.csv").is_file():
        print(f"skipped: no real sample at {root} (pass --root)")
        return

    import torch

    from augforge import config
    from augforge.data import TorchImages, build_dataset, load_arrays, square_resize
    from augforge.imageio import read_rgb

    torch.set_num_threads(1)
    cache = HERE / "out" / "cache-bench"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["AUGFORGE_CACHE_DIR"] = str(cache)
    cfg = config.resolve("", {"data.name": "ham10000", "dataset.root": str(root), "data.image_size": str(args.size)})
    sources = list(build_dataset(cfg).records()["source"])
    n_decode = len(sources) if not args.limit else min(args.limit, len(sources))

    for s in sources[:200]:  # warm the page cache for the JPEGs
        Path(s).read_bytes()
    t = time.perf_counter()
    for s in sources[:n_decode]:
        square_resize(read_rgb(s), args.size)
    decode_ips = n_decode / (time.perf_counter() - t)

    t = time.perf_counter()
    arrays = load_arrays(cfg, progress=False)
    build_s = time.perf_counter() - t

    t = time.perf_counter()
    arrays = load_arrays(cfg, progress=False)  # the second run: only memory-maps
    open_s = time.perf_counter() - t
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for i in range(len(arrays)):
            np.array(arrays.images[i])
        best = max(best, len(arrays) / (time.perf_counter() - t))
    cached_ips = best

    loader = torch.utils.data.DataLoader(TorchImages(arrays), batch_size=64, shuffle=True)
    t = time.perf_counter()
    seen = sum(len(x) for x, _ in loader)
    torch_ips = seen / (time.perf_counter() - t)

    result = {
        "images": len(arrays), "size": args.size, "decode_images": n_decode,
        "decode_per_epoch_images_per_s": round(decode_ips, 1),
        "cache_build_s": round(build_s, 2), "cache_open_s": round(open_s, 3),
        "cached_epoch_images_per_s": round(cached_ips, 1),
        "cached_torch_dataloader_images_per_s": round(torch_ips, 1),
        "speedup_cached_vs_decode": round(cached_ips / decode_ips, 1),
        "speedup_torch_vs_decode": round(torch_ips / decode_ips, 1),
        "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 1), "python": platform.python_version(),
    }
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "cache.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(cache, ignore_errors=True)
    print(f"| measure ({args.size} px, {len(arrays)} real HAM10000 images) | value |")
    print("|---|---|")
    print(f"| decode per epoch (decode + crop + resize, 1 thread) | {decode_ips:,.0f} images/s |")
    print(f"| first run: decode once + filters + write cache | {build_s:.1f} s |")
    print(f"| later runs: open the cache (memory-map) | {open_s * 1000:.0f} ms |")
    print(f"| cached epoch, image by image | {cached_ips:,.0f} images/s (**{cached_ips / decode_ips:,.0f}x**) |")
    print(f"| cached epoch, TorchImages + DataLoader(batch 64) | {torch_ips:,.0f} images/s ({torch_ips / decode_ips:,.0f}x) |")
    print(f"\n{os.cpu_count()} CPUs, 1-min load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
