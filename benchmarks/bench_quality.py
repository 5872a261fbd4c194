"""Quality per CPU-minute: a race of GAN recipes at an equal wall budget on this machine.

    python benchmarks/bench_quality.py run --minutes 42 --parallel 2          # train, evaluate, report
    python benchmarks/bench_quality.py run --recipes fast,fast-lecam-topk     # a subset
    python benchmarks/bench_quality.py evaluate   # (again) the final evaluation of finished race runs
    python benchmarks/bench_quality.py report     # table + curves + JSON from the tracked runs
    python benchmarks/bench_quality.py list       # the recipes

Each recipe is an `augforge train` command line (a preset plus `--set` overrides) trained on
the shared HAM10000 sample at 64 px for ``--minutes`` of wall time (`train.max_minutes`) with
``--threads`` torch threads; ``--parallel`` recipes run side by side so they meet the same
load. Every ``--eval-minutes`` the in-training evaluator scores the EMA generator on the
**val** split: KID (keeps `best.pt`, unless the recipe's preset names another
``train.eval_metric``: ``modern-cpu`` keeps it by FID), FID, detection rate per class, precision/recall and
blockiness, with the minutes of training and of process CPU as x-axes. At the end the best
checkpoint of each run is evaluated once on the **test** split (`augforge evaluate --best`:
one c2st judge, blockiness at 4/8/16 px, KID, FID, detection rate, precision/recall,
memorization, generated images JPEG-compressed at quality 75 like the real ones).
Outputs in benchmarks/out/quality/: race.md (table), race_curves.png, race.json. The runs are
tracked in the MLflow experiment ``race`` (``race-<recipe>``), so the MLflow UI compares them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "quality"
HAM = ROOT.parent / "shared" / "data" / "ham10000-200x150"
EXPERIMENT = "race"
# what the in-training evaluator logs beside KID (all cheap, all on the val split)
EVAL_EXTRA = "fid,detection-rate,precision-recall,blockiness"
FINAL_METRICS = "kid,fid,detection-rate,precision-recall,c2st,memorization,blockiness,spectral-peak"

_V1 = {"generator.channels": 16, "discriminator.channels": 16, "train.batch_size": 32}  # modern-cpu as of v0.1
_FAST = {**_V1, "train.amp": "bf16", "train.channels_last": True, "generator.upsample": "bilinear"}
_DECAY = {"train.lr_decay": "linear", "train.lr_decay_start": 0.25}
_LEVERS = {"train.lecam_weight": 0.3, "train.topk_min": 0.5, "train.topk_decay": 0.99}
_NO_AC = {"discriminator.class_head": False, "train.ac_weight": 0.0}  # the preset before round 7

#: name -> (preset, --set overrides, what it tests)
RECIPES: dict[str, tuple[str, dict, str]] = {
    "modern-cpu-v1": ("modern", _V1, "the first modern-cpu preset: SNGAN 16/16, fp32, nearest upsampling, batch 32"),
    "paper-b": ("paper-b", {}, "paper B's cDCGAN (BCE + GP), as published"),
    "fast": ("modern", _FAST, "v1 + bf16 autocast + channels_last (speed) + bilinear upsampling (blocks)"),
    "fast-lecam-topk": ("modern", {**_FAST, **_LEVERS}, "fast + LeCam 0.3 + top-k (0.99/epoch down to 0.5)"),
    "fast-lecam-topk-cr": ("modern", {**_FAST, **_LEVERS, "train.cr_weight": 1.0},
                           "fast-lecam-topk + balanced consistency regularisation (2 extra D passes)"),
    "fast-lecam-topk-ssl": ("modern", {**_FAST, **_LEVERS, "discriminator.decoder": True, "train.ssl_weight": 1.0},
                            "fast-lecam-topk + D reconstructs the image from its 8x8 features (FastGAN-style, L1)"),
    "fast-lecam-topk-d24": ("modern", {**_FAST, **_LEVERS, "discriminator.channels": 24},
                            "fast-lecam-topk with a 1.5x wider D"),
    "fast-lecam-topk-decay": ("modern", {**_FAST, **_LEVERS, **_DECAY},
                              "fast-lecam-topk + both learning rates fall linearly to 0 over the last 75 % of the budget"),
    "fast-lecam-topk-decay-g24": ("modern", {**_FAST, **_LEVERS, **_DECAY, "generator.channels": 24},
                                  "fast-lecam-topk-decay with a 1.5x wider G (diversity: recall was 0.29)"),
    "fast-lecam-topk-decay-ms": ("modern", {**_FAST, **_LEVERS, **_DECAY, "train.ms_weight": 1.0},
                                 "fast-lecam-topk-decay + MSGAN's mode-seeking term (pairs of z per class must differ)"),
    "fast-lecam-topk-decay-ms0.1": ("modern", {**_FAST, **_LEVERS, **_DECAY, "train.ms_weight": 0.1},
                                    "fast-lecam-topk-decay + mode seeking at a tenth of the weight that broke training"),
    "modern-cpu": ("modern-cpu", {}, "the modern-cpu preset as it is now (G 24 since round 6, auxiliary classifier since round 7)"),
    "modern-cpu-noac": ("modern-cpu", _NO_AC, "the modern-cpu preset of round 6 (G 24, no auxiliary classifier)"),
    "modern-cpu-g16": ("modern-cpu", {**_NO_AC, "generator.channels": 16},
                       "the modern-cpu preset of rounds 4-5 (G 16; race round 5's row 'modern-cpu')"),
    "modern-cpu-d24": ("modern-cpu", {**_NO_AC, "generator.channels": 16, "discriminator.channels": 24},
                       "the G-16 modern-cpu with a 1.5x wider D (class signal: bcc stayed below real recall)"),
}


def _tracking_uri() -> str:
    from augforge.tracking import default_tracking_uri

    return default_tracking_uri()


def _latest_run(client, name: str):
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = 'race-{name}'", order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _train_command(name: str, args) -> list[str]:
    preset, overrides, _ = RECIPES[name]
    sets = {
        **overrides, "train.steps": 10**7, "train.max_minutes": args.minutes, "train.threads": args.threads,
        "train.eval_every": 0, "train.eval_every_minutes": args.eval_minutes, "train.eval_extra": EVAL_EXTRA,
        "train.budget_clock": args.clock,
        "train.checkpoint_every": 200, "train.sample_every": 1000, "train.out_dir": str(args.runs),
        "tracking.experiment": EXPERIMENT, "tracking.run_name": f"race-{name}",
    }
    cmd = [sys.executable, "-m", "augforge.cli", "train", "--dataset", "ham10000", "--root", str(args.data),
           "--preset", preset, "--image-size", str(args.image_size)]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    return cmd


def run(args) -> None:
    names = _names(args.recipes)
    if not Path(args.data, "HAM10000_metadata.csv").exists():
        sys.exit(f"bench_quality: no HAM10000 sample at {args.data} (HAM10000_metadata.csv); pass --data")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    OUT.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(names), args.parallel):
        batch = names[start : start + args.parallel]
        print(f"[{time.strftime('%H:%M:%S')}] training {', '.join(batch)} side by side for {args.minutes} min", flush=True)
        procs = {}
        for i, name in enumerate(batch):
            log = open(OUT / f"train_{name}.log", "w")
            procs[name] = subprocess.Popen(_train_command(name, args), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            if i == 0 and len(batch) > 1:
                time.sleep(20)  # the first one creates the tracking store and the data cache alone
        for name, proc in procs.items():
            if proc.wait() != 0:
                print(f"  {name}: training failed (exit {proc.returncode}); see {OUT / f'train_{name}.log'}", flush=True)
    if not args.skip_eval:
        evaluate(args)
    report(args)


def evaluate(args) -> None:
    """The final test-split evaluation of each recipe's latest race run, ``--parallel`` side by side."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_tracking_uri())
    env = {**os.environ, "OMP_NUM_THREADS": str(args.eval_threads), "MKL_NUM_THREADS": str(args.eval_threads)}
    jobs = []
    for name in _names(args.recipes):
        r = _latest_run(client, name)
        if r is None:
            print(f"  {name}: no race run tracked; skipped", flush=True)
            continue
        cmd = [sys.executable, "-m", "augforge.cli", "evaluate", "--run", r.info.run_id, "--best", "--metrics", FINAL_METRICS,
               "--n-per-class", str(args.n_per_class), "--jpeg-quality", "75", "--set", f"c2st.repeats={args.judges}",
               "--out", str(OUT / f"eval_{name}")]
        jobs.append((name, r.info.run_id, cmd))
    running: list[tuple[str, subprocess.Popen]] = []
    while jobs or running:
        while jobs and len(running) < args.parallel:
            name, run_id, cmd = jobs.pop(0)
            print(f"[{time.strftime('%H:%M:%S')}] evaluating {name} (run {run_id}, best checkpoint, test split)", flush=True)
            running.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(OUT / f"eval_{name}.log", "w"),
                                                   stderr=subprocess.STDOUT)))
        time.sleep(2)
        for name, proc in [(n, p) for n, p in running if p.poll() is not None]:
            running.remove((name, proc))
            if proc.returncode != 0:
                print(f"  {name}: evaluation failed (exit {proc.returncode}); see {OUT / f'eval_{name}.log'}", flush=True)


