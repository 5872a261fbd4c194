"""One prepared command for a borrowed GPU (docs/scaling.md, "GPU"): evidence in under 8 minutes.

    scripts/device-check.sh OUT [--cpu --tiny] [--data DIR] [--budget-s 450] [--only a,b] [--cap-scale 1]

Stages, most valuable first, each under its own time cap inside one overall budget; a stage
that fails or runs out of time is recorded and the next one runs:

    env         GPU, torch/CUDA, which optional packages are missing and how that is handled
    train       the `modern` preset at 64 px on the HAM10000 sample (--no-track), best.pt by
                KID (train.eval_every) and a wall-time guard: SIGINT at the cap, on which the
                loop finishes its step, checkpoints and stops (status KILLED, exit 130)
    export      `augforge export` of best.pt -> generator.onnx; the last sample grid
    throughput  augforge.device.bench: img/s per model x size x mode, data-wait share
    resume      N steps straight vs N/2 + `--resume` to N: bitwise on CPU, within tolerance on CUDA
    ddp         torchrun --nproc_per_node=1: `augforge train` and a DDP probe (NCCL; gloo on CPU)
    sweep       `augforge sweep`, 4 trials, median pruner, when optuna and mlflow import

OUT gets at most 8 files of at most 16 MiB each (what the device tool brings back): report.json
(the sweep's trials table included), report.md, log.txt, generator.onnx (from best.pt; when
the export fails there, best-generator.pt: best.pt without D and optimisers), samples.png, and last.pt, split into 16 MiB parts when larger (``cat last.pt.part-* > last.pt``);
best.pt too when it fits in one file. Scratch (run folders, decode cache, detector) goes to
--work. ``--cpu --tiny`` runs every stage at toy size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

MAX_FILE_BYTES = 16 * 2**20  # the device tool's limit per returned file
HAM = "data/ham10000-200x150"  # under the shared folder, next to the repository
#: stage -> time cap in seconds (GPU, tiny CPU); the overall budget cuts them further
CAPS = {
    "env": (30, 90), "train": (150, 420), "export": (45, 180), "throughput": (110, 200),
    "resume": (60, 300), "ddp": (50, 240), "sweep": (90, 420),
}
STAGES = tuple(CAPS)
#: optional package -> what happens without it
OPTIONAL = {
    "mlflow": "train runs with --no-track, export reads the checkpoint file; the sweep (nested MLflow runs) is skipped",
    "optuna": "the sweep is skipped (make device-wheels; the sweep also needs mlflow)",
    "albumentations": "not needed: data.augment=none keeps the uint8 split resident on the device",
    "matplotlib": "no loss_curve.png (augforge.grid warns and goes on)",
    "onnxscript": "export falls back to TorchScript, which refuses sngan (measured): best-generator.pt comes back instead",
}
#: the `modern` recipe at toy width (--tiny)
TINY = {"train.batch_size": 8, "data.image_size": 32, "model.latent_dim": 32, "generator.channels": 8,
        "discriminator.channels": 8}
REQUIRED = ("torch", "numpy", "pandas", "PIL", "onnx", "onnxruntime", "scipy", "sklearn", "click", "pluggy", "rich", "tqdm")


def _flags(sets: dict) -> list[str]:
    return [x for k, v in sets.items() for x in ("--set", f"{k}={v}")]


def _slim_generator(src: Path, dst: Path) -> None:
    """The checkpoint without discriminator and optimisers (~1/4 of the size): enough for
    `augforge export`/`generate`/`evaluate --checkpoint`, not for --resume."""
    from augforge.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(src)
    drop = ("format", "discriminator", "opt_g", "opt_d", "rng", "extra")
    save_checkpoint(dst, {k: v for k, v in state.items() if k not in drop})


def _version(module: str) -> str:
    from importlib import metadata

    try:
        return metadata.version({"PIL": "pillow", "sklearn": "scikit-learn"}.get(module, module))
    except metadata.PackageNotFoundError:
        return "?"


class Check:
    def __init__(self, out: Path, work: Path, cpu: bool, tiny: bool, data: str | None, budget_s: float,
                 cap_scale: float = 1.0):
        self.out, self.work, self.cpu, self.tiny, self.cap_scale = out, work, cpu, tiny, cap_scale
        self.deadline = time.monotonic() + budget_s
        self.report: dict = {"args": {"cpu": cpu, "tiny": tiny, "budget_s": budget_s, "work": str(work)},
                             "stages": {}, "files": {}}
        self.log = work / "log.txt"
        self.data = self._data(data)
        self.env = {**os.environ, "AUGFORGE_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
        if cpu:
            self.env["CUDA_VISIBLE_DEVICES"] = ""  # nothing may touch a GPU in a CPU check
        self.device = "cpu" if cpu else "cuda"

    # ---- plumbing ---------------------------------------------------------------------------
    def _data(self, given: str | None) -> dict:
        roots = [given] if given else [f"../shared/{HAM}", f"shared/{HAM}", f"/work/shared/{HAM}"]
        for root in roots:
            if root and (Path(root) / "HAM10000_metadata.csv").is_file():
                # tiny: 20 images per class keep the decode and the detector at seconds
                return {"name": "ham10000", "root": root, "max_per_class": 20 if self.tiny else 0}
        if given:
            raise SystemExit(f"--data {given}: no HAM10000_metadata.csv there; give the HAM10000 folder")
        return {"name": "synthetic-lesions", "root": None, "max_per_class": 0}

    def _data_sets(self) -> list[str]:
        """--set flags of the dataset (train and sweep both take them)."""
        d = self.data
        sets = {"data.name": d["name"]}
        if d["name"] == "synthetic-lesions":
            sets["dataset.n_per_class"] = 24
        else:
            sets["dataset.root"] = d["root"]
            if d["max_per_class"]:
                sets["dataset.max_per_class"] = d["max_per_class"]
        return _flags(sets)

    def _smoke(self) -> list[str]:
        """The `smoke` preset on the train stage's data at its image size (decoded and cached)."""
        sets = {"data.image_size": 32 if self.tiny else 64, **({"train.device": "cpu"} if self.cpu else {})}
        return ["--preset", "smoke", *self._data_sets(), *_flags(sets)]

    def sh(self, args: list[str], cap: float, grace: float = 30.0) -> dict:
        """Run ``args`` (a list; ``augforge`` means this Python's CLI) with stdout into log.txt.
        At ``cap - grace`` seconds the process group gets SIGINT, at ``cap`` SIGKILL."""
        grace = min(grace, cap / 4)
        if args[0] == "augforge":
            args = [sys.executable, "-m", "augforge.cli", *args[1:]]
        with self.log.open("a") as log:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
            t0 = time.monotonic()
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
            guard = None
            try:
                proc.wait(timeout=max(1.0, cap - grace))
            except subprocess.TimeoutExpired:
                guard = "SIGINT"
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    guard = "SIGKILL"
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            seconds = round(time.monotonic() - t0, 1)
            log.write(f"# exit {proc.returncode} after {seconds} s{f', wall-time guard {guard}' if guard else ''}\n")
        return {"rc": proc.returncode, "seconds": seconds, "guard": guard}

    def keep(self, src: Path, name: str, parts: int = 1) -> bool:
        """Copy ``src`` into OUT as ``name``, or as ``name.part-0`` ... (at most ``parts`` pieces
        of 16 MiB; ``cat name.part-* > name`` joins them) when it is larger than one file may be."""
        if not src.is_file():
            self.report["files"][name] = "missing"
            return False
        size = src.stat().st_size
        n = -(-size // MAX_FILE_BYTES)
        if n > parts:
            self.report["files"][name] = f"not returned: {size / 2**20:.1f} MiB > {parts} x 16 MiB"
            return False
        if n <= 1:
            shutil.copyfile(src, self.out / name)
        else:
            with src.open("rb") as f:
                for i in range(n):
                    (self.out / f"{name}.part-{i}").write_bytes(f.read(MAX_FILE_BYTES))
        self.report["files"][name] = f"{size / 2**20:.2f} MiB" + (f" in {n} parts: cat {name}.part-* > {name}" if n > 1 else "")
        return True

    def run(self, only: list[str]) -> dict:
        for name in STAGES:
            if only and name not in only:
                continue
            cap = min(CAPS[name][1 if self.tiny else 0] * self.cap_scale, self.deadline - time.monotonic())
            if cap < 10:
                self.report["stages"][name] = {"status": "skipped", "reason": "overall budget spent"}
                continue
            t0 = time.monotonic()
            try:
                result = getattr(self, f"stage_{name}")(cap)
            except Exception as exc:
                result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()[-2000:]}
            result.setdefault("status", "ok")
            self.report["stages"][name] = {**result, "seconds": round(time.monotonic() - t0, 1), "cap_s": round(cap)}
            self.write()
        self.write(final=True)
        return self.report

    def write(self, final: bool = False) -> None:
        from augforge.device.report import markdown

        if final:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            (self.out / "log.txt").write_text(text[-4 * 2**20 :])  # the tail: it must come back
            files = sorted(p.name for p in self.out.iterdir())
            self.report["returned"] = {n: (self.out / n).stat().st_size for n in files if n != "report.json"}
        (self.out / "report.json").write_text(json.dumps(self.report, indent=1, default=str) + "\n")
        (self.out / "report.md").write_text(markdown(self.report))

    # ---- stages -----------------------------------------------------------------------------
    def stage_env(self, cap: float) -> dict:
        import torch

        from augforge import registry
        from augforge.plugins import get_plugin_manager

        env = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
               "device": self.device, "data": self.data}
        if not self.cpu:
            if not torch.cuda.is_available():
                raise RuntimeError("no CUDA device visible to torch; run with --cpu for the CPU check")
            p = torch.cuda.get_device_properties(0)
            env["gpu"] = {"name": p.name, "count": torch.cuda.device_count(), "memory_gib": round(p.total_memory / 2**30, 1),
                          "capability": f"{p.major}.{p.minor}", "bf16": torch.cuda.is_bf16_supported()}
            smi = shutil.which("nvidia-smi")
            if smi:
                q = "name,driver_version,memory.total,mig.mode.current"
                env["nvidia_smi"] = subprocess.run([smi, f"--query-gpu={q}", "--format=csv,noheader"],
                                                   capture_output=True, text=True, timeout=20).stdout.strip()
        versions, missing = {}, {}
        for name in (*REQUIRED, *OPTIONAL):
            try:
                importlib.import_module(name)
                versions[name] = _version(name)
            except ImportError as exc:
                versions[name] = None
                missing[name] = OPTIONAL.get(name, f"REQUIRED and missing: {exc}")
        env["packages"], env["missing"] = versions, missing
        pm = get_plugin_manager()
        env["plugins"] = {
            "source": "entry points" if pm.list_plugin_distinfo() else "augforge_plugins on PYTHONPATH (no entry points)",
            **{kind: sorted(table) for kind, table in registry.tables().items()},
        }
        self.report["env"] = env
        return {"status": "ok" if not any(n in REQUIRED for n in missing) else "failed"}

    def stage_train(self, cap: float) -> dict:
        runs = self.work / "runs"
        # the preset's full length (20,000 steps x 64); the wall-time guard stops it at the cap
        sets = {"train.steps": 20000, "train.log_every": 100, "train.eval_every": 500,
                "train.checkpoint_every": 1000, "train.sample_every": 2000}
        if self.tiny:
            sets = {"train.steps": 16, "train.log_every": 4, "train.eval_every": 8, "train.checkpoint_every": 8,
                    "train.sample_every": 8, **TINY}
        if self.cpu:
            sets["train.device"] = "cpu"
        args = ["augforge", "train", "--preset", "modern", "--no-track", *self._data_sets(), "--out-dir", str(runs),
                "--run-name", "modern", *_flags(sets)]
        r = self.sh(args, cap, grace=45.0)
        run_dir = runs / "modern"
        result = {"command": " ".join(args), "run_dir": str(run_dir), **r,
                  "status": "ok" if r["rc"] == 0 or (r["rc"] == 130 and r["guard"] == "SIGINT") else "failed"}
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            import torch

            state = torch.load(last, map_location="cpu", weights_only=True)
            extra, history = state["extra"], state["extra"].get("history") or {}
            tail = {k: v[-1] for k, v in history.items() if v and k != "step"}
            result |= {"step": state["step"], "epoch": state["epoch"], "best": extra.get("best"),
                       "last_logged": tail, "stopped_by_guard": r["guard"] is not None}
            # the full state (G, EMA, D, both Adams: ~32 MiB at 64 px) so the run continues on a CPU;
            # best.pt comes back as generator.onnx unless it fits in one file (toy sizes)
            self.keep(last, "last.pt", parts=3)
            self.keep(run_dir / "checkpoints" / "best.pt", "best.pt")
        else:
            result["status"] = "failed"
        return result

    def stage_export(self, cap: float) -> dict:
        ckpts = self.work / "runs" / "modern" / "checkpoints"
        src = ckpts / "best.pt" if (ckpts / "best.pt").is_file() else ckpts / "last.pt"
        if not src.is_file():
            return {"status": "skipped", "reason": "no checkpoint from the train stage"}
        onnx = self.work / "generator.onnx"
        r = self.sh(["augforge", "export", "--checkpoint", str(src), "--out", str(onnx)], cap)
        grids = sorted((self.work / "runs" / "modern" / "samples").glob("step_*.png"))
        if grids:
            self.keep(grids[-1], "samples.png")
        ok = r["rc"] == 0 and self.keep(onnx, "generator.onnx")
        if not ok:  # e.g. no onnxscript there and the TorchScript exporter refuses the model
            _slim_generator(src, self.work / "best-generator.pt")
            self.keep(self.work / "best-generator.pt", "best-generator.pt")
        return {"status": "ok" if ok else "failed", "checkpoint": src.name, **r,
                "samples": grids[-1].name if grids else None,
                **({} if ok else {"fallback": "best-generator.pt: export it here with augforge export --checkpoint"})}

    def stage_throughput(self, cap: float) -> dict:
        path = self.work / "throughput.json"
        args = [sys.executable, "-m", "augforge.device.bench", "throughput", str(path), "--device", self.device,
                "--budget-s", str(max(5, int(cap - 25)))] + (["--tiny"] if self.tiny else [])
        r = self.sh(args, cap, grace=10)
        cells = json.loads(path.read_text())["cells"] if path.is_file() else []
        self.report["throughput"] = cells
        errors = sum("error" in c for c in cells)
        status = "ok" if r["rc"] == 0 and not errors else ("partial" if cells else "failed")
        return {"status": status, "cells": len(cells), "errors": errors, **r}

    def stage_resume(self, cap: float) -> dict:
        """Same seed and config: N steps straight vs N/2, then --resume to N."""
        import torch

        n = 8 if self.tiny else 40
        runs = self.work / "resume"
        base = ["augforge", "train", "--no-track", "--out-dir", str(runs), *self._smoke(),
                "--set", "train.log_every=2", "--set", "train.checkpoint_every=4"]
        each = cap / 3
        a = self.sh([*base, "--run-name", "straight", "--set", f"train.steps={n}"], each)
        b = self.sh([*base, "--run-name", "resumed", "--set", f"train.steps={n // 2}"], each)
        c = self.sh(["augforge", "train", "--resume", str(runs / "resumed"), "--no-track", "--set", f"train.steps={n}"], each)
        if any(x["rc"] != 0 for x in (a, b, c)):
            return {"status": "failed", "rc": [a["rc"], b["rc"], c["rc"]]}
        sa, sb = (torch.load(runs / r / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
                  for r in ("straight", "resumed"))
        worst, equal = 0.0, True
        for key in ("generator", "discriminator"):
            for name, ta in sa[key]["state"].items():
                tb = sb[key]["state"][name]
                equal = equal and torch.equal(ta, tb)
                if ta.is_floating_point():
                    worst = max(worst, float((ta.double() - tb.double()).abs().max()))
        # CUDA kernels (cudnn.benchmark, atomics, bf16) are not bitwise reproducible: a resumed
        # run may drift by rounding; 1e-2 absolute on weights of order 0.1 says "same run"
        tolerance = 0.0 if self.cpu else 1e-2
        ok = sa["step"] == sb["step"] == n and (equal if self.cpu else worst <= tolerance)
        return {"status": "ok" if ok else "failed", "steps": n, "resumed_at": n // 2, "bitwise_equal": equal,
                "max_abs_diff": worst, "tolerance": tolerance}

    def stage_ddp(self, cap: float) -> dict:
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
        args = [*run, "-m", "augforge.cli", "train", "--no-track", "--out-dir", str(self.work / "ddp"),
                "--run-name", "torchrun", *self._smoke(), "--set", "train.steps=6"]
        t = self.sh(args, cap / 2)
        probe = self.work / "ddp-probe.json"
        p = self.sh([*run, "-m", "augforge.device.bench", "ddp-probe", str(probe)], cap / 2)
        found = json.loads(probe.read_text()) if probe.is_file() else None
        ok = t["rc"] == 0 and p["rc"] == 0 and bool(found) and found["all_reduce_sum"] == 1.0 and found["grad_finite"]
        return {"status": "ok" if ok else "failed", "train_rc": t["rc"], "probe_rc": p["rc"], "probe": found,
                "note": "the training loop runs world size 1 without a process group; the probe runs DDP itself"}

    def stage_sweep(self, cap: float) -> dict:
        for name in ("optuna", "mlflow"):
            try:
                importlib.import_module(name)
            except ImportError:
                return {"status": "skipped", "reason": f"{name} is not importable"}
        import optuna

        storage = f"sqlite:///{self.work / 'optuna.db'}"
        steps = {"train.steps": 8} if self.tiny else {"train.steps": 200, "train.log_every": 50}
        steps["train.out_dir"] = self.work / "sweep-runs"
        args = ["augforge", "sweep", "--preset", "modern", *self._data_sets(), "--trials", "4", "--pruner", "median",
                "--eval-every", "4" if self.tiny else "50", "--startup-trials", "2", "--storage", storage,
                "--study", "device-check", "--tracking-uri", f"sqlite:///{self.work / 'mlflow.db'}", "--no-register",
                "--device", self.device, *_flags({**steps, **(TINY if self.tiny else {})})]
        r = self.sh(args, cap)
        study = optuna.load_study(study_name="device-check", storage=storage)
        table = study.trials_dataframe()  # into report.json: the returned files are counted
        self.report["trials"] = json.loads(table.to_json(orient="records", date_format="iso"))
        states = [t.state.name for t in study.trials]
        return {"status": "ok" if r["rc"] == 0 else "failed", **r, "trials": {s: states.count(s) for s in set(states)}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m augforge.device.check", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder that receives the (at most 8) files to bring back")
    p.add_argument("--cpu", action="store_true", help="run on the CPU (CUDA hidden)")
    p.add_argument("--tiny", action="store_true", help="toy sizes: every stage in minutes on a CPU")
    p.add_argument("--data", default=None, help=f"HAM10000 folder (default: ../shared/{HAM}, shared/{HAM}, /work/shared/{HAM})")
    p.add_argument("--budget-s", type=float, default=None, help="overall wall budget (default 450; tiny 1500)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    p.add_argument("--cap-scale", type=float, default=1.0, help="multiply every stage's time cap (a slow or busy machine)")
    p.add_argument("--only", default="", help=f"comma-separated stages to run: {', '.join(STAGES)}")
    a = p.parse_args(argv)
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    bad = sorted(set(only) - set(STAGES))
    if bad:
        p.error(f"--only {','.join(bad)}: unknown stage; valid: {', '.join(STAGES)}")
    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="augforge-device-check-"))
    work.mkdir(parents=True, exist_ok=True)
    budget = a.budget_s if a.budget_s is not None else (1500.0 if a.tiny else 450.0)
    report = Check(a.out.resolve(), work.resolve(), a.cpu, a.tiny, a.data, budget * a.cap_scale, a.cap_scale).run(only)
    states = {n: s["status"] for n, s in report["stages"].items()}
    print(json.dumps(states), file=sys.stderr)
    print(f"report: {a.out / 'report.md'}", file=sys.stderr)
    sys.exit(0 if all(s in ("ok", "skipped") for s in states.values()) else 1)


if __name__ == "__main__":
    main()
