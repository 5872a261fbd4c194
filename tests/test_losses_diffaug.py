"""GAN losses on known logits, the gradient penalties, and DiffAugment."""

import math

import pytest
import torch

from augforge.training import losses
from augforge.training.diffaug import POLICIES, diff_augment, parse_policy
from augforge.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Losses


def test_bce_on_known_logits():
    zero = torch.zeros(4)
    assert losses.d_bce(zero, zero).item() == pytest.approx(2 * math.log(2))  # -log(1/2) twice
    assert losses.g_bce(zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([3.0]), torch.tensor([-1.0])
    want = -math.log(1 / (1 + math.exp(-3))) - math.log(1 - 1 / (1 + math.exp(1)))
    assert losses.d_bce(real, fake).item() == pytest.approx(want, rel=1e-6)
    # non-saturating G loss: -log D(G(z)), large when D rejects the fake
    assert losses.g_bce(torch.tensor([-1.0])).item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    # numerically safe for extreme logits
    assert torch.isfinite(losses.d_bce(torch.tensor([-200.0]), torch.tensor([200.0])))


def test_hinge_wgan_lsgan_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # relu(1 - [2, .5]) = [0, .5] -> .25 ; relu(1 + [-2, .5]) = [0, 1.5] -> .75
    assert losses.d_hinge(real, fake).item() == pytest.approx(1.0)
    assert losses.g_hinge(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert losses.d_wgan(real, fake).item() == pytest.approx(-0.75 - 1.25)
    assert losses.g_wgan(fake).item() == pytest.approx(0.75)
    # 0.5 * mean((real - 1)^2) + 0.5 * mean(fake^2) = 0.5 * (1 + .25) / 2 + 0.5 * (4 + .25) / 2
    assert losses.d_lsgan(real, fake).item() == pytest.approx(0.3125 + 1.0625)
    assert losses.g_lsgan(torch.tensor([1.0, 0.0])).item() == pytest.approx(0.25)


def test_get_loss_lists_valid_names():
    assert losses.get_loss("hinge") == (losses.d_hinge, losses.g_hinge)
    with pytest.raises(ConfigError, match="valid: bce, hinge, wgan-gp, lsgan"):
        losses.get_loss("wgan")


class LinearCritic(torch.nn.Module):
    """D(x) = scale * <u, x> with ||u|| = 1: gradient norm is |scale| everywhere."""

    def __init__(self, shape, scale=1.0):
        super().__init__()
        u = torch.randn(shape)
        self.u = u / u.norm()
        self.scale = scale

    def forward(self, x, labels=None):
        return self.scale * (x * self.u).flatten(1).sum(1)


def test_gradient_penalty_zero_for_unit_gradient_norm():
    torch.manual_seed(0)
    real, fake = torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)
    gp = losses.gradient_penalty(LinearCritic((3, 8, 8)), real, fake)
    assert gp.item() == pytest.approx(0.0, abs=1e-10)
    gp2 = losses.gradient_penalty(LinearCritic((3, 8, 8), scale=3.0), real, fake)
    assert gp2.item() == pytest.approx(4.0, rel=1e-5)  # (3 - 1)^2


def test_gradient_penalty_is_differentiable_wrt_critic():
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1), torch.nn.Flatten(0))
    real, fake = torch.randn(4, 3, 2, 2), torch.randn(4, 3, 2, 2)
    gp = losses.gradient_penalty(lambda x, labels=None: d(x), real, fake)
    gp.backward()
    assert d[1].weight.grad is not None and d[1].weight.grad.abs().sum() > 0


def test_r1_on_known_discriminator():
    # D(x) = 0.5 * ||x||^2 per image -> grad = x -> R1 = mean_i ||x_i||^2
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = 0.5 * x.pow(2).flatten(1).sum(1)
    r1 = losses.r1_penalty(logits, x)
    assert r1.item() == pytest.approx(x.detach().pow(2).flatten(1).sum(1).mean().item(), rel=1e-6)
    # a linear D with weight w gives ||w||^2 regardless of x
    w = torch.randn(3, 4, 4)
    y = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert losses.r1_penalty((y * w).flatten(1).sum(1), y).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-5)


# --------------------------------------------------------------------------------------------
# DiffAugment


def _batch(seed=0, b=6, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def test_empty_policy_is_identity_and_unknown_lists_valid():
    x = _batch()
    assert diff_augment(x, "") is x
    with pytest.raises(ConfigError, match="valid: color, translation, cutout"):
        diff_augment(x, "color,rotation")
    assert parse_policy(" color , cutout ") == ["color", "cutout"]


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_shapes_ranges_and_determinism(policy):
    x = _batch()
    torch.manual_seed(123)
    a = diff_augment(x, policy)
    torch.manual_seed(123)
    b = diff_augment(x, policy)
    torch.manual_seed(124)
    c = diff_augment(x, policy)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b), "same seed must give bitwise the same augmentation"
    assert not torch.equal(a, c)
    assert torch.isfinite(a).all()
    if policy in ("translation", "cutout"):
        assert a.min() >= -1 and a.max() <= 1  # pixels are moved or zeroed, never scaled
    else:
        # brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5]: bounded, not clamped
        assert a.abs().max() <= 8


def test_augmentation_is_differentiable():
    x = _batch().requires_grad_(True)
    diff_augment(x, "color,translation,cutout").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_preserves_content_shifted():
    size, max_shift = 16, 2  # 1/8 of 16 px
    x = _batch(b=8, size=size)
    torch.manual_seed(7)
    out = POLICIES["translation"][0](x)
    shifts = set()
    for i in range(len(x)):
        match = None
        for dy in range(-max_shift, max_shift + 1):
            for dx in range(-max_shift, max_shift + 1):
                # out[y, x] = in[y + dy, x + dx] where inside the image, 0 elsewhere
                want = torch.zeros_like(x[i])
                ys, yd = slice(max(dy, 0), size + min(dy, 0)), slice(max(-dy, 0), size + min(-dy, 0))
                xs, xd = slice(max(dx, 0), size + min(dx, 0)), slice(max(-dx, 0), size + min(-dx, 0))
                want[:, yd, xd] = x[i][:, ys, xs]
                if torch.equal(out[i], want):
                    match = (dy, dx)
        assert match is not None, f"image {i} is not a shifted copy of its input"
        shifts.add(match)
    assert len(shifts) > 1, "shifts should vary per image"


def test_cutout_zeroes_one_square_per_image():
    x = _batch(b=8, size=16) * 0.5 + 0.75  # strictly positive, so zeros are the cutout
    torch.manual_seed(3)
    out = POLICIES["cutout"][0](x)
    for i in range(len(x)):
        zero = (out[i] == 0).all(0)
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # the rest is untouched
        ys, xs = torch.nonzero(zero, as_tuple=True)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert int(zero.sum()) == h * w and h <= 8 and w <= 8  # one rectangle, at most half a side


def test_color_acts_per_image_and_keeps_geometry():
    x = _batch(b=4, size=8)
    torch.manual_seed(0)
    out = diff_augment(x, "color")
    # brightness/saturation/contrast are affine per image and pixel: constant images stay constant
    flat = torch.full((2, 3, 8, 8), 0.2)
    torch.manual_seed(0)
    out_flat = diff_augment(flat, "color")
    assert torch.allclose(out_flat, out_flat[:, :, :1, :1].expand_as(out_flat))
    assert not torch.allclose(out, x)
