"""`sngan`: the modern small-data default — a ResNet cGAN with a projection discriminator.

- Discriminator (Miyato & Koyama 2018, "cGANs with Projection Discriminator"): residual
  down-blocks, every weight spectrally normalised (Miyato et al. 2018; one power iteration
  per training forward, stored vectors in eval mode, so export is deterministic), ReLU,
  global *sum* pooling to a feature vector ``h``, then ``logit = w.h + embed(y).h``: the
  class enters as an inner product with the features instead of as input channels, which
  keeps the class signal strong with few images per class.
- Generator: residual up-blocks (nearest x2 then two 3x3 convs, 1x1 shortcut) with
  *conditional* BatchNorm — per-class gain and bias (initialised to 1 and 0) after a shared,
  non-affine normalisation, as in the projection paper and BigGAN. Unconditional models use
  ordinary affine BatchNorm.
- Hinge loss, TTUR, DiffAugment, EMA: training options (preset ``modern``).

Widths: ``channels`` at the image resolution, doubling per halving of the side up to 8x
(like DCGAN), e.g. 64 px with channels=32: G 4x4:256 -> 8:128 -> 16:64 -> 32:32 -> 64:32.
Defaults are sized for a CPU (see docs/models.md for timings); raise
``channels`` on a GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augforge.errors import ConfigError
from augforge.interfaces import Discriminator, Generator
from augforge.plugins import hookimpl


def _sides(image_size: int) -> list[int]:
    """Feature-map sides between 4x4 and the image: 4, 8, ..., image_size."""
    if image_size not in (32, 64, 128):
        raise ConfigError(f"sngan: image_size {image_size} not supported; valid: 32, 64, 128")
    return [4 * 2**i for i in range(int(math.log2(image_size // 4)) + 1)]


def _width(channels: int, image_size: int, side: int) -> int:
    """Channels of a feature map of this side: ``channels`` near the image, x2 per halving, <= x8."""
    return channels * max(1, min(8, image_size // (2 * side)))


def _xavier(m: nn.Module) -> nn.Module:
    """Xavier-uniform weights, zero biases (the SNGAN reference code's init)."""
    nn.init.xavier_uniform_(m.weight)
    if getattr(m, "bias", None) is not None:
        nn.init.zeros_(m.bias)
    return m


def _sn(m: nn.Module) -> nn.Module:
    """Initialise, *then* spectrally normalise, so the stored u/v match the initial weight."""
    return spectral_norm(_xavier(m), n_power_iterations=1)


# --------------------------------------------------------------------------------------------
# Generator


class CondBatchNorm(nn.Module):
    """BatchNorm whose gain and bias depend on the class (plain affine BN when unconditional)."""

    def __init__(self, features: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(features, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, features)
            self.bias = nn.Embedding(num_classes, features)
            nn.init.ones_(self.gain.weight)  # start as the identity transform for every class
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = self.bn(x)
        if self.num_classes:
            h = h * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]
        return h


#: how feature maps are doubled in G. "nearest" copies each value into a 2x2 block; through
#: three stages that is an 8x8-pixel block at 64 px, and at initialisation the 1x1 shortcuts
#: (std ~2x the residual branch's, measured) carry those blocks straight to the output, so
#: the images start tiled and a short CPU run never unlearns it. "bilinear" interpolates
#: instead: no block edges for G to hide.
UPSAMPLE_MODES = ("nearest", "bilinear")


def _up(x: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class UpBlock(nn.Module):
    """CBN-ReLU-up-conv-CBN-ReLU-conv, plus an upsampled 1x1 shortcut: doubles the side."""

    def __init__(self, cin: int, cout: int, num_classes: int, upsample: str = "nearest"):
        super().__init__()
        self.upsample = upsample
        self.bn1, self.bn2 = CondBatchNorm(cin, num_classes), CondBatchNorm(cout, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = _up(F.relu(self.bn1(x, labels)), self.upsample)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), labels)))
        return h + self.skip(_up(x, self.upsample))


