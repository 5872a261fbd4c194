"""Training throughput: our loop vs a minimal plain-PyTorch loop on the same networks.

For each model family (dcgan, cdcgan, sngan, each with its preset's training recipe) and
image size, in the same process:

- **ours**: ``augforge.train.train`` (no tracking, no mid-run checkpoints or grids). Both
  loops are timed by the interval between successive generator updates (median over the
  steps after up to 3 warm-up steps), so start-up (data cache, model build, final
  checkpoint) is not counted, while everything the loop does per step (sampling order, batch gather, NaN check,
  metrics and grad norms at log steps, EMA, DiffAugment) is.
- **plain**: the same G and D, loss, penalties, DiffAugment and EMA in a bare loop over a
  float tensor already in memory, with random batches — what a hand-written script does.

overhead = ours step time / plain step time - 1 (target <= 5 %), reported twice: on wall
time, and on the process's CPU time per step, which other processes on a shared machine do
not inflate (use ``--threads 1`` there: idle OpenMP threads spin and burn CPU under
contention). data share = the loop's own ``data_wait_share`` metric (time waiting for the
batch / step time; target < 5 %). Runs are interleaved ours/plain ``--repeats`` times; the
median of the repeats is reported.

    python benchmarks/bench_train.py                       # all models, 32/64/128 px, CPU
    python benchmarks/bench_train.py --models sngan --sizes 64 --device cuda --batch-size 64
    python benchmarks/bench_train.py --models fake --sizes 16 --steps 300 --repeats 3 --threads 1

The ``fake`` model (augforge.testing: one linear + one conv layer) is the overhead probe: its
step costs almost nothing, so ours - plain per step is the loop's fixed cost per step in
milliseconds, measured over hundreds of steps; divided by a real model's step time it gives
that model's overhead without the noise of timing two long runs on a busy machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PRESET_OF = {"dcgan": "paper-a", "cdcgan": "paper-b", "sngan": "modern", "fake": ""}


class TimingTracker:
    """A NullTracker that keeps the loop's own metric logs (for ``data_wait_share``)."""

    run_id = None

    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def start(self, *a, **k):
        return self

    def log_metrics(self, metrics, step=None):
        if "data_wait_share" in metrics:
            self.logs.append((step, dict(metrics)))

    def log_params(self, *a, **k): ...
    def log_artifact(self, *a, **k): ...
    def log_image(self, *a, **k): ...
    def set_tags(self, *a, **k): ...
    def end(self, *a, **k): ...


