"""The one training loop, in numbered stages (EDM / rosinality style).

    0. config + run folder     config.json is written before step 1
    1. setup                   seeds, device, AMP, torch.distributed (torchrun)
    2. data                    decode-once cache, lesion-grouped splits, seeded epoch order
    3. models + optimisers     registry.build, Adam (TTUR = lr_d != lr_g), EMA, DDP, compile
    4. resume                  models, optimisers, EMA, scalers, RNG states, data position
    5. tracking                MLflow run (params, tags), ``augforge_run_start`` hook
    6. loop                    D step(s), G step, EMA, metrics, samples, eval, checkpoints
    7. end                     last checkpoint, loss curve, artifacts, ``augforge_run_end``

Exact resume. Every source of randomness is either a checkpointed RNG state (torch CPU and
CUDA, numpy, python: z, DiffAugment, dropout, penalties) or a pure function of
``(seed, epoch)`` (the data order: one seeded permutation per epoch, of which the consumed
part is skipped). Nothing depends on a DataLoader iterator's state, and side work (sample
grids, evaluation) runs inside a saved-and-restored RNG context. So on CPU a run that is
killed and resumed ends with bitwise the same weights as one that never stopped.

Generator EMA (``train.ema_decay`` > 0) uses a warm-up: the decay at step ``s`` is
``min(ema_decay, (1 + s) / (10 + s))``, so short runs get a useful average too.

Metrics (every ``train.log_every`` steps, means over the window): ``loss_d``, ``loss_g``,
``d_real`` / ``d_fake`` (mean *raw logits* of D on the real and fake batch — loss-agnostic;
apply a sigmoid yourself for a BCE probability), ``grad_norm_d`` / ``grad_norm_g`` (global
L2 norm of the gradients at the log step, before the optimiser step; unscaled under AMP),
``gp`` / ``r1`` when enabled, ``images_per_s`` (real images consumed per second, all
processes together) and ``data_wait_share`` (fraction of step time spent waiting for the
batch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from augforge import __version__, registry
from augforge.config import RunConfig
from augforge.errors import AugforgeError, ConfigError, TrainingError
from augforge.interfaces import Discriminator
from augforge.schedules import check_schedule, lr_factor

#: config keys that may change when a run is resumed (anything else must match the checkpoint)
RESUME_MUTABLE = (
    "train.steps", "train.device", "train.num_workers", "train.checkpoint_every", "train.log_every",
    "train.sample_every", "train.eval_every", "train.out_dir", "train.compile", "tracking.",
    "train.threads", "train.max_minutes", "train.eval_every_minutes", "train.eval_extra",
)
#: columns per row of a sample grid
GRID_COLUMNS = 8


@dataclass
class RunInfo:
    """What lifecycle hooks see of a run (``augforge_run_start`` / ``epoch_end`` / ``run_end``)."""

    config: RunConfig
    run_dir: Path
    run_id: str | None
    class_names: list[str]


@dataclass
class TrainResult:
    status: str  # FINISHED | KILLED | FAILED
    step: int
    epoch: int
    run_dir: Path
    run_id: str | None
    checkpoint: Path | None  # checkpoints/last.pt
    best_checkpoint: Path | None = None  # checkpoints/best.pt (by the in-training evaluator)
    metrics: dict[str, float] = field(default_factory=dict)


class _Stop(Exception):
    """Internal: leave the loop (SIGINT/SIGTERM)."""


# ---------------------------------------------------------------------------------------------
# Helpers: distributed, seeding, RNG state


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not torch.distributed.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=_dt.timedelta(minutes=10))
    return _Dist(rank, world, local_rank)


def _resolve_device(name: str, dist: _Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name!r} but CUDA is not available; use train.device=cpu or auto")
        if dist.enabled:
            return torch.device("cuda", dist.local_rank)
    elif name != "cpu":
        raise ConfigError(f"train.device={name!r}: expected auto, cpu, cuda or cuda:N")
    return torch.device(name)


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. On a CPU ``auto`` stays fp32 (exact, portable);
    ``bf16`` runs convolutions in bfloat16 through oneDNN, ~1.7x faster per step on an
    AVX-512 BF16 CPU (benchmarks/README.md); fp16 autocast is a CUDA feature only."""
    if amp not in ("auto", "off", "bf16", "fp16"):
        raise ConfigError(f"train.amp={amp!r}: expected auto, off, bf16 or fp16")
    if device.type != "cuda":
        if amp == "fp16":
            raise ConfigError(f"train.amp=fp16 needs CUDA (device is {device}); use train.amp=bf16, off or auto")
        return torch.bfloat16 if amp == "bf16" else None
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


#: the clock of ``train.max_minutes`` and ``train.eval_every_minutes`` (seconds; tests substitute it)
_clock = time.monotonic


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] % 2**63)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """All global RNG states as tensors / plain lists, so the checkpoint loads with weights_only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@contextlib.contextmanager
def _preserved_rng(device: torch.device):
    """Side work (sample grids, evaluation) must not move the training RNG streams."""
    saved = _rng_state(device)
    try:
        yield
    finally:
        _set_rng_state(saved, device)


# ---------------------------------------------------------------------------------------------
# Data order: one seeded permutation per epoch, this rank's share, skip what was consumed


class EpochOrder:
    """Batches of train-split indices for each epoch, a pure function of ``(seed, epoch)``.

    ``balance``: each draw picks a class uniformly, then an image of it (sampling with
    replacement, as a class-balanced sampler does); an epoch has as many draws as images.
    Under torchrun each rank takes every ``world``-th index of the global order (the
    DistributedSampler layout). Epochs hold whole batches only (the tail is dropped); a
    dataset smaller than one global batch is repeated within the epoch.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, seed: int, balance: bool, rank: int = 0, world: int = 1):
        self.labels = np.asarray(labels)
        self.n = len(self.labels)
        if self.n == 0:
            raise ConfigError("the train split is empty; lower data.val_fraction/test_fraction or use more images")
        self.batch_size, self.seed, self.balance, self.rank, self.world = batch_size, seed, balance, rank, world
        per_draw = max(self.n, batch_size * world)
        self.draws = per_draw - per_draw % (batch_size * world)
        self.batches_per_epoch = self.draws // (batch_size * world)
        if balance:
            counts = np.bincount(self.labels)
            w = 1.0 / counts[self.labels]
            self.p = w / w.sum()
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch(self, epoch: int) -> np.ndarray:
        """``int64[batches_per_epoch, batch_size]`` for this rank."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch, 0x0DA7A])
        if self.balance:
            order = rng.choice(self.n, size=self.draws, replace=True, p=self.p)
        else:
            reps = -(-self.draws // self.n)
            order = np.concatenate([rng.permutation(self.n) for _ in range(reps)])[: self.draws]
        mine = order[self.rank :: self.world].reshape(self.batches_per_epoch, self.batch_size).astype(np.int64)
        self._cache = (epoch, mine)
        return mine


class _SeededItems(torch.utils.data.Dataset):
    """Items are fetched by ``(index, seed)``: the augmentation is reseeded per item."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        i, seed = key
        aug = getattr(self.dataset, "augment", None)
        if aug is not None and hasattr(aug, "set_random_seed"):
            aug.set_random_seed(seed)
        return self.dataset[i]


