"""GAN losses as small pure functions of discriminator logits.

Each ``d_*`` returns the discriminator's loss, each ``g_*`` the generator's, both scalars.
``wgan-gp`` is the Wasserstein loss; its gradient penalty is added by the loop from
``gradient_penalty`` (weight ``train.gp_weight``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def d_bce(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def g_bce(fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating: maximise log D(G(z)) rather than minimise log(1 - D(G(z))).
    return F.softplus(-fake).mean()


def d_hinge(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def g_hinge(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_wgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def g_wgan(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


def d_lsgan(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def g_lsgan(fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


LOSSES = {"bce": (d_bce, g_bce), "hinge": (d_hinge, g_hinge), "wgan-gp": (d_wgan, g_wgan), "lsgan": (d_lsgan, g_lsgan)}


def get_loss(name: str):
    """Return ``(d_loss, g_loss)`` for a loss name; unknown names list the valid ones."""
    from augforge.errors import ConfigError

    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    return LOSSES[name]


def gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor, labels=None) -> torch.Tensor:
    """WGAN-GP: (||grad D(x_hat)||_2 - 1)^2 on random interpolates of real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(x_hat, labels)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1: squared gradient norm of D on real images (``real`` must require grad).

    The loop multiplies by ``r1_gamma / 2``.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def lecam_penalty(real: torch.Tensor, fake: torch.Tensor, ema_real: float, ema_fake: float) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021, eq. 3): pulls D's real logits towards the moving
    average of its fake logits and vice versa, bounding how far apart D can push the two on
    a small training set. ``ema_real``/``ema_fake``: moving averages of the mean logits.

    ``mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2)``; the loop adds it
    to D's loss times ``train.lecam_weight`` (0.3 in the authors' CIFAR DiffAugment scripts).
    """
    return F.relu(real - ema_fake).pow(2).mean() + F.relu(ema_real - fake).pow(2).mean()


def topk_count(batch: int, epoch: float, decay: float, min_fraction: float) -> int:
    """Top-k training (Sinha et al. 2020): how many of ``batch`` fakes give G its gradient.

    ``k = max(batch * decay**epoch, batch * min_fraction)``, rounded up: all fakes at first,
    then fewer per epoch (0.99 per epoch in the paper) down to the floor (0.5-0.75 there).
    ``min_fraction=1`` keeps every fake (off).
    """
    if not 0.0 < min_fraction <= 1.0 or not 0.0 < decay <= 1.0:
        raise ValueError(f"top-k: min_fraction={min_fraction} and decay={decay} must be in (0, 1]")
    return max(1, math.ceil(batch * max(decay**epoch, min_fraction)))


def topk_logits(fake: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` fake logits D finds most realistic: the samples G learns from under top-k."""
    return fake if k >= fake.shape[0] else torch.topk(fake, k, dim=0, sorted=False).values


def consistency_penalty(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Balanced consistency regularisation (Zhao et al. 2021): D should score two random
    augmentations of the same image alike: ``mean((D(T1(x)) - D(T2(x)))^2)``."""
    return (logits_a - logits_b).pow(2).mean()


def update_lecam_anchors(anchors: dict, logit_r: torch.Tensor, logit_f: torch.Tensor, decay: float, dist) -> None:
    """Move LeCam's anchors (moving means of D's real / fake logits) by one batch, in place.

    Under torchrun the batch means are averaged over ranks first, so every rank applies the same
    anchor. The first update copies (no bias towards the initial 0).
    """
    means = torch.stack([logit_r.detach().float().mean(), logit_f.detach().float().mean()])
    if dist.enabled:
        torch.distributed.all_reduce(means)
        means = means / dist.world
    d = min(decay, anchors["updates"] / (anchors["updates"] + 1.0))
    mean_r, mean_f = means.tolist()
    anchors["real"] = d * anchors["real"] + (1.0 - d) * mean_r
    anchors["fake"] = d * anchors["fake"] + (1.0 - d) * mean_f
    anchors["updates"] += 1


def mode_seeking_penalty(fake: torch.Tensor, z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """MSGAN's mode-seeking term (Mao et al. 2019), minimised by G: ``1 / (|G(z1) - G(z2)| / |z1 - z2| + eps)``.

    The batch's first and second halves are the pairs (the loop gives each pair one class), so
    it costs no extra forward pass. Large when different z give the same image: mode collapse.
    """
    h = len(fake) // 2
    ratio = (fake[:h] - fake[h : 2 * h]).abs().mean() / (z[:h] - z[h : 2 * h]).abs().mean()
    return 1.0 / (ratio + eps)
