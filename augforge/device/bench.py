"""Timings for ``augforge.device.check``: one G+D training step per model, size and speed mode.

    python -m augforge.device.bench throughput OUT.json [--device cuda] [--tiny] [--budget-s 100]
    python -m augforge.device.bench ddp-probe OUT.json      (under torchrun: one DDP step)

``throughput`` times the step the training loop runs (D on real + detached fake, then G
through a frozen D; hinge loss, Adam) with components built by ``registry.build`` and
batches fetched by the loop's own ``BatchSource`` from a uint8 dataset resident on the
device. It writes one JSON row per cell as it goes, so a stage cut short by its time cap
keeps what it measured. DiffAugment, EMA and logging are left out: this is the cost of the
networks and the data path, not of the recipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

#: (model family, generator options): sngan at the `modern` preset's widths (its defaults)
MODELS = (("sngan", {}), ("cdcgan", {}), ("dcgan", {}))
#: speed modes, each adding one switch to the one before
MODES = ("fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile")
NUM_CLASSES = 7  # HAM10000's classes: the conditional models' embedding size


class _ResidentArrays:
    """What ``BatchSource`` reads: uint8 NHWC images and int labels (random: timing only)."""

    def __init__(self, n: int, size: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, NUM_CLASSES, n).astype(np.int64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cell(model: str, options: dict, size: int, mode: str, device: torch.device, batch: int,
              warmup: int, steps: int, backend: str = "inductor") -> dict:
    """img/s (real images consumed per second) and the share of step time spent fetching data."""
    from augforge import registry
    from augforge.config import resolve
    from augforge.training.losses import get_loss
    from augforge.training.batches import BatchSource

    conditional = model != "dcgan"
    k = NUM_CLASSES if conditional else 0
    channels_last, compiled = "channels_last" in mode, "compile" in mode
    amp = torch.bfloat16 if mode.startswith("bf16") else None
    torch.manual_seed(0)
    G = registry.build("generator", model, image_size=size, num_classes=k, latent_dim=128, **options).to(device)
    D = registry.build("discriminator", model, image_size=size, num_classes=k).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    G, D = G.to(memory_format=fmt), D.to(memory_format=fmt)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.0, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=4e-4, betas=(0.0, 0.999))
    G_run, D_run = (torch.compile(G, backend=backend), torch.compile(D, backend=backend)) if compiled else (G, D)
    d_loss, g_loss = get_loss("hinge")
    cfg = resolve("", {"data.image_size": size, "train.batch_size": batch})
    n = max(batch * 8, 512 if device.type == "cuda" else batch * 4)
    source = BatchSource(_ResidentArrays(n, size), cfg, device, channels_last)
    order = np.random.default_rng(0).permutation(n)[: (n // batch) * batch].reshape(-1, batch)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext

    def step(i: int) -> float:
        # synchronising around the fetch isolates its time (the loop itself does not wait here)
        _sync(device)
        t0 = time.perf_counter()
        x, y = source.get(0, i % len(order), order)
        _sync(device)
        waited = time.perf_counter() - t0
        y = y if conditional else None
        z = torch.randn(batch, 128, device=device)
        with torch.no_grad(), autocast():
            fake = G_run(z, y)
        with autocast():
            loss = d_loss(D_run(x, y), D_run(fake.detach().contiguous(memory_format=fmt), y))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast():
            loss = g_loss(D_run(G_run(z, y).contiguous(memory_format=fmt), y))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        return waited

    t0 = time.perf_counter()
    for i in range(warmup):
        step(i)
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0, waited = time.perf_counter(), 0.0
    for i in range(steps):
        waited += step(warmup + i)
    _sync(device)
    elapsed = time.perf_counter() - t0
    return {
        "model": model, "options": options, "image_size": size, "mode": mode, "batch": batch, "steps": steps,
        "img_per_s": round(steps * batch / elapsed, 1), "ms_per_step": round(1000 * elapsed / steps, 2),
        "data_wait_share": round(waited / elapsed, 4), "warmup_s": round(warm_s, 2),
        **({"compile_backend": backend} if compiled else {}),
    }


def throughput(out: Path, device: torch.device, tiny: bool, budget_s: float) -> list[dict]:
    """Every non-compiled cell first, then compiled ones while the budget lasts (compiling costs
    tens of seconds per cell). ``tiny``: one 32 px size, few steps, one compiled cell, and on a
    CPU the "eager" backend (dynamo traces our modules; inductor's C++ build would take minutes)."""
    sizes = (32,) if tiny else (64, 128)
    batch, warmup, steps = (8, 2, 3) if tiny else (64, 5, 30)
    compile_cells = 1 if tiny else len(MODELS) * len(sizes)
    backend = "eager" if tiny and device.type == "cpu" else "inductor"
    deadline = time.monotonic() + budget_s
    cells = [(m, o, s, mode) for mode in MODES[:3] for s in sizes for m, o in MODELS]
    cells += [(m, o, s, MODES[3]) for s in sizes for m, o in MODELS][:compile_cells]
    rows = []
    for model, options, size, mode in cells:
        left = deadline - time.monotonic()
        if left < (30 if "compile" in mode and not tiny else 3):  # compiling G and D takes ~30 s or more
            rows.append({"model": model, "image_size": size, "mode": mode, "skipped": f"stage budget spent ({budget_s:.0f} s)"})
            continue
        try:
            opts = {"channels": 8} if tiny and model == "sngan" else options  # toy width, as --tiny trains
            rows.append(time_cell(model, opts, size, mode, device, batch, warmup + 2 * ("compile" in mode), steps, backend))
        except Exception as exc:  # one mode failing (e.g. compile without a C compiler) must not hide the rest
            rows.append({"model": model, "image_size": size, "mode": mode, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        out.write_text(json.dumps({"device": str(device), "cells": rows}, indent=1) + "\n")
    return rows


def ddp_probe(out: Path) -> dict:
    """Under torchrun: init the process group (NCCL on CUDA, gloo on CPU), wrap the `modern`
    generator in DDP, run one backward (gradient all-reduce) and an all_reduce."""
    import datetime

    from augforge import registry

    cuda = torch.cuda.is_available()  # the CPU check hides CUDA (CUDA_VISIBLE_DEVICES="")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(minutes=2))
    try:
        G = registry.build("generator", "sngan", image_size=32, num_classes=NUM_CLASSES, latent_dim=32).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(G, device_ids=[local] if cuda else None)
        z = torch.randn(4, 32, device=device)
        ddp(z, torch.zeros(4, dtype=torch.long, device=device)).square().mean().backward()
        flag = torch.ones(1, device=device)
        torch.distributed.all_reduce(flag)
        result = {"backend": backend, "world_size": torch.distributed.get_world_size(), "rank": rank,
                  "all_reduce_sum": float(flag.item()), "grad_finite": all(bool(torch.isfinite(p.grad).all())
                                                                           for p in G.parameters() if p.grad is not None)}
    finally:
        torch.distributed.destroy_process_group()
    if rank == 0:
        out.write_text(json.dumps(result) + "\n")
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m augforge.device.bench", description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["throughput", "ddp-probe"])
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--budget-s", type=float, default=100.0)
    a = p.parse_args(argv)
    if a.what == "ddp-probe":
        ddp_probe(a.out)
        return
    device = torch.device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the training loop does
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    throughput(a.out, device, a.tiny, a.budget_s)


if __name__ == "__main__":
    main()
