"""``augforge demo`` (``make demo``): the whole pipeline on the embedded synthetic-lesions data.

data -> train -> evaluate -> export ONNX -> generate, each stage through the same functions the
individual commands use, then a summary of where everything is. The data are procedurally
drawn lesions (``synthetic-lesions``), not dermoscopy: the demo shows the machinery, not a
medical result.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

#: the demo run: the smoke preset, longer, with in-training KID (best checkpoint) -- a few minutes on 2 cores;
#: tracked in the same experiment as `augforge train` ("augforge"), so the UI compares them side by side
DEMO = {"train.steps": 200, "train.eval_every": 50, "train.eval_metric": "kid", "train.checkpoint_every": 50,
        "train.sample_every": 50}
#: --quick: seconds, for tests
QUICK = {"train.steps": 6, "train.eval_every": 3, "train.eval_metric": "kid", "train.checkpoint_every": 3,
         "train.sample_every": 3, "train.log_every": 1, "train.batch_size": 8, "dataset.n_per_class": 16,
         "dataset.classes": ["nv", "mel", "bcc"]}


def run_demo(out: str | Path = "outputs/demo", *, quick: bool = False, overrides: dict | None = None,
             echo=click.echo) -> dict[str, Path | str | None]:
    """Run every stage; returns the paths it wrote (also printed)."""
    from augforge.config import resolve
    from augforge.data import load_splits
    from augforge.data.cli import contact_sheet
    from augforge.evaluation import evaluate_checkpoint_full
    from augforge.export import export_checkpoint
    from augforge.export.generate import generate_images
    from augforge.tracking import default_tracking_uri
    from augforge.training import train

    out = Path(out)
    t_all = time.perf_counter()
    cfg = resolve("smoke", {**(QUICK if quick else DEMO), "train.out_dir": str(out / "runs"), **(overrides or {})})

    def stage(n: int, title: str) -> float:
        echo(click.style(f"\n[{n}/5] {title}", bold=True))
        return time.perf_counter()

    t = stage(1, f"data: {cfg.data.name} at {cfg.data.image_size} px (procedurally drawn lesions, not dermoscopy)")
    arrays, splits = load_splits(cfg)
    counts = {name: int((arrays.labels == k).sum()) for k, name in enumerate(arrays.class_names)}
    echo("  " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f"; split by lesion: "
         + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    sheet = out / "data_contact_sheet.png"
    sheet.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(arrays, per_class=8).save(sheet)
    echo(f"  contact sheet {sheet} ({time.perf_counter() - t:.0f} s)")

    t = stage(2, f"train: {cfg.model.generator}, {cfg.train.steps} steps of {cfg.train.batch_size}, KID every {cfg.train.eval_every} steps")
    result = train(cfg)
    ckpt = result.best_checkpoint or result.checkpoint
    echo(f"  {result.status} in {time.perf_counter() - t:.0f} s: run folder {result.run_dir}, checkpoint {ckpt}")

    t = stage(3, "evaluate: the cheap evaluators against the real held-out lesions")
    evaluation = evaluate_checkpoint_full(ckpt, n_per_class=8 if quick else 50, out_dir=out / "evaluation",
                                          metrics=["kid", "detection-rate"] if quick else None)
    shown = {k: v for k, v in evaluation.metrics.items() if not k.startswith("seconds_")}
    for key in list(shown)[:12]:
        echo(f"  {key:<28} {shown[key]:.4g}")
    echo(f"  report {evaluation.report} ({time.perf_counter() - t:.0f} s)")

    t = stage(4, "export: ONNX with metadata, checked against PyTorch")
    onnx_path = export_checkpoint(ckpt, out / "generator.onnx")
    echo(f"  {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - t:.0f} s)")

    t = stage(5, "generate: PNGs + HAM10000-style metadata.csv")
    per_class = 2 if quick else 20
    gen = generate_images(onnx_path, out / "synthetic", per_class=per_class, seed=0, overwrite=True, progress=not quick)
    from PIL import Image

    images = np.stack([np.asarray(Image.open(p)) for p in sorted((gen.out / "images").glob("*.png"))])
    import pandas as pd

    meta = pd.read_csv(gen.metadata_csv)
    names = list(dict.fromkeys(meta["dx"]))
    grid = out / "synthetic_contact_sheet.png"
    contact_sheet(SimpleNamespace(images=images, labels=np.array([names.index(d) for d in meta["dx"]]), class_names=names),
                  per_class=min(8, per_class)).save(grid)
    echo(f"  {gen.n_images} images in {time.perf_counter() - t:.0f} s")

    uri = cfg.tracking.uri or default_tracking_uri()
    paths = {"images": gen.out / "images", "metadata": gen.metadata_csv, "synthetic_sheet": grid, "report": evaluation.report,
             "onnx": onnx_path, "run_dir": result.run_dir, "run_id": result.run_id, "tracking_uri": uri}
    echo(click.style(f"\ndone in {time.perf_counter() - t_all:.0f} s", bold=True))
    echo(f"  synthetic images   {paths['images']}  (metadata {paths['metadata']}, overview {grid})")
    echo(f"  evaluation report  {paths['report']}")
    echo(f"  ONNX generator     {onnx_path}  (torch-free use: augforge.runtime.SyntheticLesions)")
    echo(f"  training run       {result.run_dir}  (MLflow run {result.run_id}, experiment {cfg.tracking.experiment})")
    echo(f"  MLflow UI          mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000")
    return paths


@click.command("demo")
@click.option("--out", default="outputs/demo", show_default=True, help="Folder for the demo's run, report, ONNX file and images.")
@click.option("--quick", is_flag=True, help="A seconds-long version (tiny data and 6 steps), for tests.")
@click.option("--steps", type=int, default=None, help="Training steps (default 200; 6 with --quick).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config override on top of the demo's.")
def demo_command(out, quick, steps, sets):
    """The whole pipeline on the embedded synthetic data: data, train, evaluate, export, generate."""
    from augforge.config import parse_set

    overrides = parse_set(sets)
    if steps is not None:
        overrides["train.steps"] = steps
    run_demo(out, quick=quick, overrides=overrides)
