"""One forward pass before training step 1: the contract in ``augforge.interfaces`` is checked.

A model that breaks it (wrong output size, no final tanh, logits of the wrong shape) would
otherwise train, evaluate and export without complaint and produce silently wrong images; the
messages name the plugin, the value seen, the value expected and the fix.

The check has no side effects on the run: the models run in eval mode (no batch-norm statistics
or spectral-norm power iterations change), their train/eval mode is restored, and the noise
comes from a private ``torch.Generator``, never the training stream.
"""

from __future__ import annotations

import torch
from torch import nn

from augforge.errors import ConfigError

BATCH = 2
#: the contract is "images in [-1, 1] for any z"; a z this far out exposes an unbounded last layer
Z_SCALES = (1.0, 8.0)


def _who(model: nn.Module, kind: str) -> str:
    from augforge import registry

    name = getattr(type(model), "name", type(model).__qualname__)
    try:
        return registry.describe(kind, name)
    except ConfigError:  # built outside the registry (a test, a notebook)
        return f"{kind} {name!r} ({type(model).__module__}.{type(model).__qualname__})"


def _check_size(model: nn.Module, kind: str, image_size: int) -> None:
    from augforge.registry import declared_image_sizes

    sizes = declared_image_sizes(type(model))
    if sizes and image_size not in sizes:
        raise ConfigError(
            f"{_who(model, kind)} declares image_sizes={sizes}, but the run uses data.image_size={image_size}; "
            f"use --image-size {' or '.join(map(str, sizes))}, or add {image_size} to image_sizes if the model supports it"
        )


def check_models(G: nn.Module, D: nn.Module, *, image_size: int, num_classes: int, latent_dim: int,
                 device: torch.device | str) -> None:
    """Run G and D once on a tiny batch and check shapes, dtype, range and declared sizes.

    Raises ``ConfigError`` naming the plugin, the value seen, the value expected and the fix.
    """
    _check_size(G, "generator", image_size)
    _check_size(D, "discriminator", image_size)
    g_who = _who(G, "generator")
    # the loop draws z of the generator's own latent_dim when it keeps one (as here)
    z_dim = int(getattr(G, "latent_dim", latent_dim))
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(BATCH, z_dim, generator=gen).to(device)
    labels = (torch.arange(BATCH) % num_classes).to(device) if num_classes else None
    g_mode, d_mode = G.training, D.training
    G.eval(), D.eval()
    try:
        with torch.no_grad():
            for scale in Z_SCALES:
                x = G(z * scale, labels)
                want = (BATCH, 3, image_size, image_size)
                if not isinstance(x, torch.Tensor) or tuple(x.shape) != want:
                    seen = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ConfigError(f"{g_who} returned images of shape {seen} for image_size={image_size}; expected "
                                      f"{want} (batch, RGB, H, W); make forward() produce image_size x image_size pixels")
                if not x.is_floating_point():
                    raise ConfigError(f"{g_who} returned dtype {x.dtype}; expected a floating-point tensor in [-1, 1]")
                lo, hi = float(x.min()), float(x.max())
                if not (-1.0 <= lo and hi <= 1.0):  # NaN fails too
                    raise ConfigError(f"{g_who} returned values in [{lo:.3g}, {hi:.3g}] (z scaled by {scale:g}); "
                                      f"expected [-1, 1] for any z; end forward() with torch.tanh")
            logits = D(x, labels)
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (BATCH,):
            seen = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"{_who(D, 'discriminator')} returned logits of shape {seen}; expected ({BATCH},) "
                              f"(one score per image); flatten the last layer, e.g. .view(-1) or .squeeze(1)")
    finally:
        G.train(g_mode), D.train(d_mode)