class BatchSource:
    """Turns index batches into device tensors ``(x float[B,3,H,W] in [-1,1], y int64[B])``.

    Fast path (``data.augment == "none"``, no workers): the whole uint8 train split lives in
    one tensor (on the GPU under CUDA) and a batch is a gather + one conversion. Otherwise a
    DataLoader over ``augforge.data.TorchImages`` fetches the listed batches.
    """

    def __init__(self, arrays, cfg: RunConfig, device: torch.device, channels_last: bool):
        self.device, self.channels_last = device, channels_last
        self.augment = cfg.data.augment
        self.num_workers = cfg.train.num_workers
        self.fast = self.augment in ("", "none") and self.num_workers == 0
        self.labels = torch.as_tensor(np.asarray(arrays.labels), dtype=torch.int64).to(device)
        if self.fast:
            images = torch.from_numpy(np.ascontiguousarray(arrays.images))  # uint8 NHWC
            self.images = images.to(device) if device.type == "cuda" else images
        else:
            from augforge import data

            self.dataset = _SeededItems(data.TorchImages(arrays, augment=self.augment, seed=cfg.train.seed))
        self.seed = cfg.train.seed
        self._iter = None
        self._key = None

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)

    def get(self, epoch: int, pos: int, batches: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = batches[pos]
        if self.fast:
            t = torch.from_numpy(idx)
            if self.device.type == "cuda":
                t = t.to(self.device, non_blocking=True)
            return self._convert(self.images.index_select(0, t)), self.labels.index_select(0, t.to(self.labels.device))
        if self._key != (epoch, pos):  # (re)start a loader at this position of this epoch
            # each item carries its own augmentation seed, a function of (seed, epoch, batch, slot):
            # the same images get the same augmentation whatever the workers or a resume do
            base = (self.seed * 1_000_003 + epoch) * 100_003
            keyed = [[(int(i), (base + (pos + b) * len(ib) + j) % 2**32) for j, i in enumerate(ib)]
                     for b, ib in enumerate(batches[pos:])]
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_sampler=keyed, num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda", persistent_workers=False,
                generator=torch.Generator().manual_seed(_derived_seed(epoch, pos, 17)),
            )
            self._iter = iter(loader)
        x, y = next(self._iter)
        self._key = (epoch, pos + 1)
        return self._convert(x), y.to(self.device, non_blocking=True).long()


# ---------------------------------------------------------------------------------------------
# Small pieces of the step


def _unwrap(module: nn.Module) -> nn.Module:
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):  # torch.compile
            module = module._orig_mod
        else:
            return module


@torch.no_grad()
def _ema_update(ema_params, params, ema_buffers, buffers, decay: float) -> None:
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for be, b in zip(ema_buffers, buffers):
        be.copy_(b)


def _optimise(loss, opt, scaler, params, log_now: bool) -> float | None:
    """One optimiser step through the (possibly disabled) AMP scaler; returns the gradient
    norm, unscaled, on logging steps only (it costs a sync on CUDA), else None."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if log_now:
        scaler.unscale_(opt)
        grad_norm = _grad_norm(params)
    scaler.step(opt)
    scaler.update()
    return grad_norm


def _grad_norm(params) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()))


def _diffaug(policy: str):
    if not policy:
        return lambda x: x
    from augforge.diffaug import diff_augment

    return lambda x: diff_augment(x, policy)


def _weights_digest(*modules: nn.Module) -> str:
    """A short hash of every parameter and buffer (DDP test: equal on every rank)."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _has_unused_params(model: nn.Module, call, device: torch.device) -> bool:
    """Does a forward/backward leave some parameter without a gradient? (DDP must then search.)

    Probed once on a dummy batch; weights, buffers (BN statistics, spectral-norm vectors) and
    RNG states are restored afterwards, so the probe leaves no trace in the run.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with _preserved_rng(device):
        call().float().sum().backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return unused


def _sync_buffers(dist: "_Dist", *modules: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BN running statistics drift apart between forwards)."""
    if not dist.enabled:
        return
    for m in modules:
        if m is not None:
            for b in m.buffers():
                torch.distributed.broadcast(b, src=0)


def _metric_direction(metric: str) -> str:
    for entry in registry.tables()["evaluator"].values():
        if getattr(entry.cls, "objective", None) == metric:
            return getattr(entry.cls, "direction", "minimize")
    return "maximize" if metric in ("precision", "recall", "density", "coverage", "accuracy", "auc") else "minimize"


def _new_run_name(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.model.generator}-{cfg.data.name}-{stamp}"


def _unique_dir(base: Path) -> Path:
    from augforge.runs import create_run_dir

    return create_run_dir(base)  # exclusive: concurrent runs never share a folder


def resolve_resume(resume: str | os.PathLike) -> Path:
    """``--resume`` accepts a checkpoint file or a run folder (then ``checkpoints/last.pt``).

    Load it with ``augforge.checkpoint.load_latest``, which falls back to ``last.prev.pt``.
    """
    from augforge.checkpoint import previous_path

    p = Path(resume)
    if p.is_dir():
        p = p / "checkpoints" / "last.pt"
    if not p.is_file() and not previous_path(p).is_file():
        raise AugforgeError(f"--resume {resume}: no checkpoint there; pass a run folder with checkpoints/last.pt or a .pt file")
    return p


def _check_resume_config(cfg: RunConfig, saved: RunConfig, run_dir: Path | None = None) -> None:
    new, old = cfg.flat(), saved.flat()
    if run_dir is not None:  # a hand-edited config.json would otherwise be overwritten without a word
        from augforge.runs import check_config_json

        check_config_json(run_dir, old, new, RESUME_MUTABLE)
    changed = sorted(k for k in set(new) | set(old) if new.get(k) != old.get(k) and not k.startswith(RESUME_MUTABLE))
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ConfigError(
            f"cannot resume with a changed config ({detail}); only {', '.join(RESUME_MUTABLE)} may change. "
            f"Start a new run instead."
        )