class SNGANGenerator(Generator):
    name = "sngan"
    description = "ResNet generator with class-conditional BatchNorm (projection-cGAN / SNGAN style)"

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 0,
        latent_dim: int = 128,
        channels: int = 32,  # width at the image resolution; x2 per halving up to x8
        upsample: str = "nearest",  # nearest | bilinear (see UPSAMPLE_MODES)
    ):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"sngan: upsample={upsample!r} not supported; valid: {', '.join(UPSAMPLE_MODES)}")
        self.image_size, self.num_classes, self.latent_dim = image_size, num_classes, latent_dim
        widths = [_width(channels, image_size, s) for s in _sides(image_size)]
        self.w0 = widths[0]
        self.fc = nn.Linear(latent_dim, 4 * 4 * widths[0])  # z -> 4x4 map
        self.blocks = nn.ModuleList(UpBlock(a, b, num_classes, upsample) for a, b in zip(widths[:-1], widths[1:]))
        self.bn_out = nn.BatchNorm2d(widths[-1])
        self.conv_out = nn.Conv2d(widths[-1], 3, 3, padding=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                _xavier(m)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = labels if self.conditional else None
        h = self.fc(z).view(-1, self.w0, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.conv_out(F.relu(self.bn_out(h))))

    @classmethod
    def search_space(cls, trial):
        return {"channels": trial.suggest_categorical("channels", [16, 32, 64])}


# --------------------------------------------------------------------------------------------
# Discriminator


class DownBlock(nn.Module):
    """(ReLU-)conv-ReLU-conv-avgpool plus a 1x1-conv-avgpool shortcut: halves the side.

    The first block skips the leading ReLU (it would clip the raw image) and pools before
    its shortcut conv (Miyato's "optimized block"); all convs spectrally normalised.
    """

    def __init__(self, cin: int, cout: int, first: bool):
        super().__init__()
        self.first = first
        self.conv1 = _sn(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = _sn(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(h))), 2)
        s = self.skip(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.skip(x), 2)
        return h + s


class SNGANDiscriminator(Discriminator):
    name = "sngan"
    description = "spectral-norm ResNet discriminator with a class-projection head (Miyato & Koyama 2018)"

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 0,
        channels: int = 32,  # width after the first block; x2 per halving up to x8
        decoder: bool = False,  # a small decoder for train.ssl_weight (reconstruct the image from the 8x8 features)
        class_head: bool = False,  # a linear classifier on the pooled features for train.ac_weight (conditional only)
    ):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        sides = _sides(image_size)[::-1][1:]  # block output sides: image_size/2 .. 4
        widths = [_width(channels, image_size, s) for s in sides]
        cins = [3] + widths[:-1]
        self.blocks = nn.Sequential(*(DownBlock(a, b, i == 0) for i, (a, b) in enumerate(zip(cins, widths))))
        self.decoder = None
        if decoder:
            # FastGAN's self-supervised D (Liu et al. 2021) with an L1 target instead of its ImageNet
            # LPIPS (no pretrained weights here): from the 8x8 features back to a half-size image,
            # so D must keep what the image looks like, not only what separates real from fake.
            self.ssl_block = sides.index(8)
            width, layers = widths[self.ssl_block], []
            for _ in range(int(math.log2(image_size // 16))):  # 8 -> image_size / 2
                layers += [nn.Upsample(scale_factor=2.0, mode="nearest"), _sn(nn.Conv2d(width, max(width // 2, 16), 3, padding=1)),
                           nn.ReLU()]
                width = max(width // 2, 16)
            self.decoder = nn.Sequential(*layers, _sn(nn.Conv2d(width, 3, 3, padding=1)), nn.Tanh())
        self.linear = _sn(nn.Linear(widths[-1], 1))
        if num_classes:
            self.embed = _sn(nn.Embedding(num_classes, widths[-1]))  # projection vectors, one per class
        if class_head and not num_classes:
            raise ConfigError("sngan: class_head=true needs a conditional model (num_classes > 0); for an unconditional "
                              "one (e.g. --preset modern-cpu --set model.conditional=false) add "
                              "--set discriminator.class_head=false --set train.ac_weight=0")
        # the projection scores *how well* an image fits its label but never has to say *which* class
        # it shows; a classifier on the same pooled features must (Odena et al. 2017), and G, asked
        # to make fakes it classifies as their label, gets a direct per-class signal (train.ac_weight)
        self.classifier = _sn(nn.Linear(widths[-1], num_classes)) if class_head else None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return F.relu(self.blocks(images)).sum(dim=(2, 3))  # global sum pooling: [B, C]

    def _score(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        out = self.linear(h).squeeze(1)
        if self.conditional:
            out = out + (self.embed(labels) * h).sum(1)  # projection: <embed(y), h>
        return out

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self._score(self._features(images), labels)

    def forward_with_classes(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward``'s logits and the class head's logits ``[B, num_classes]`` from one pass."""
        if self.classifier is None:
            raise ConfigError("sngan: train.ac_weight > 0 needs the discriminator's class head: --set discriminator.class_head=true")
        h = self._features(images)
        return self._score(h, labels), self.classifier(h)

    def self_supervised_loss(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean L1 between the decoder's reconstruction from the 8x8 features and the image
        average-pooled to half size (both in [-1, 1])."""
        if self.decoder is None:
            raise ConfigError("sngan: train.ssl_weight > 0 needs the discriminator's decoder: --set discriminator.decoder=true")
        h = images
        for block in self.blocks[: self.ssl_block + 1]:
            h = block(h)
        recon = self.decoder(F.relu(h))
        return (recon.float() - F.avg_pool2d(images.float(), 2)).abs().mean()

    @classmethod
    def search_space(cls, trial):
        return {"channels": trial.suggest_categorical("channels", [16, 32, 64])}


@hookimpl
def augforge_register_generators():
    return [SNGANGenerator]


@hookimpl
def augforge_register_discriminators():
    return [SNGANDiscriminator]