class StepClock:
    """Timestamps every step of the first Adam optimiser built in a loop (G's, in both loops).

    Both loops are timed the same way — the interval between successive G updates — and the
    median interval is robust to the load spikes of a shared machine.
    """

    def __init__(self):
        self.stamps: list[float] = []  # wall clock
        self.cpu: list[float] = []  # CPU seconds of this process (all its threads)
        self._orig = torch.optim.Adam
        clock = self

        class Timed(self._orig):
            first = True

            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self.timed = Timed.first
                Timed.first = False

            def step(self, *a, **k):
                out = super().step(*a, **k)
                if self.timed:
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    clock.stamps.append(time.perf_counter())
                    clock.cpu.append(time.process_time())
                return out

        self.cls = Timed

    def __enter__(self):
        torch.optim.Adam = self.cls
        return self

    def __exit__(self, *exc):
        torch.optim.Adam = self._orig

    def _skip(self) -> int:  # warm-up steps left out: 3, fewer for very short runs
        return min(3, max(1, (len(self.stamps) - 1) // 3))

    def median_step(self) -> float:
        return float(np.median(np.diff(self.stamps)[self._skip() :]))

    def median_cpu(self) -> float:
        return float(np.median(np.diff(self.cpu)[self._skip() :]))


def config(model: str, size: int, steps: int, batch: int, device: str, out_dir: str):
    from augforge.config import resolve

    over = {
        "data.name": "synthetic-lesions", "data.image_size": size, "train.steps": steps, "train.batch_size": batch,
        "train.device": device, "train.log_every": max(1, steps // 8), "train.checkpoint_every": 10**9,
        "train.sample_every": 10**9, "train.out_dir": out_dir,
    }
    if model == "dcgan":
        over["data.drop_framed"] = over["data.drop_marks"] = False  # synthetic images: nothing to filter
    if model == "fake":  # overhead probe: a near-zero-cost model, every loop feature switched on
        from augforge import plugins, testing

        if "augforge.testing" not in dict(plugins.get_plugin_manager().list_name_plugin()):
            plugins.register(testing, name="augforge.testing")
        over.update({"data.name": "fake-blobs", "model.generator": "fake", "model.latent_dim": 8, "data.balance": True,
                     "train.ema_decay": 0.99, "train.diffaug": "color,translation,cutout"})
    return resolve(PRESET_OF[model], over)


def run_ours(cfg) -> dict:
    from augforge.train import train

    tracker = TimingTracker()
    with StepClock() as clock:
        train(cfg, tracker=tracker)
    share = float(np.median([m["data_wait_share"] for _, m in tracker.logs[1:]] or [np.nan]))
    return {"step_s": clock.median_step(), "cpu_s": clock.median_cpu(), "data_share": share}


def run_plain(cfg, steps: int) -> dict:
    """The minimal loop: same networks, loss, penalties, DiffAugment, EMA; batches from a tensor."""
    clock = StepClock()
    torch.optim.Adam = clock.cls  # G's optimiser (built first) is timed, as in run_ours
    try:
        _plain_loop(cfg, steps)
    finally:
        torch.optim.Adam = clock._orig
    return {"step_s": clock.median_step(), "cpu_s": clock.median_cpu()}


def _plain_loop(cfg, steps: int) -> None:
    from augforge import data, registry
    from augforge.losses import get_loss, gradient_penalty, r1_penalty

    t = cfg.train
    device = torch.device("cuda" if t.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    arrays, splits = data.load_splits(cfg, progress=False)
    idx = np.asarray(splits["train"])
    x_all = torch.from_numpy(np.ascontiguousarray(arrays.images[idx])).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
    y_all = torch.from_numpy(arrays.labels[idx]).to(device)
    k = len(arrays.class_names) if cfg.model.conditional else 0
    torch.manual_seed(0)
    G = registry.build("generator", cfg.model.generator, image_size=cfg.data.image_size, num_classes=k,
                       latent_dim=cfg.model.latent_dim, **cfg.generator).to(device)
    D = registry.build("discriminator", cfg.discriminator_name, image_size=cfg.data.image_size, num_classes=k,
                       **cfg.discriminator).to(device)
    ema = copy.deepcopy(G).eval().requires_grad_(False) if t.ema_decay > 0 else None
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), eps=t.eps)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), eps=t.eps)
    d_loss, g_loss = get_loss(t.loss)
    if t.diffaug:
        from augforge.diffaug import diff_augment

        aug = lambda x: diff_augment(x, t.diffaug)  # noqa: E731
    else:
        aug = lambda x: x  # noqa: E731
    B, L = t.batch_size, cfg.model.latent_dim
    for step in range(steps):
        D.requires_grad_(True)
        for _ in range(t.n_critic):
            i = torch.randint(0, len(x_all), (B,), device=device)
            real, y = x_all[i], (y_all[i] if k else None)
            with torch.no_grad():
                fake = G(torch.randn(B, L, device=device), y)
            real_in, fake_in = aug(real), aug(fake)
            if t.r1_gamma > 0:
                real_in.requires_grad_(True)
            lr_, lf_ = D(real_in, y), D(fake_in, y)
            loss = d_loss(lr_, lf_)
            if t.gp_weight > 0:
                loss = loss + t.gp_weight * gradient_penalty(D, real_in, fake_in, y)
            if t.r1_gamma > 0:
                loss = loss + 0.5 * t.r1_gamma * r1_penalty(lr_, real_in)
            opt_d.zero_grad(set_to_none=True)
            loss.backward()
            opt_d.step()
        D.requires_grad_(False)
        fake = G(torch.randn(B, L, device=device), y)
        loss = g_loss(D(aug(fake), y))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), G.parameters()):
                    pe.lerp_(p, 1 - t.ema_decay)
                for be, b in zip(ema.buffers(), G.buffers()):
                    be.copy_(b)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="dcgan,cdcgan,sngan")
    ap.add_argument("--sizes", default="32,64,128")
    ap.add_argument("--steps", type=int, default=0, help="steps per measured run (0: by size)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default=str(HERE / "out" / "bench_train.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for size in (int(s) for s in args.sizes.split(",")):
                steps = args.steps or {32: 12, 64: 10, 128: 7}.get(size, 10)
                cfg = config(model, size, steps, args.batch_size, args.device, tmp)
                ours, plain = [], []
                for _ in range(args.repeats):
                    ours.append(run_ours(cfg))
                    plain.append(run_plain(cfg, steps))
                B = args.batch_size
                med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
                o_wall, p_wall = med(ours, "step_s"), med(plain, "step_s")
                o_cpu, p_cpu = med(ours, "cpu_s"), med(plain, "cpu_s")
                row = {
                    "model": model, "preset": PRESET_OF[model], "size": size, "batch": B,
                    "device": args.device, "threads": torch.get_num_threads(), "steps": steps,
                    # wall clock: what you wait for (noisy on a shared machine)
                    "ours_images_per_s": round(B / o_wall, 2), "plain_images_per_s": round(B / p_wall, 2),
                    "overhead_wall_pct": round(100 * (o_wall / p_wall - 1), 1),
                    # CPU time: the work done per step, robust to other processes on the machine
                    "ours_images_per_cpu_s": round(B / o_cpu, 2), "plain_images_per_cpu_s": round(B / p_cpu, 2),
                    "overhead_cpu_pct": round(100 * (o_cpu / p_cpu - 1), 1),
                    "data_share_pct": round(100 * float(np.median([o["data_share"] for o in ours])), 2),
                    "ours_minus_plain_cpu_ms": round(1000 * (o_cpu - p_cpu), 3),
                    "ours": ours, "plain": plain,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    meta = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "load_avg_at_end": os.getloadavg(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print("\n| model (preset) | px | batch | ours img/s | plain img/s | overhead (wall) | ours img/CPU-s | plain img/CPU-s | overhead (CPU) | data share |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} ({r['preset']}) | {r['size']} | {r['batch']} | {r['ours_images_per_s']} | "
              f"{r['plain_images_per_s']} | {r['overhead_wall_pct']} % | {r['ours_images_per_cpu_s']} | "
              f"{r['plain_images_per_cpu_s']} | {r['overhead_cpu_pct']} % | {r['data_share_pct']} % |")
    print(f"\n{json.dumps(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
