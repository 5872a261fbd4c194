"""The networks of a run and what steps them: G, D, the EMA of G, Adam, AMP scalers, DDP/compile.

``build_nets`` reads only the config and the class names; ``Nets`` holds the modules in the
forms the loop calls them (``G_run`` / ``D_run`` wrapped for DDP and compile, ``G_nograd`` /
``D_frozen`` unwrapped where no gradient reduction is wanted).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from augforge import registry
from augforge.config import RunConfig
from augforge.errors import ConfigError
from augforge.interfaces import Discriminator
from augforge.model_checks import check_models
from augforge.training.distributed import Dist, has_unused_params
from augforge.training.rng import derived_seed, preserved_rng
from augforge.training.schedules import lr_factor

#: columns per row of a sample grid
GRID_COLUMNS = 8


@dataclass
class Nets:
    G: nn.Module
    D: nn.Module
    ema: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler
    fp16: bool
    latent_dim: int
    num_classes: int  # 0: unconditional
    fixed_z: torch.Tensor  # sample-grid noise: its own generator, never the training stream
    fixed_y: torch.Tensor | None
    G_run: Any = None  # G / D as the training steps call them: DDP- and compile-wrapped
    D_run: Any = None
    G_nograd: Any = None  # D-step fakes: no DDP hooks needed
    D_frozen: Any = None  # G step: D frozen, no DDP reduction
    D_ssl: Callable | None = None  # D's self-supervised loss (train.ssl_weight > 0)
    D_cls: Callable | None = None  # D's logits and class logits in one pass (train.ac_weight > 0)
    autocast: Callable[[], Any] = contextlib.nullcontext

    def params(self):
        """Parameter lists of G and D, and (EMA on) those of the EMA + the buffers it copies."""
        extra = (list(self.ema.parameters()), list(self.ema.buffers()), list(self.G.buffers())) if self.ema is not None else None
        return list(self.G.parameters()), list(self.D.parameters()), extra

    def set_lr(self, cfg: RunConfig, progress: float) -> None:
        """Both rates at ``lr_factor(progress)`` of their base (``train.lr_decay``); TTUR ratio kept."""
        t = cfg.train
        factor = lr_factor(progress, t.lr_decay, t.lr_decay_start)
        for opt, base in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    @torch.no_grad()
    def sample(self, device) -> torch.Tensor:
        """The sample grid's images (EMA G when there is one) from the fixed noise, RNG streams untouched."""
        net = self.ema if self.ema is not None else self.G
        was_training = net.training
        net.eval()
        with preserved_rng(device):
            imgs = [net(self.fixed_z[i : i + 64].to(device), self.fixed_y[i : i + 64].to(device) if self.fixed_y is not None else None)
                    .float().cpu() for i in range(0, len(self.fixed_z), 64)]
        net.train(was_training)
        return torch.cat(imgs)

    def load_state(self, state: dict[str, Any]) -> None:
        """Weights, optimisers, EMA and AMP scalers from a checkpoint (resume)."""
        self.G.load_state_dict(state["generator"]["state"])
        self.D.load_state_dict(state["discriminator"]["state"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.ema is not None:
            if state.get("g_ema") is None:
                raise ConfigError("the checkpoint has no EMA weights but train.ema_decay > 0")
            self.ema.load_state_dict(state["g_ema"])
        extra = state.get("extra", {})
        if extra.get("scaler_g"):
            self.scaler_g.load_state_dict(extra["scaler_g"])
            self.scaler_d.load_state_dict(extra["scaler_d"])


def build_nets(cfg: RunConfig, class_names: list[str], device: torch.device, amp_dtype: torch.dtype | None) -> Nets:
    """Build and check G and D (``registry.build``: the constructor signature is the schema), Adam, EMA."""
    t = cfg.train
    num_classes = len(class_names) if cfg.model.conditional else 0
    G = registry.build(
        "generator", cfg.model.generator, image_size=cfg.data.image_size, num_classes=num_classes,
        latent_dim=cfg.model.latent_dim, **cfg.generator,
    ).to(device)
    D = registry.build(
        "discriminator", cfg.discriminator_name, image_size=cfg.data.image_size, num_classes=num_classes,
        **cfg.discriminator,
    ).to(device)
    check_models(G, D, image_size=cfg.data.image_size, num_classes=num_classes, latent_dim=cfg.model.latent_dim, device=device)
    if t.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    latent_dim = int(getattr(G, "latent_dim", cfg.model.latent_dim))
    ema = copy.deepcopy(G).eval().requires_grad_(False) if t.ema_decay > 0 else None
    fp16 = amp_dtype == torch.float16
    gen = torch.Generator().manual_seed(derived_seed(t.seed, 7))
    rows = len(class_names) if num_classes else 4
    if num_classes:  # one row per class, the same z down each column
        fixed_z = torch.randn(GRID_COLUMNS, latent_dim, generator=gen).repeat(rows, 1)
        fixed_y = torch.arange(rows).repeat_interleave(GRID_COLUMNS)
    else:
        fixed_z, fixed_y = torch.randn(rows * GRID_COLUMNS, latent_dim, generator=gen), None
    return Nets(
        G=G, D=D, ema=ema,
        opt_g=torch.optim.Adam(G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2), eps=t.eps),
        opt_d=torch.optim.Adam(D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2), eps=t.eps),
        scaler_g=torch.amp.GradScaler("cuda", enabled=fp16), scaler_d=torch.amp.GradScaler("cuda", enabled=fp16),
        fp16=fp16, latent_dim=latent_dim, num_classes=num_classes, fixed_z=fixed_z, fixed_y=fixed_y,
        autocast=(lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext,
    )


def wrap_nets(nets: Nets, cfg: RunConfig, dist: Dist, device: torch.device) -> None:
    """Fill ``nets.G_run`` / ``D_run`` (DDP, compile) and the unwrapped call forms; after resume."""
    t, G, D = cfg.train, nets.G, nets.D
    nets.G_run, nets.D_run = G, D
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        y_probe = torch.arange(2, device=device) % max(nets.num_classes, 1) if nets.num_classes else None
        z_probe = torch.randn(2, nets.latent_dim, generator=torch.Generator().manual_seed(0)).to(device)
        x_probe = torch.zeros(2, 3, cfg.data.image_size, cfg.data.image_size, device=device)
        nets.G_run = nn.parallel.DistributedDataParallel(
            G, device_ids=ids, find_unused_parameters=has_unused_params(G, lambda: G(z_probe, y_probe), device))
        nets.D_run = nn.parallel.DistributedDataParallel(
            D, device_ids=ids, find_unused_parameters=has_unused_params(D, lambda: D(x_probe, y_probe), device))
    if t.compile:
        nets.G_run, nets.D_run = torch.compile(nets.G_run), torch.compile(nets.D_run)
    nets.G_nograd = torch.compile(G) if t.compile else G
    nets.D_frozen = torch.compile(D) if t.compile else D
    if t.ssl_weight > 0:
        if dist.enabled:  # the decoder would run outside DDP: its gradients would not be averaged
            raise ConfigError("train.ssl_weight > 0 is not supported under torchrun yet; train on one process or set it to 0")
        if type(D).self_supervised_loss is Discriminator.self_supervised_loss:
            raise ConfigError(f"train.ssl_weight > 0 but discriminator {cfg.discriminator_name!r} has no self_supervised_loss; "
                              "use sngan (--set discriminator.decoder=true) or set train.ssl_weight=0")
        nets.D_ssl = D.self_supervised_loss
    if t.ac_weight > 0:
        if dist.enabled:  # the class head would run outside DDP: its gradients would not be averaged
            raise ConfigError("train.ac_weight > 0 is not supported under torchrun yet; train on one process or set it to 0")
        if not nets.num_classes:
            raise ConfigError("train.ac_weight > 0 needs a conditional model (model.conditional=true) or train.ac_weight=0")
        if type(D).forward_with_classes is Discriminator.forward_with_classes:
            raise ConfigError(f"train.ac_weight > 0 but discriminator {cfg.discriminator_name!r} has no forward_with_classes; "
                              "use sngan (--set discriminator.class_head=true) or set train.ac_weight=0")
        nets.D_cls = D.forward_with_classes


@torch.no_grad()
def ema_update(ema_params, params, ema_buffers, buffers, decay: float) -> None:
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for be, b in zip(ema_buffers, buffers):
        be.copy_(b)


def optimise(loss, opt, scaler, params, log_now: bool) -> float | None:
    """One optimiser step through the (possibly disabled) AMP scaler; returns the gradient
    norm, unscaled, on logging steps only (it costs a sync on CUDA), else None."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    norm = None
    if log_now:
        scaler.unscale_(opt)
        norm = grad_norm(params)
    scaler.step(opt)
    scaler.update()
    return norm


def grad_norm(params) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()))


def diffaug(policy: str):
    if not policy:
        return lambda x: x
    from augforge.training.diffaug import diff_augment

    return lambda x: diff_augment(x, policy)

