"""torch.distributed (torchrun) and the device: ranks, the device and AMP dtype, DDP's helpers.

Without ``WORLD_SIZE`` > 1 everything here is a no-op on one process (``Dist()``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass

import torch
from torch import nn

from augforge.errors import ConfigError
from augforge.training.rng import preserved_rng


@dataclass
class Dist:
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


def init_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if not torch.distributed.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo", timeout=_dt.timedelta(minutes=10))
    return Dist(rank, world, local_rank)


def resolve_device(name: str, dist: Dist) -> torch.device:
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


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
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



def weights_digest(*modules: nn.Module) -> str:
    """A short hash of every parameter and buffer (DDP test: equal on every rank)."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def has_unused_params(model: nn.Module, call, device: torch.device) -> bool:
    """Does a forward/backward leave some parameter without a gradient? (DDP must then search.)

    Probed once on a dummy batch; weights, buffers (BN statistics, spectral-norm vectors) and
    RNG states are restored afterwards, so the probe leaves no trace in the run.
    """
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with preserved_rng(device):
        call().float().sum().backward()
    unused = any(p.grad is None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return unused


def sync_buffers(dist: Dist, *modules: nn.Module | None) -> None:
    """Give every rank rank 0's buffers (BN running statistics drift apart between forwards)."""
    if not dist.enabled:
        return
    for m in modules:
        if m is not None:
            for b in m.buffers():
                torch.distributed.broadcast(b, src=0)
