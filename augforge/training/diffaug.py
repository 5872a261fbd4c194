"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for data-efficient GANs.

The loop applies the *same* policy to real and generated batches right before the
discriminator, and inside the generator step too, so D never sees an un-augmented image and
G still gets gradients through the augmentation (every op here is differentiable w.r.t. x).
That lets D be regularised with strong augmentation without the augmentation leaking into
what G learns to draw (the augmented distribution is matched, hence the original one).

Images are ``float[B, C, H, W]`` in [-1, 1]. Randomness comes from torch's global RNG on
``x.device`` (one draw per image), so ``torch.manual_seed`` and a restored RNG state give
bitwise the same augmentation: resumed runs reproduce. Outputs are not clamped (as in the
reference): colour jitter may leave [-1, 1] slightly.

Policies (comma-separated, applied in the order given):
- ``color``: brightness +U(-0.5, 0.5), saturation xU(0, 2) around the per-pixel channel
  mean, contrast xU(0.5, 1.5) around the image mean;
- ``translation``: integer shift of up to 1/8 of the side per axis, zero (mid-grey) fill;
- ``cutout``: one zeroed square of half the side at a random centre (may overlap the edge).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from augforge.errors import ConfigError


def _rand(x: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) number per image, shaped to broadcast over [B, C, H, W]."""
    return torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device)


def brightness(x: torch.Tensor) -> torch.Tensor:
    return x + (_rand(x) - 0.5)


def saturation(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_rand(x) * 2) + mean


def contrast(x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side (pixels, integer), filling with zeros."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij"
    )
    # Index a 1-pixel zero border: source rows/cols outside the image land on it.
    gy = torch.clamp(gy + ty + 1, 0, h + 1)
    gx = torch.clamp(gx + tx + 1, 0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    return padded.permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` times the side per image, centred anywhere in the image."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gy, gx = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij"
    )
    gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
    gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gy, gx] = 0
    return x * mask.unsqueeze(1)


POLICIES = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """Split and check a policy string; unknown names raise ``ConfigError`` listing the valid ones."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ConfigError(
            f"unknown DiffAugment policy {', '.join(map(repr, unknown))} in train.diffaug={policy!r}; "
            f"valid: {', '.join(POLICIES)} (comma-separated, or empty for none)"
        )
    return names


def diff_augment(x: torch.Tensor, policy: str) -> torch.Tensor:
    """Apply the comma-separated ``policy`` to a batch; ``""`` returns ``x`` itself."""
    for name in parse_policy(policy):
        for fn in POLICIES[name]:
            x = fn(x)
    return x
