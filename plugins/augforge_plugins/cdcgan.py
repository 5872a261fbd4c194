"""`cdcgan`: paper B's conditional DCGAN (PyTorch, HAM10000), 32/64/128 px.

What the paper states, and how it is built here:
- G input: Gaussian noise (100) concatenated with the one-hot class label, reshaped to a
  1x1 map and upscaled by transposed convolutions (4x4 kernels, stride 2: each doubles the
  side) from 4x4 to the image size; BatchNorm and LeakyReLU(0.2) after every layer but the
  last, which ends in tanh.
- "BatchNorm momentum 0.9" is the Keras convention (weight of the *old* running statistic);
  PyTorch's ``momentum`` weights the *new* batch statistic, so the same rule is 0.1.
- D: label-conditioned through ``num_classes`` constant one-hot "label map" channels
  concatenated to the image; strided 4x4 convs halve the side down to 4x4, BatchNorm and
  LeakyReLU(0.2); every conv spectrally normalised with one power iteration per forward
  (``torch.nn.utils.parametrizations.spectral_norm``; in eval mode it reuses the stored
  singular vectors, so export is deterministic). A last 4x4 valid conv gives the logit.
- Gradient penalty 10, Adam 2e-4, BCE and 100 epochs are training options (preset paper-b).

The paper gives no widths; we use the DCGAN ones (Radford et al.): ``channels=64`` at the
output resolution, doubling per halving of the side, capped at 8x (512).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from augforge.errors import ConfigError
from augforge.interfaces import Discriminator, Generator
from augforge.plugins import hookimpl

LEAK = 0.2  # LeakyReLU negative slope, as in the paper


def _widths(image_size: int, channels: int) -> list[int]:
    """Channels at each resolution 4, 8, ..., image_size / 2 (DCGAN doubling, capped at 8x).

    Width at side ``r`` is ``channels * min(8, image_size / (2 r))``: ``channels`` next to
    the image, twice that one step further from it, and so on.
    """
    if image_size not in (32, 64, 128):
        raise ConfigError(f"cdcgan: image_size {image_size} not supported; valid: 32, 64, 128")
    sides = [4 * 2**i for i in range(int(math.log2(image_size // 8)) + 1)]  # 4 .. image_size / 2
    return [channels * min(8, image_size // (2 * r)) for r in sides]


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN init (Radford et al.): conv weights N(0, 0.02), BN gains N(1, 0.02), zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class CDCGANGenerator(Generator):
    name = "cdcgan"
    description = "paper B's conditional DCGAN: noise + one-hot label, transposed convs, BN, LeakyReLU 0.2"

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 0,
        latent_dim: int = 100,
        channels: int = 64,  # width at the output resolution; x2 per halving, capped at 512
        bn_momentum: float = 0.1,  # PyTorch convention (= Keras 0.9, as the paper states)
    ):
        super().__init__()
        self.image_size, self.num_classes, self.latent_dim = image_size, num_classes, latent_dim
        widths = _widths(image_size, channels)  # sides 4 .. image_size / 2; 64 px: [512, 256, 128, 64]
        cin = latent_dim + num_classes
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cin, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4 (bias: BN follows)
            nn.BatchNorm2d(widths[0], momentum=bn_momentum),
            nn.LeakyReLU(LEAK),
        ]
        for a, b in zip(widths[:-1], widths[1:]):  # each doubles the side
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b, momentum=bn_momentum), nn.LeakyReLU(LEAK)]
        layers += [nn.ConvTranspose2d(widths[-1], 3, 4, 2, 1), nn.Tanh()]  # last doubling, to RGB
        self.net = nn.Sequential(*layers)
        # One-hot codes as a lookup table (an ONNX Gather); not saved in checkpoints.
        self.register_buffer("onehot", torch.eye(max(num_classes, 1)), persistent=False)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = torch.cat([z, self.onehot[labels].to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])

    @classmethod
    def search_space(cls, trial):
        return {"channels": trial.suggest_categorical("channels", [32, 64])}


class CDCGANDiscriminator(Discriminator):
    name = "cdcgan"
    description = "paper B's conditional DCGAN critic: label-map channels, spectral-norm strided convs, BN"

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 0,
        channels: int = 64,  # width after the first conv; x2 per halving, capped at 512
        bn_momentum: float = 0.1,
        batchnorm: bool = True,  # the paper uses BN in D; turn off for a per-sample gradient penalty
        spectral: bool = True,  # spectral normalisation, 1 power iteration
    ):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        widths = _widths(image_size, channels)[::-1]  # sides image_size / 2 .. 4; 64 px: [64, 128, 256, 512]

        def sn(m: nn.Module) -> nn.Module:
            return spectral_norm(m, n_power_iterations=1) if spectral else m

        # No BN on the first layer (DCGAN practice: normalising the input layer hurts).
        layers: list[nn.Module] = [sn(nn.Conv2d(3 + num_classes, widths[0], 4, 2, 1)), nn.LeakyReLU(LEAK)]
        for a, b in zip(widths[:-1], widths[1:]):  # each halves the side, down to 4x4
            layers.append(sn(nn.Conv2d(a, b, 4, 2, 1, bias=not batchnorm)))
            if batchnorm:
                layers.append(nn.BatchNorm2d(b, momentum=bn_momentum))
            layers.append(nn.LeakyReLU(LEAK))
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 0)))  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)
        self.register_buffer("onehot", torch.eye(max(num_classes, 1)), persistent=False)
        _dcgan_init(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            code = self.onehot[labels].to(images.dtype)[:, :, None, None]
            images = torch.cat([images, code.expand(-1, -1, images.shape[2], images.shape[3])], dim=1)
        return self.net(images).flatten()

    @classmethod
    def search_space(cls, trial):
        return {"channels": trial.suggest_categorical("channels", [32, 64])}


@hookimpl
def augforge_register_generators():
    return [CDCGANGenerator]


@hookimpl
def augforge_register_discriminators():
    return [CDCGANDiscriminator]