def _call_hook(name: str, **kwargs) -> None:
    from augforge.plugins import get_plugin_manager

    getattr(get_plugin_manager().hook, name)(**kwargs)


# ---------------------------------------------------------------------------------------------
# The loop


def train(
    cfg: RunConfig,
    *,
    tracker=None,
    resume: str | os.PathLike | None = None,
    report: Callable[[int, dict[str, float]], None] | None = None,
    nested: bool = False,
) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data``; see the module docstring for the stages.

    ``tracker``: an ``augforge.tracking`` tracker (None: MLflow per ``cfg.tracking``).
    ``resume``: a checkpoint or run folder to continue exactly. ``report(step, metrics)`` is
    called after each in-training evaluation and may raise (``optuna.TrialPruned``): the run
    then writes a checkpoint, ends its tracked run as KILLED and re-raises. ``nested``: start
    the tracked run under the active one (sweep trials).
    """
    # ---- 0. config + run folder ----------------------------------------------------------
    from augforge.checkpoint import load_latest, save_checkpoint
    from augforge.grid import loss_curve_png, make_grid, save_png
    from augforge.losses import (consistency_penalty, get_loss, gradient_penalty, lecam_penalty, r1_penalty,
                                 topk_count, topk_logits)

    t = cfg.train
    resume_state = None
    if resume is not None:
        ckpt_path, resume_state = load_latest(resolve_resume(resume))
        saved_cfg = RunConfig.from_json_dict(resume_state["config"])
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name=saved_cfg.tracking.run_name))
        _check_resume_config(cfg, saved_cfg, ckpt_path.resolve().parent.parent)
        t = cfg.train
    for key in ("steps", "batch_size", "n_critic", "checkpoint_every", "log_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 1")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay={t.ema_decay} must be in [0, 1)")
    if not (0.0 < t.topk_min <= 1.0 and 0.0 < t.topk_decay <= 1.0):
        raise ConfigError(f"train.topk_min={t.topk_min} and train.topk_decay={t.topk_decay} must be in (0, 1] (topk_min=1: off)")
    if t.cr_weight > 0 and not t.diffaug:
        raise ConfigError("train.cr_weight > 0 compares two augmentations of each image: set train.diffaug too, "
                          "e.g. --set train.diffaug=color,translation,cutout")
    if t.budget_clock not in ("wall", "cpu"):
        raise ConfigError(f"train.budget_clock={t.budget_clock!r}: expected wall or cpu")
    try:
        check_schedule(t.lr_decay, t.lr_decay_start)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in ("lecam_weight", "cr_weight", "ssl_weight", "max_minutes", "eval_every_minutes", "threads"):
        if getattr(t, key) < 0:
            raise ConfigError(f"train.{key}={getattr(t, key)} must be >= 0")
    d_loss_fn, g_loss_fn = get_loss(t.loss)

    # ---- 1. setup: distributed, device, seeds, AMP ---------------------------------------
    dist = _init_distributed(t.device)
    device = _resolve_device(t.device, dist)
    amp_dtype = _resolve_amp(t.amp, device)
    if t.threads:
        torch.set_num_threads(t.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    _seed_all(t.seed)

    if resume_state is not None:
        run_dir = ckpt_path.resolve().parent.parent
    else:
        name = cfg.tracking.run_name or _new_run_name(cfg)
        run_dir = _unique_dir(Path(t.out_dir) / name) if dist.main else None
        run_dir = Path(dist.broadcast(str(run_dir) if run_dir else None))
        cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, run_name=run_dir.name))
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        from augforge.runs import write_text_atomic

        write_text_atomic(run_dir / "config.json", cfg.to_json() + "\n")  # a crash leaves the old one or the new
    dist.barrier()

    # ---- 2. data ---------------------------------------------------------------------------
    from augforge import data as data_mod

    arrays, splits = None, None
    for turn in (0, 1):  # rank 0 fills the decode-once cache first, the others then read it
        if (turn == 0) == dist.main:
            if hasattr(data_mod, "load_splits"):
                arrays, splits = data_mod.load_splits(cfg, out_dir=run_dir if dist.main else None)
            else:
                arrays = data_mod.load_arrays(cfg)
                splits = data_mod.make_splits(arrays, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
                if dist.main:
                    _write_splits(run_dir / "splits.csv", arrays, splits)
        dist.barrier()
    class_names = list(arrays.class_names)
    train_arrays = arrays.subset(np.asarray(splits["train"]))
    order = EpochOrder(train_arrays.labels, t.batch_size, t.seed, cfg.data.balance, dist.rank, dist.world)
    source = BatchSource(train_arrays, cfg, device, t.channels_last)

    # ---- 3. models, optimisers, EMA --------------------------------------------------------
    num_classes = len(class_names) if cfg.model.conditional else 0
    G = registry.build(
        "generator", cfg.model.generator, image_size=cfg.data.image_size, num_classes=num_classes,
        latent_dim=cfg.model.latent_dim, **cfg.generator,
    ).to(device)
    D = registry.build(
        "discriminator", cfg.discriminator_name, image_size=cfg.data.image_size, num_classes=num_classes,
        **cfg.discriminator,
    ).to(device)
    from augforge.model_checks import check_models  # shapes, dtype, [-1, 1] range, image_sizes
    check_models(G, D, image_size=cfg.data.image_size, num_classes=num_classes, latent_dim=cfg.model.latent_dim, device=device)
    if t.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    latent_dim = int(getattr(G, "latent_dim", cfg.model.latent_dim))
    opt_g = torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), eps=t.eps)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), eps=t.eps)
    ema = None
    if t.ema_decay > 0:
        ema = copy.deepcopy(G).eval().requires_grad_(False)
    fp16 = amp_dtype == torch.float16
    scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
    scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
    # fixed noise for sample grids: its own generator, never the training stream
    gen = torch.Generator().manual_seed(_derived_seed(t.seed, 7))
    rows = len(class_names) if num_classes else 4
    if num_classes:  # one row per class, the same z down each column
        fixed_z = torch.randn(GRID_COLUMNS, latent_dim, generator=gen).repeat(rows, 1)
        fixed_y = torch.arange(rows).repeat_interleave(GRID_COLUMNS)
    else:
        fixed_z, fixed_y = torch.randn(rows * GRID_COLUMNS, latent_dim, generator=gen), None

    # ---- 4. resume ----------------------------------------------------------------------------
    step, epoch, pos = 0, 0, 0
    history: dict[str, list[float]] = {k: [] for k in ("step", "loss_d", "loss_g", "d_real", "d_fake")}
    best = {"metric": t.eval_metric, "value": None, "step": None}
    epoch_acc = {"sums": [0.0] * 4, "count": 0}
    window = {"sums": [0.0] * 4, "count": 0, "gp": 0.0, "r1": 0.0}
    lecam = {"real": 0.0, "fake": 0.0, "updates": 0}  # LeCam's moving averages of D's mean logits
    # the budget's clock: wall seconds, or this process's CPU seconds (all threads) for races on shared cores
    tick = time.process_time if t.budget_clock == "cpu" else _clock
    clock = {"before": 0.0, "start": tick()}  # training wall seconds of earlier sessions
    run_id = None
    # The training stream: seeded per rank after model init, so ranks draw different z.
    _seed_all(_derived_seed(t.seed, dist.rank, 1))
    if resume_state is not None:
        s = resume_state
        G.load_state_dict(s["generator"]["state"])
        D.load_state_dict(s["discriminator"]["state"])
        opt_g.load_state_dict(s["opt_g"])
        opt_d.load_state_dict(s["opt_d"])
        if ema is not None:
            if s.get("g_ema") is None:
                raise ConfigError("the checkpoint has no EMA weights but train.ema_decay > 0")
            ema.load_state_dict(s["g_ema"])
        extra = s.get("extra", {})
        if extra.get("scaler_g"):
            scaler_g.load_state_dict(extra["scaler_g"])
            scaler_d.load_state_dict(extra["scaler_d"])
        step, epoch, pos = int(s["step"]), int(s["epoch"]), int(extra.get("pos", 0))
        history = {k: list(v) for k, v in extra.get("history", history).items()}
        best = dict(extra.get("best", best))
        epoch_acc = extra.get("epoch_acc", epoch_acc)
        window = extra.get("window", window)
        lecam = dict(extra.get("lecam", lecam))
        clock["before"] = float(extra.get("train_seconds", 0.0))
        from augforge.runs import resume_identity

        run_id = resume_identity(run_dir, s, write=dist.main)  # None: a copied folder gets its own tracked run
        ranks = extra.get("rng_per_rank") or [s["rng"]]
        if len(ranks) == dist.world:
            _set_rng_state(ranks[dist.rank], device)
        else:  # a different world size cannot continue the same streams: derive fresh ones
            _seed_all(_derived_seed(t.seed, dist.rank, step, 2))
        if dist.main:
            print(f"resumed {run_dir} at step {step} (epoch {epoch + 1}, batch {pos})", file=sys.stderr)

    g_params, d_params = list(G.parameters()), list(D.parameters())
    if ema is not None:
        ema_params, ema_buffers, g_buffers = list(ema.parameters()), list(ema.buffers()), list(G.buffers())
    G_run, D_run = G, D
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        y_probe = torch.arange(2, device=device) % max(num_classes, 1) if num_classes else None
        z_probe = torch.randn(2, latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
        x_probe = torch.zeros(2, 3, cfg.data.image_size, cfg.data.image_size, device=device)
        G_run = nn.parallel.DistributedDataParallel(
            G, device_ids=ids, find_unused_parameters=_has_unused_params(G, lambda: G(z_probe, y_probe), device))
        D_run = nn.parallel.DistributedDataParallel(
            D, device_ids=ids, find_unused_parameters=_has_unused_params(D, lambda: D(x_probe, y_probe), device))
    if t.compile:
        G_run, D_run = torch.compile(G_run), torch.compile(D_run)
    G_fwd_nograd = torch.compile(G) if t.compile else G  # D-step fakes: no DDP hooks needed
    D_plain = torch.compile(D) if t.compile else D  # G step: D frozen, no DDP reduction
    augment = _diffaug(t.diffaug)
    D_ssl = None
    if t.ssl_weight > 0:
        if dist.enabled:  # the decoder would run outside DDP: its gradients would not be averaged
            raise ConfigError("train.ssl_weight > 0 is not supported under torchrun yet; train on one process or set it to 0")
        if type(D).self_supervised_loss is Discriminator.self_supervised_loss:
            raise ConfigError(f"train.ssl_weight > 0 but discriminator {cfg.discriminator_name!r} has no self_supervised_loss; "
                              "use sngan (--set discriminator.decoder=true) or set train.ssl_weight=0")
        D_ssl = D.self_supervised_loss
    autocast = (
        (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext
    )

    # ---- 5. tracking + run_start hook -----------------------------------------------------------
    from augforge.tracking import NullTracker, code_version, make_tracker

    if not dist.main:
        tracker = NullTracker()
    elif tracker is None:
        tracker = make_tracker(True, cfg.tracking.uri, cfg.tracking.experiment)
    tags = {
        "dataset": cfg.data.name, "model": cfg.model.generator, "discriminator": cfg.discriminator_name,
        "preset": cfg.preset or "(none)", "run_dir": str(run_dir.resolve()), "device": str(device),
        "world_size": str(dist.world), **code_version(),
    }
    _start_tracker(tracker, cfg, run_id, nested, tags, resumed_at=step if resume_state is not None else None)
    run_id = tracker.run_id if dist.main else None
    run_id = dist.broadcast(run_id)
    tracker.log_artifact(run_dir / "config.json")
    if (run_dir / "splits.csv").exists():
        tracker.log_artifact(run_dir / "splits.csv")
    info = RunInfo(config=cfg, run_dir=run_dir, run_id=run_id, class_names=class_names)
    if dist.main:
        _call_hook("augforge_run_start", run=info)

    evaluator = None
    if (t.eval_every > 0 or t.eval_every_minutes > 0) and dist.main:
        from augforge.evaluate import make_training_evaluator

        real_idx = np.asarray(splits.get("val", []))
        real = arrays.subset(real_idx if len(real_idx) else np.asarray(splits["train"])).image_set()
        with _preserved_rng(device):  # building it must not shift the training streams (resume)
            evaluator = make_training_evaluator(cfg, real, device)
    direction = getattr(evaluator, "direction", None) or _metric_direction(t.eval_metric)

    # ---- helpers bound to this run --------------------------------------------------------------
    def train_seconds() -> float:
        """Seconds (wall or CPU, train.budget_clock) this run has trained, earlier sessions included."""
        return clock["before"] + tick() - clock["start"]

    stop_reason = {"value": None}
    next_eval = {"t": 0.0}  # train_seconds() of the next timed evaluation, set when the loop starts

    def sample_grid() -> Path | None:
        if not dist.main:
            return None
        net = ema if ema is not None else G
        was_training = net.training
        net.eval()
        with _preserved_rng(device), torch.no_grad():
            imgs = []
            for i in range(0, len(fixed_z), 64):
                yb = fixed_y[i : i + 64].to(device) if fixed_y is not None else None
                imgs.append(net(fixed_z[i : i + 64].to(device), yb).float().cpu())
        net.train(was_training)
        grid = make_grid(torch.cat(imgs), GRID_COLUMNS, row_labels=class_names if num_classes else None)
        path = save_png(grid, sample_dir / f"step_{step:06d}.png")
        tracker.log_artifact(path, "samples")
        return path

    def checkpoint_state() -> dict[str, Any]:
        rng = _rng_state(device)
        per_rank = None
        if dist.enabled:
            per_rank = [None] * dist.world
            torch.distributed.all_gather_object(per_rank, rng)
        return {
            "augforge_version": __version__, "config": cfg.to_dict(), "class_names": class_names,
            "image_size": cfg.data.image_size, "latent_dim": latent_dim, "run_id": run_id,
            "step": step, "epoch": epoch,
            "generator": {"name": cfg.model.generator, "config": dict(G.config), "state": G.state_dict()},
            "discriminator": {"name": cfg.discriminator_name, "config": dict(D.config), "state": D.state_dict()},
            "g_ema": ema.state_dict() if ema is not None else None,
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng,
            "extra": {
                "pos": pos, "history": history, "best": best, "epoch_acc": epoch_acc, "window": window,
                "lecam": lecam, "train_seconds": train_seconds(), "stop_reason": stop_reason["value"],
                "scaler_g": scaler_g.state_dict() if fp16 else None,
                "scaler_d": scaler_d.state_dict() if fp16 else None,
                "rng_per_rank": per_rank, "world_size": dist.world, "run_dir": str(run_dir),
            },
        }

    saved_at = {"step": step if resume_state is not None else None}
    curve_at = {"t": time.monotonic()}

    def write_checkpoint(path: Path = last_path) -> Path:
        if "dev" in window:  # CUDA: fold the on-device window sums in before saving
            dev_l = window.pop("dev").tolist()
            window["sums"] = [a + b for a, b in zip(window["sums"], dev_l)]
            epoch_acc["sums"] = [a + b for a, b in zip(epoch_acc["sums"], dev_l)]
        _sync_buffers(dist, G, D, ema)
        state = checkpoint_state()  # collective under DDP: every rank calls it
        if dist.main:
            bad = [n for n, p in G.named_parameters() if not torch.isfinite(p).all()]
            if bad:
                raise TrainingError(f"generator weights are not finite ({bad[0]}, ...); refusing to overwrite {path}")
            save_checkpoint(path, state)
            if path == last_path:
                saved_at["step"] = step
                if time.monotonic() - curve_at["t"] > 300:  # matplotlib costs ~0.5 s: not every checkpoint
                    curve_at["t"] = time.monotonic()
                    loss_curve_png(history, run_dir / "loss_curve.png", title=f"{run_dir.name} (step {step})")
        dist.barrier()
        return path

    # ---- stop on SIGINT/SIGTERM (Ctrl-C): finish the step, checkpoint, leave cleanly ----------
    stop = {"signal": None}
    old_handlers = {}
    if threading.current_thread() is threading.main_thread():
        def _on_signal(signum, frame):
            stop["signal"] = signal.Signals(signum).name
            signal.signal(signum, old_handlers.get(signum, signal.SIG_DFL))  # a second Ctrl-C is a hard stop

        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, _on_signal)

    # ---- 6. the loop ---------------------------------------------------------------------------
    status, error = "FINISHED", None
    last_metrics: dict[str, float] = {}
    per_step_check = device.type == "cpu"
    images_per_step = t.batch_size * dist.world
    bpe = order.batches_per_epoch
    sample_gap = max(1, t.steps // 100)  # sample_every=0: once per epoch, at most ~100 grids a run
    last_sample = {"step": -10**9}
    win_time = {"start": time.perf_counter(), "data": 0.0, "steps": 0}
    ended_epochs: list[int] = []
    progress = _Progress(t.steps, step, enabled=dist.main, images_per_step=t.batch_size * dist.world)
    clock["start"] = tick()  # the budget counts the loop, not the set-up (decoding, detector)
    next_eval["t"] = train_seconds() + 60.0 * t.eval_every_minutes

    def run_progress() -> float:
        """Share of the run done: steps, or the minutes budget if that ends first (the LR schedule's x)."""
        by_time = train_seconds() / (60.0 * t.max_minutes) if t.max_minutes > 0 else 0.0
        return max(step / t.steps, by_time)

    def set_lr(progress: float) -> None:
        factor = lr_factor(progress, t.lr_decay, t.lr_decay_start)
        for opt, base in ((opt_g, t.lr_g), (opt_d, t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    if t.lr_decay != "none":
        set_lr(run_progress())

    def next_batch():
        nonlocal epoch, pos
        if pos >= bpe:
            ended_epochs.append(epoch)
            epoch, pos = epoch + 1, 0
        batch = source.get(epoch, pos, order.epoch(epoch))
        pos += 1
        return batch

    try:
        G.train(), D.train()
        while step < t.steps:
            if dist.enabled:  # every rank must agree to stop at the same step
                flag = torch.tensor([1.0 if stop["signal"] else 0.0], device=device)
                torch.distributed.all_reduce(flag)
                if flag.item() > 0:
                    stop["signal"] = stop["signal"] or "SIGINT"
            if stop["signal"]:
                raise _Stop()
            log_now = (step + 1) % t.log_every == 0
            t0 = time.perf_counter()
            data_wait = 0.0

            # -- 6a. discriminator step(s)
            D.requires_grad_(True)
            for _ in range(t.n_critic):
                td = time.perf_counter()
                real, y = next_batch()
                data_wait += time.perf_counter() - td
                y_d = y if num_classes else None
                z = torch.randn(real.shape[0], latent_dim, device=device)
                with torch.no_grad(), autocast():
                    fake = G_fwd_nograd(z, y_d)
                if t.channels_last:
                    fake = fake.contiguous(memory_format=torch.channels_last)
                with autocast():
                    real_in, fake_in = augment(real), augment(fake.float())
                    if t.r1_gamma > 0:
                        real_in = real_in.detach().requires_grad_(True)
                    logit_r, logit_f = D_run(real_in, y_d), D_run(fake_in, y_d)
                    loss_d = d_loss_fn(logit_r.float(), logit_f.float())
                    if t.cr_weight > 0:  # bCR: a second random augmentation of the same images
                        cr = (consistency_penalty(D_run(augment(real), y_d).float(), logit_r.float())
                              + consistency_penalty(D_run(augment(fake.float()), y_d).float(), logit_f.float()))
                        loss_d = loss_d + t.cr_weight * cr
                        window["cr"] = window.get("cr", 0.0) + float(cr.detach())
                if t.ssl_weight > 0:  # D's auxiliary task on the (augmented) real batch
                    with autocast():
                        ssl = D_ssl(real_in.detach(), y_d)
                    loss_d = loss_d + t.ssl_weight * ssl
                    window["ssl"] = window.get("ssl", 0.0) + float(ssl.detach())
                if t.lecam_weight > 0:
                    means = torch.stack([logit_r.detach().float().mean(), logit_f.detach().float().mean()])
                    if dist.enabled:  # one average for all ranks, so every rank applies the same anchor
                        torch.distributed.all_reduce(means)
                        means = means / dist.world
                    # moving averages; the first update copies (no bias towards the initial 0)
                    decay = min(t.lecam_decay, lecam["updates"] / (lecam["updates"] + 1.0))
                    mean_r, mean_f = means.tolist()
                    lecam["real"] = decay * lecam["real"] + (1.0 - decay) * mean_r
                    lecam["fake"] = decay * lecam["fake"] + (1.0 - decay) * mean_f
                    lecam["updates"] += 1
                    lc = lecam_penalty(logit_r.float(), logit_f.float(), lecam["real"], lecam["fake"])
                    loss_d = loss_d + t.lecam_weight * lc
                    window["lecam"] = window.get("lecam", 0.0) + float(lc.detach())
                gp = r1 = None
                if t.gp_weight > 0:
                    with torch.autocast(device.type, enabled=False):
                        gp = gradient_penalty(D_run, real_in.detach().float(), fake_in.detach().float(), y_d)
                    loss_d = loss_d + t.gp_weight * gp
                if t.r1_gamma > 0:
                    r1 = r1_penalty(logit_r.float(), real_in)
                    loss_d = loss_d + 0.5 * t.r1_gamma * r1
                gn_d = _optimise(loss_d, opt_d, scaler_d, d_params, log_now)

            # -- 6b. generator step
            D.requires_grad_(False)
            z = torch.randn(t.batch_size, latent_dim, device=device)
            y_g = y if num_classes else None
            # top-k: G learns only from the fakes D already finds most realistic (off: k = batch)
            k = topk_count(t.batch_size, epoch + pos / bpe, t.topk_decay, t.topk_min)
            with autocast():
                fake = G_run(z, y_g)
                loss_g = g_loss_fn(topk_logits(D_plain(augment(fake), y_g).float(), k))
            gn_g = _optimise(loss_g, opt_g, scaler_g, g_params, log_now)

            # -- 6c. EMA of G
            if ema is not None:  # warm-up: early on the average follows G closely (short runs)
                decay = min(t.ema_decay, (1.0 + step) / (10.0 + step))
                _ema_update(ema_params, g_params, ema_buffers, g_buffers, decay)
            step += 1

            # -- 6d. metrics, NaN guard
            vals = torch.stack([loss_d.detach().float(), loss_g.detach().float(),
                                logit_r.detach().float().mean(), logit_f.detach().float().mean()])
            if per_step_check or log_now:
                vals_l = vals.tolist()
                if not all(math.isfinite(v) for v in vals_l):
                    raise TrainingError(_nan_message(step, vals_l, saved_at["step"], last_path, t, per_step_check))
                window["sums"] = [a + b for a, b in zip(window["sums"], vals_l)]
                epoch_acc["sums"] = [a + b for a, b in zip(epoch_acc["sums"], vals_l)]
            else:  # CUDA: accumulate on the device, check at the next log step
                window.setdefault("dev", torch.zeros(4, device=device))
                window["dev"] = window["dev"] + vals
            window["count"] += 1
            epoch_acc["count"] += 1
            if gp is not None:
                window["gp"] += float(gp.detach())
            if r1 is not None:
                window["r1"] += float(r1.detach())
            win_time["data"] += data_wait
            win_time["steps"] += 1
            step_time = time.perf_counter() - t0
            progress.update(step, step_time, vals if log_now else None)
            if log_now:
                if "dev" in window:
                    dev_l = window.pop("dev").tolist()
                    if not all(math.isfinite(v) for v in dev_l):
                        raise TrainingError(_nan_message(step, dev_l, saved_at["step"], last_path, t, False))
                    window["sums"] = [a + b for a, b in zip(window["sums"], dev_l)]
                    epoch_acc["sums"] = [a + b for a, b in zip(epoch_acc["sums"], dev_l)]
                n = max(window["count"], 1)
                elapsed = time.perf_counter() - win_time["start"]
                m = dict(zip(("loss_d", "loss_g", "d_real", "d_fake"), (v / n for v in window["sums"])))
                m.update(grad_norm_d=gn_d, grad_norm_g=gn_g,
                         images_per_s=win_time["steps"] * images_per_step / max(elapsed, 1e-9),
                         data_wait_share=win_time["data"] / max(elapsed, 1e-9), epoch=epoch + pos / bpe)
                if t.gp_weight > 0:
                    m["gp"] = window["gp"] / n
                if t.r1_gamma > 0:
                    m["r1"] = window["r1"] / n
                if t.lecam_weight > 0:
                    m["lecam"] = window.get("lecam", 0.0) / n
                if t.cr_weight > 0:
                    m["cr"] = window.get("cr", 0.0) / n
                if t.ssl_weight > 0:
                    m["ssl"] = window.get("ssl", 0.0) / n
                if t.topk_min < 1:
                    m["topk_fraction"] = k / t.batch_size
                if t.lr_decay != "none":
                    m["lr_factor"] = opt_g.param_groups[0]["lr"] / t.lr_g
                tracker.log_metrics(m, step=step)
                for k in ("loss_d", "loss_g", "d_real", "d_fake"):
                    history[k].append(m[k])
                history["step"].append(step)
                last_metrics.update(m)
                window = {"sums": [0.0] * 4, "count": 0, "gp": 0.0, "r1": 0.0}
                win_time = {"start": time.perf_counter(), "data": 0.0, "steps": 0}

            # -- 6e. epoch end: epoch metrics, hook, grid
            if pos >= bpe:
                ended_epochs.append(epoch)
                epoch, pos = epoch + 1, 0
            while ended_epochs:
                done = ended_epochs.pop(0) + 1  # 1-based epoch just finished
                n = max(epoch_acc["count"], 1)
                em = {f"epoch_{k}": v / n for k, v in zip(("loss_d", "loss_g", "d_real", "d_fake"), epoch_acc["sums"])}
                epoch_acc = {"sums": [0.0] * 4, "count": 0}
                tracker.log_metrics({**em, "epoch": float(done)}, step=step)
                if dist.main:
                    _call_hook("augforge_epoch_end", run=info, epoch=done, metrics=dict(em))
                if t.sample_every == 0 and step - last_sample["step"] >= sample_gap:
                    sample_grid()
                    last_sample["step"] = step
            if t.sample_every and step % t.sample_every == 0:
                sample_grid()
                last_sample["step"] = step

            # -- 6f. wall budget, in-training evaluation, best.pt, report()
            budget_hit = t.max_minutes > 0 and train_seconds() >= 60.0 * t.max_minutes
            timed_eval = t.eval_every_minutes > 0 and train_seconds() >= next_eval["t"]
            lr_progress = run_progress() if t.lr_decay != "none" else 0.0
            if dist.enabled and (t.max_minutes or t.eval_every_minutes):  # clocks differ: rank 0 decides
                budget_hit, timed_eval, lr_progress = dist.broadcast((budget_hit, timed_eval, lr_progress))
            if t.lr_decay != "none":  # every rank the same rate, else DDP's replicas drift apart
                set_lr(lr_progress)
            evaluating = t.eval_every > 0 or t.eval_every_minutes > 0
            if ((t.eval_every and step % t.eval_every == 0) or timed_eval
                    or (budget_hit and evaluating and best["step"] != step)):  # the budget's last step counts too
                if timed_eval:
                    next_eval["t"] = train_seconds() + 60.0 * t.eval_every_minutes
                if evaluator is not None:
                    net = ema if ema is not None else G
                    was_training = net.training
                    net.eval()
                    with _preserved_rng(device):
                        em = {key: float(v) for key, v in evaluator(net).items()}
                    em["train_minutes"] = train_seconds() / 60.0  # x-axis of quality-per-minute curves
                    em["process_cpu_minutes"] = time.process_time() / 60.0  # the same in CPU time: fair under load
                    net.train(was_training)
                    tracker.log_metrics(em, step=step)
                    last_metrics.update(em)
                    value = em.get(t.eval_metric)
                    if value is not None and math.isfinite(value):
                        better = best["value"] is None or (
                            value < best["value"] if direction == "minimize" else value > best["value"]
                        )
                        if better:
                            best = {"metric": t.eval_metric, "value": value, "step": step}
                            tracker.log_metrics({f"best_{t.eval_metric}": value}, step=step)
                dist.barrier()
                if dist.enabled:
                    best = dist.broadcast(best)
                if best["step"] == step:
                    write_checkpoint(best_path)
                if report is not None and dist.main:
                    try:
                        report(step, dict(last_metrics))
                    except BaseException:
                        status = "KILLED"
                        raise

            # -- 6g. checkpoint; the wall budget ends the run here, cleanly
            if budget_hit:
                stop_reason["value"] = "budget"
            if step % t.checkpoint_every == 0 or step == t.steps or budget_hit:
                write_checkpoint()
            if budget_hit:
                break
        if stop_reason["value"] is None:
            stop_reason["value"] = "steps"
    except _Stop:
        status = "KILLED"
        stop_reason["value"] = f"signal {stop['signal']}"
    except BaseException as exc:
        error = exc
        stop_reason["value"] = f"{'stopped by report()' if status == 'KILLED' else 'error'}: {type(exc).__name__}"
        if status != "KILLED":
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    finally:
        progress.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)

    # ---- 7. end: last checkpoint, curves, artifacts, run_end hook --------------------------------
    checkpoint = last_path if last_path.exists() else None
    try:
        # a KeyboardInterrupt may have cut a step in half: keep the previous checkpoint then
        if status == "KILLED" and not isinstance(error, KeyboardInterrupt):
            if saved_at["step"] != step:
                checkpoint = write_checkpoint()
        if status != "FAILED" and dist.main:
            if step != last_sample["step"]:
                sample_grid()
            if history["step"]:
                loss_curve_png(history, run_dir / "loss_curve.png", title=f"{run_dir.name} (step {step})")
                tracker.log_artifact(run_dir / "loss_curve.png")
            if last_path.exists():
                tracker.log_artifact(last_path, "checkpoints")
                checkpoint = last_path
            if best_path.exists():
                tracker.log_artifact(best_path, "checkpoints")
        elif dist.main and (run_dir / "loss_curve.png").exists():
            tracker.log_artifact(run_dir / "loss_curve.png")
    except BaseException as exc:  # a failure while saving must not hide the original error
        if error is None:
            error, status = exc, "FAILED"
    if best["value"] is not None:
        last_metrics[f"best_{best['metric']}"] = best["value"]
        last_metrics["best_step"] = float(best["step"])
    result = TrainResult(
        status=status, step=step, epoch=epoch, run_dir=run_dir, run_id=run_id, checkpoint=checkpoint,
        best_checkpoint=best_path if best_path.exists() else None, metrics=last_metrics,
    )
    if dist.enabled:
        print(f"[rank {dist.rank}] final weights digest {_weights_digest(G, D, *([ema] if ema is not None else []))} step {step}", file=sys.stderr, flush=True)
    if dist.main:
        tracker.set_tags({"stop_reason": str(stop_reason["value"]), "stop_detail": _stop_detail(stop_reason["value"], step, t, train_seconds(), best)})
        tracker.end(status)
        _call_hook("augforge_run_end", run=info, result=result)
        if stop_reason["value"] == "budget":
            print(f"\n{_stop_detail('budget', step, t, train_seconds(), best)}. "
                  f"Continue with: augforge train --resume {run_dir} --set train.max_minutes=<more>", file=sys.stderr)
        if stop["signal"] and error is None:
            print(f"\n{stop['signal']}: stopped at step {step}; checkpoint {checkpoint}. "
                  f"Continue with: augforge train --resume {run_dir}", file=sys.stderr)
    if dist.enabled:
        with contextlib.suppress(Exception):
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    if error is not None:
        raise error
    return result


def _stop_detail(reason: str | None, step: int, t, seconds: float, best: dict) -> str:
    """One sentence for the run's ``stop_detail`` tag: why it ended, when, what was kept."""
    kept = f"; best.pt is step {best['step']} ({best['metric']} {best['value']:.4g})" if best.get("value") is not None else ""
    why = {"budget": f"{t.budget_clock} budget of {t.max_minutes:g} min reached", "steps": f"all {t.steps} steps done"}.get(str(reason), str(reason))
    return f"{why} at step {step} after {seconds / 60.0:.1f} min of training{kept}"


def _nan_message(step, vals, saved_step, last_path, t, exact: bool) -> str:
    names = ("loss_d", "loss_g", "d_real", "d_fake")
    bad = ", ".join(f"{n}={v}" for n, v in zip(names, vals) if not math.isfinite(v))
    when = f"at step {step}" if exact else f"by step {step} (checked every train.log_every={t.log_every} steps)"
    kept = (f"the last good checkpoint is {last_path} (step {saved_step})" if saved_step is not None
            else "no checkpoint had been written yet")
    return (f"training diverged {when}: {bad}; {kept} and was not overwritten. "
            f"Try a lower train.lr_d/lr_g, train.amp=off, a gradient penalty (train.gp_weight) or R1 (train.r1_gamma).")


def _write_splits(path: Path, arrays, splits: dict[str, np.ndarray]) -> None:
    import pandas as pd

    rows = []
    for name, idx in splits.items():
        for i in np.asarray(idx):
            rows.append({"image_id": arrays.meta["image_id"].iloc[i], "label": arrays.class_names[int(arrays.labels[i])],
                         "group": arrays.meta["group"].iloc[i], "split": name})
    pd.DataFrame(rows).to_csv(path, index=False)


def _start_tracker(tracker, cfg: RunConfig, run_id: str | None, nested: bool, tags: dict, resumed_at: int | None) -> None:
    """Start (or, on resume, reopen) the tracked run and log params + tags."""
    from augforge.runs import record_run_id, source_tags

    run_dir = Path(tags["run_dir"])
    tags = {**tags, **source_tags(run_dir)}  # a resumed copy links to the run it came from
    started = False
    if run_id:
        try:
            tracker.start(run_name=cfg.tracking.run_name, tags=None, nested=nested, run_id=run_id)
            started = True
        except Exception as exc:  # the store does not know the run (another --tracking-uri): new run
            print(f"warning: cannot reopen tracked run {run_id} ({type(exc).__name__}); starting a new one", file=sys.stderr)
    if not started:
        tracker.start(run_name=cfg.tracking.run_name, tags=tags, nested=nested)
    if tracker.run_id:
        record_run_id(run_dir, tracker.run_id)
    params = cfg.flat()
    if resumed_at is None:
        tracker.log_params(params)
    else:
        tracker.set_tags({**tags, "resumed_at_step": str(resumed_at)})
        for k, v in params.items():  # params already logged cannot change in MLflow
            try:
                tracker.log_params({k: v})
            except Exception:
                tracker.set_tags({f"resume.{k}": str(v)})


class _Progress:
    """tqdm bar on a terminal (step, images/s, losses, ETA); a log line every 30 s otherwise."""

    def __init__(self, total: int, start: int, enabled: bool, images_per_step: int):
        self.enabled, self.total, self.start, self.ips = enabled, total, start, images_per_step
        self.t0 = time.perf_counter()
        self.last_line = self.t0
        self.losses = ""
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, step_time: float, vals) -> None:
        if not self.enabled:
            return
        if vals is not None:
            d, g = vals[0].item(), vals[1].item()
            self.losses = f"loss_d={d:.3f} loss_g={g:.3f}"
        now = time.perf_counter()
        rate = (step - self.start) / max(now - self.t0, 1e-9)  # steps/s since start (or resume)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if vals is not None:
                self.bar.set_postfix_str(f"{rate * self.ips:.1f} img/s {self.losses}", refresh=False)
            return
        if now - self.last_line >= 30 or step == self.total:
            self.last_line = now
            eta = (self.total - step) / max(rate, 1e-9)
            print(f"step {step}/{self.total} {rate * self.ips:.1f} img/s ({rate:.3f} steps/s) {self.losses} "
                  f"ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# Finding a run's checkpoint (evaluate / export / generate use this)


def checkpoint_for_run(run_id: str, *, tracking_uri: str | None = None, best: bool = False) -> Path:
    """Return a local path to the checkpoint of tracked run ``run_id`` (downloaded if needed).

    Looks for the run's ``checkpoints/last.pt`` (``best.pt`` with ``best=True``) artifact;
    falls back to the run folder recorded in the ``run_dir`` tag.
    """
    import mlflow

    from augforge.tracking import default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise AugforgeError(f"no tracked run {run_id!r} in {uri} ({type(exc).__name__}); check the id and --tracking-uri") from None
    name = "best.pt" if best else "last.pt"
    art = run.info.artifact_uri.rstrip("/") + f"/checkpoints/{name}"
    if art.startswith("file://"):
        from urllib.parse import unquote, urlparse

        local = Path(unquote(urlparse(art).path))
        if local.is_file():
            return local
    elif not art.startswith(("/", ".")):
        try:
            dst = Path(os.environ.get("AUGFORGE_CACHE_DIR", ".cache/augforge")) / "checkpoints" / run_id
            dst.mkdir(parents=True, exist_ok=True)
            got = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"checkpoints/{name}", dst_path=str(dst), tracking_uri=uri
            )
            return Path(got)
        except Exception:
            pass
    elif Path(art).is_file():
        return Path(art)
    run_dir = run.data.tags.get("run_dir")
    if run_dir and (Path(run_dir) / "checkpoints" / name).is_file():
        return Path(run_dir) / "checkpoints" / name
    what = "best checkpoint (was train.eval_every > 0?)" if best else "checkpoint"
    raise AugforgeError(f"tracked run {run_id} has no {what}: neither artifact checkpoints/{name} nor {run_dir}/checkpoints/{name}")
