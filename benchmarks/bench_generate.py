"""Generation throughput: onnxruntime vs PyTorch eager per model family, and `augforge generate`.

    python benchmarks/bench_generate.py [--size 64] [--families dcgan,cdcgan,sngan] [--threads 2]

For each family: a conditional generator at --size px (random weights: speed does not depend
on them), exported with `augforge.export.export_onnx`, then images/s at batch 1 and 64 for
PyTorch eager (eval, no_grad) and onnxruntime (CPU), both on --threads threads. Then the end
to end command path (`augforge.export.generate.generate_images`: noise, ONNX, PNG encoding, metadata.csv)
on the sngan file. Writes benchmarks/out/generate.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def rate(fn, batch: int, min_seconds: float = 2.0, warmup: int = 3) -> float:
    """Images/s of ``fn()`` (one batch per call): the best of 3 timed windows after warm-up."""
    for _ in range(warmup):
        fn()
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds / 3:
                break
        best = max(best, n * batch / dt)
    return best


def main(argv=None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--families", default="dcgan,cdcgan,sngan")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--e2e-images", type=int, default=700)
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch

    from augforge import registry
    from augforge.export import export_onnx, read_metadata
    from augforge.export.generate import generate_images

    torch.set_num_threads(args.threads)
    names = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"][: args.classes]
    rows, tmp = [], Path(tempfile.mkdtemp(prefix="bench-generate-"))
    files = {}
    for family in args.families.split(","):
        torch.manual_seed(0)
        g = registry.build("generator", family, image_size=args.size, num_classes=len(names)).eval()
        t0 = time.perf_counter()
        path = export_onnx(g, tmp / f"{family}.onnx", {"class_names": names})
        export_s = time.perf_counter() - t0
        files[family] = path
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for batch in (1, 64):
            z = torch.randn(batch, g.latent_dim)
            y = torch.arange(batch) % len(names)
            feeds = {"z": z.numpy(), "label": y.numpy().astype(np.int64)}

            def eager():
                with torch.no_grad():
                    g(z, y)

            def onnx():
                sess.run(["image"], feeds)

            t, o = rate(eager, batch), rate(onnx, batch)
            rows.append({"family": family, "size": args.size, "batch": batch, "torch_eager_img_s": round(t, 1),
                         "onnxruntime_img_s": round(o, 1), "speedup": round(o / t, 2), "export_s": round(export_s, 1),
                         "params": sum(p.numel() for p in g.parameters()), "exporter": read_metadata(path)["exporter"]})
            print(f"{family:7s} {args.size}px batch {batch:3d}: torch {t:9.1f} img/s, onnxruntime {o:9.1f} img/s, x{o / t:.2f}", flush=True)

    e2e = {}
    family = "sngan" if "sngan" in files else next(iter(files))
    per = max(1, args.e2e_images // len(names))
    for run in range(2):  # the second run is the one reported (files cached by the OS, session warm)
        out = tmp / f"generated{run}"
        res = generate_images(files[family], out, per_class=per, seed=0, progress=False)
        e2e = {"family": family, "size": args.size, "images": res.n_images, "seconds": round(res.seconds, 2),
               "img_s": round(res.n_images / res.seconds, 1), "png_kb_mean": round(
                   np.mean([f.stat().st_size for f in (out / "images").iterdir()]) / 1e3, 2)}
    print(f"augforge generate ({family}, {args.size}px, PNG + metadata.csv): {e2e['images']} images in "
          f"{e2e['seconds']} s = {e2e['img_s']} img/s", flush=True)

    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "torch": torch.__version__, "onnxruntime": ort.__version__},
              "inference": rows, "generate_command": e2e}
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "generate.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| family | px | batch | PyTorch eager img/s | onnxruntime img/s | speed-up |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['size']} | {r['batch']} | {r['torch_eager_img_s']} | {r['onnxruntime_img_s']} | {r['speedup']}x |")
    return result


if __name__ == "__main__":
    main()
