"""Training throughput: our loop vs a minimal plain-PyTorch loop on the same networks.

For each model family (dcgan, cdcgan, sngan, each with its preset's training recipe) and
image size, in the same process:

- **ours**: ``augforge.training.train`` (no tracking, no mid-run checkpoints or grids). Both
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
    python benchmarks/bench_train.py --recipes modern-cpu-v1,modern-cpu --threads 1 --repeats 3
                         # recipe against recipe (64 px): images per CPU-second, FLOP rate vs gemm peak

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
    from augforge.training import train

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
    from augforge.training.losses import get_loss, gradient_penalty, r1_penalty

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
        from augforge.training.diffaug import diff_augment

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


#: side-by-side recipes (``--recipes``): the first modern-cpu preset against today's (G 24), and
#: today's speed levers on v1's widths (``-g16``, the preset of rounds 4-5)
RECIPES = {
    "modern-cpu-v1": ("modern", {"generator.channels": 16, "discriminator.channels": 16, "train.batch_size": 32}),
    "modern-cpu-g16": ("modern-cpu", {"generator.channels": 16, "discriminator.class_head": False, "train.ac_weight": 0.0}),
    "modern-cpu": ("modern-cpu", {}),
    "modern-cpu-compile": ("modern-cpu", {"train.compile": True}),
    "modern-cpu-reuse": ("modern-cpu", {"train.reuse_fake": True}),
}


def _gemm_rate(dtype: torch.dtype, n: int = 1024, reps: int = 5) -> float:
    """Measured GFLOP per CPU-second of an n x n matrix product: the machine's practical peak for
    that dtype (CPU time, like the steps, so other processes on the machine do not lower it)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.process_time()
        for _ in range(4):
            torch.mm(a, b)
        times.append((time.process_time() - t) / 4)
    return 2 * n**3 / min(times) / 1e9


def _step_flops(cfg) -> float:
    """FLOPs of one training step (G forward for D's fakes, D forward+backward on real and fake
    (twice more with bCR), G+D forward+backward for G's update, which with ``train.reuse_fake``
    reuses the first G forward), counted by torch's FlopCounterMode
    on convolutions and matrix products (DiffAugment, norms and activations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    from augforge import registry

    nc, B, S = 7, cfg.train.batch_size, cfg.data.image_size
    G = registry.build("generator", cfg.model.generator, image_size=S, num_classes=nc, latent_dim=cfg.model.latent_dim, **cfg.generator)
    D = registry.build("discriminator", cfg.discriminator_name, image_size=S, num_classes=nc, **cfg.discriminator)
    y, real = torch.randint(0, nc, (B,)), torch.randn(B, 3, S, S)
    with FlopCounterMode(display=False) as counter:
        with torch.set_grad_enabled(cfg.train.reuse_fake):
            fake_g = G(torch.randn(B, cfg.model.latent_dim), y)
        fake = fake_g.detach()
        passes = 2 if cfg.train.cr_weight > 0 else 1
        loss = sum(D(real, y).mean() + D(fake, y).mean() for _ in range(passes))
        loss.backward()
        fake_g = fake_g if cfg.train.reuse_fake else G(torch.randn(B, cfg.model.latent_dim), y)
        D(fake_g, y).mean().backward()
    return float(counter.get_total_flops())


def bench_recipes(args) -> int:
    """``--recipes``: the same step, recipe against recipe, in one process, interleaved."""
    from augforge.config import resolve

    names = args.recipes.split(",")
    gemm = {"fp32": _gemm_rate(torch.float32), "bf16": _gemm_rate(torch.bfloat16)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = {}
        for name in names:
            preset, over = RECIPES[name]
            cfgs[name] = resolve(preset, {**over, "data.name": "synthetic-lesions", "data.image_size": args.sizes.split(",")[0],
                                          "train.steps": args.steps or 12, "train.log_every": 4, "train.checkpoint_every": 10**9,
                                          "train.sample_every": 10**9, "train.eval_every": 0, "train.out_dir": tmp,
                                          "train.device": args.device})
        results = {n: [] for n in names}
        for _ in range(args.repeats):
            for name in names:
                results[name].append(run_ours(cfgs[name]))
        for name in names:
            cfg, rs = cfgs[name], results[name]
            B = cfg.train.batch_size
            cpu_s = float(np.median([r["cpu_s"] for r in rs]))
            wall_s = float(np.median([r["step_s"] for r in rs]))
            flops = _step_flops(cfg)
            peak = gemm["bf16" if cfg.train.amp == "bf16" else "fp32"]
            rows.append({"recipe": name, "batch": B, "amp": cfg.train.amp, "channels_last": cfg.train.channels_last,
                         "images_per_cpu_s": round(B / cpu_s, 2), "images_per_s": round(B / wall_s, 2),
                         "gflop_per_step": round(flops / 1e9, 2), "gflop_per_cpu_s": round(flops / cpu_s / 1e9, 1),
                         "gemm_peak_gflop_s": round(peak, 1), "share_of_gemm_peak_pct": round(100 * flops / cpu_s / 1e9 / peak, 1)})
    base = rows[0]["images_per_cpu_s"]
    print(f"\nmeasured gemm peak (1024^2, {torch.get_num_threads()} thread(s)): fp32 {gemm['fp32']:.1f}, bf16 {gemm['bf16']:.1f} GFLOP/s")
    print("| recipe | batch | amp | channels_last | img/CPU-s | img/s (wall) | GFLOP/step | GFLOP/CPU-s | % of gemm peak | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['batch']} | {r['amp']} | {r['channels_last']} | {r['images_per_cpu_s']} | {r['images_per_s']} "
              f"| {r['gflop_per_step']} | {r['gflop_per_cpu_s']} | {r['share_of_gemm_peak_pct']} % | {r['images_per_cpu_s'] / base:.2f}x |")
    out = Path(args.out).with_name("bench_train_recipes.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"gemm_gflop_s": gemm, "threads": torch.get_num_threads(), "load_avg_at_end": os.getloadavg(),
                               "rows": rows}, indent=2) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="", help=f"compare recipes side by side instead: e.g. {','.join(RECIPES)} (64 px)")
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
    if args.recipes:
        args.sizes = args.sizes if args.sizes != "32,64,128" else "64"
        return bench_recipes(args)

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