def _history(client, run_id: str, key: str, prefix: str = "val/") -> dict[int, float]:
    """A metric's history by step: ``prefix + key`` (augforge's naming), else the bare key (runs logged before it)."""
    got = client.get_metric_history(run_id, prefix + key) or client.get_metric_history(run_id, key)
    return {m.step: m.value for m in got}


def report(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    client = MlflowClient(_tracking_uri())
    rows, curves = [], {}
    for name in _names(args.recipes):
        r = _latest_run(client, name)
        if r is None:
            continue
        rid, params = r.info.run_id, r.data.params
        # x-axis: minutes of the loop on the run's budget clock (CPU time for `--clock cpu`; wall
        # time for wall-clock runs, which at one thread on an otherwise reserved core is CPU time too)
        minutes = _history(client, rid, "train_minutes")
        cpu = _history(client, rid, "process_cpu_minutes")
        chosen_by = params.get("train.eval_metric", "kid")  # what kept best.pt (modern-cpu: fid)
        series = {k: _history(client, rid, k) for k in ("kid", "fid", "recall", "precision", "detection_rate", "blockiness_8")}
        steps = sorted(minutes)
        curves[name] = {"minutes": [minutes[s] for s in steps], "cpu_minutes": [cpu.get(s) for s in steps],
                        "step": steps, **{k: [v.get(s) for s in steps] for k, v in series.items()}}
        final = {}
        metrics_file = OUT / f"eval_{name}" / "metrics.json"
        if metrics_file.exists():
            final = json.loads(metrics_file.read_text())
        kept = series.get(chosen_by) or _history(client, rid, chosen_by)
        best_step = min(kept, key=kept.get) if kept else None
        ips = list(_history(client, rid, "images_per_s", prefix="train/").values())
        batch = int(params.get("train.batch_size", 0) or 0)
        last_step = max(steps) if steps else 0
        rows.append({
            "recipe": name, "run_id": rid, "status": r.info.status, "clock": params.get("train.budget_clock", "wall"), "stop": r.data.tags.get("stop_reason", ""),
            "steps": last_step, "images_seen": last_step * batch,
            "images_per_s": sorted(ips)[len(ips) // 2] if ips else None,
            "train_minutes": minutes.get(last_step), "cpu_minutes": cpu.get(last_step),
            "best_step": best_step, "best_minute": minutes.get(best_step) if best_step else None,
            "chosen_by": chosen_by, "val_best": kept.get(best_step) if best_step else None,
            "val_kid_at_best": series["kid"].get(best_step) if best_step else None,
            "val_fid_at_best": series["fid"].get(best_step) if best_step else None,
            "val_recall_at_best": series["recall"].get(best_step) if best_step else None,
            "val_blockiness_8_at_best": series["blockiness_8"].get(best_step) if best_step else None,
            **{f"test_{k}": final.get(k) for k in (
                "kid", "fid", "precision", "recall", "c2st_accuracy", "memorization", "blockiness_4", "blockiness_8",
                "blockiness_16", "detection_rate_nv", "detection_rate_mel", "detection_rate_bkl", "detection_rate_bcc",
                "real_recall_nv", "real_recall_mel", "real_recall_bkl", "real_recall_bcc", "blockiness_8_real_baseline",
                "spectral_peak", "spectral_peak_period_px", "spectral_peak_real_baseline")},
            "what": RECIPES[name][2],
        })
    if not rows:
        sys.exit("bench_quality: no race runs tracked yet; run `bench_quality.py run` first")
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"machine": _machine(), "minutes": args.minutes, "threads": args.threads, "rows": rows, "curves": curves}
    (OUT / "race.json").write_text(json.dumps(payload, indent=2, default=float))
    (OUT / "race.md").write_text(_table(rows))
    keys = [("kid", "KID (val, detector features)"), ("fid", "FID (val)"), ("recall", "k-NN recall (val)"),
            ("blockiness_8", "blockiness at 8 px (1 = none)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for ax, (key, title) in zip(axes, keys):
        for name, c in curves.items():
            pts = [(m, v) for m, v in zip(c["minutes"], c[key]) if v is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("training CPU minutes (1 thread)")
        if key in ("kid", "fid"):
            ax.set_yscale("log")
    axes[1].legend(fontsize=7)  # every recipe logs FID; KID only where it keeps best.pt
    fig.tight_layout()
    fig.savefig(OUT / "race_curves.png", dpi=110)
    print(_table(rows))
    print(f"wrote {OUT / 'race.md'}, {OUT / 'race_curves.png'}, {OUT / 'race.json'}")
    return payload


def _fmt(v, spec=".3g") -> str:
    return "—" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def _table(rows: list[dict]) -> str:
    head = ("| recipe | steps | images | img/s | best.pt: val metric (min) | val FID | val recall | test KID | test FID "
            "| test precision / recall | c2st (1 judge) | det. nv / mel / bkl / bcc % | blockiness 4 / 8 / 16 px | spectral peak (period px) | memorization |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        det = " / ".join(_fmt(None if r[f"test_detection_rate_{c}"] is None else 100 * r[f"test_detection_rate_{c}"], ".0f")
                         for c in ("nv", "mel", "bkl", "bcc"))
        blk = " / ".join(_fmt(r[f"test_blockiness_{b}"], ".2f") for b in (4, 8, 16))
        lines.append(
            f"| {r['recipe']} | {r['steps']} | {r['images_seen'] // 1000}k | {_fmt(r['images_per_s'], '.1f')} "
            f"| {r['chosen_by']} {_fmt(r['val_best'])} ({_fmt(r['best_minute'], '.0f')}) | {_fmt(r['val_fid_at_best'])} "
            f"| {_fmt(r['val_recall_at_best'], '.2f')} | {_fmt(r['test_kid'])} | {_fmt(r['test_fid'])} "
            f"| {_fmt(r['test_precision'], '.2f')} / {_fmt(r['test_recall'], '.2f')} | {_fmt(r['test_c2st_accuracy'], '.3f')} "
            f"| {det} | {blk} | {_fmt(r.get('test_spectral_peak'), '.2f')} ({_fmt(r.get('test_spectral_peak_period_px'), '.1f')}) "
            f"| {_fmt(None if r['test_memorization'] is None else 100 * r['test_memorization'], '.2f')} % |")
    real = next((r for r in rows if r.get("test_real_recall_nv") is not None), None)
    if real:
        rec = " / ".join(_fmt(100 * real[f"test_real_recall_{c}"], ".0f") for c in ("nv", "mel", "bkl", "bcc"))
        lines.append(f"\nReal held-out lesions: detector recall nv / mel / bkl / bcc {rec} %; "
                     f"blockiness at 8 px {_fmt(real['test_blockiness_8_real_baseline'], '.2f')}; spectral peak of two real "
                     f"halves {_fmt(real.get('test_spectral_peak_real_baseline'), '.2f')}.")
    return "\n".join(lines) + "\n"


def _machine() -> dict:
    import platform

    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "load_1min": os.getloadavg()[0]}


def _names(spec: str) -> list[str]:
    names = [n.strip() for n in spec.split(",") if n.strip()] if spec else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        sys.exit(f"bench_quality: unknown recipe(s) {unknown}; valid: {', '.join(RECIPES)}")
    return names


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # no command (as `make bench` calls it): list the recipes; the race itself takes hours, so it is asked for by name
    p.add_argument("command", nargs="?", default="list", choices=["run", "evaluate", "report", "list"])
    p.add_argument("--recipes", default="", help=f"comma-separated; default all: {', '.join(RECIPES)}")
    p.add_argument("--minutes", type=float, default=45.0, help="budget per recipe in minutes (train.max_minutes)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="cpu",
                   help="what the budget counts (train.budget_clock); cpu stays fair when more recipes than cores share the machine")
    p.add_argument("--threads", type=int, default=1, help="torch threads per recipe")
    p.add_argument("--parallel", type=int, default=2, help="recipes trained (and finally evaluated) side by side")
    p.add_argument("--eval-threads", type=int, default=1, help="torch threads of each final evaluation")
    p.add_argument("--eval-minutes", type=float, default=5.0, help="in-training evaluation period (minutes)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--n-per-class", type=int, default=200, help="generated images per class in the final evaluation")
    p.add_argument("--judges", type=int, default=1, help="c2st judges in the final evaluation")
    p.add_argument("--data", type=Path, default=HAM)
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "race")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args(argv)
    if args.command == "list":
        for name, (preset, over, what) in RECIPES.items():
            print(f"{name:22s} --preset {preset} {' '.join(f'--set {k}={v}' for k, v in over.items())}\n{'':22s} {what}")
        return
    {"run": run, "evaluate": evaluate, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
