"""`dcgan`: paper A's Keras DCGAN (Tables 1 and 2), faithful at 128x128, also 32 and 64 px.

The tables match the widely copied Keras-GAN ``dcgan.py`` template layer for layer (down to
the odd ``ZeroPadding2D(((0, 1), (0, 1)))`` in the discriminator), so where the paper is
silent we take the template's values and say so:

- generator activation: ReLU (Keras ``Activation`` layers; the template's ``"relu"``; the
  paper's prose says "leakyReLU" — selectable with ``activation="leaky_relu"``), also after
  the dense layer (Table 1 lists no separate activation, i.e. ``Dense(activation=...)``);
- BatchNorm: Keras ``momentum=0.8`` == PyTorch ``momentum=0.2`` (PyTorch weights the *new*
  batch statistic), Keras ``epsilon=1e-3``;
- LeakyReLU slope 0.2 in D; D ends in a Dense(1) *logit* (the sigmoid lives in the BCE loss);
- Keras default init (Glorot-uniform kernels, zero biases).

Keras ``padding="same"`` with stride 2 pads ``total = max((out - 1) * s + k - n, 0)`` pixels
and puts the odd one on the right/bottom; PyTorch's symmetric ``padding=1`` would shift the
sampling grid, so D pads explicitly (``same_pad``) and the shapes follow Table 2:
128 -> 64 -> 32 -(ZeroPad)-> 33 -> 17 -> 17 -> 17, Dense(17*17*512 -> 1).

Other sizes: G keeps the dense 4x4x256 and the three x2 upsamplings (4 -> 32 px) and makes
the last upsampling x(image_size / 32): x4 at 128 (the paper), x2 at 64, none at 32, so
every conv is the paper's conv. D is the same stack; its dense layer is sized to the final
map (9x9 at 64 px, 5x5 at 32 px).

Conditional variant (``num_classes > 0``; not in the paper, which trains one model per
class): G concatenates the one-hot label to z before the dense layer; D gets the one-hot
label as ``num_classes`` constant input channels (the classic cGAN "label maps").
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from augforge.errors import ConfigError
from augforge.interfaces import Discriminator, Generator
from augforge.plugins import hookimpl

KERAS_BN_EPS = 1e-3  # Keras BatchNormalization default epsilon (PyTorch's is 1e-5)


def same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TensorFlow 'same' padding for one axis: (before, after) in pixels."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def keras_init(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (PyTorch uses Kaiming-uniform)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    raise ConfigError(f"dcgan: unknown activation {name!r}; valid: relu, leaky_relu")


def _check_size(image_size: int) -> None:
    if image_size not in (32, 64, 128):
        raise ConfigError(f"dcgan: image_size {image_size} not supported; valid: 32, 64, 128")


class DCGANGenerator(Generator):
    name = "dcgan"
    description = "paper A's Keras DCGAN: dense 4x4x256 + upsample/conv/BN blocks (unconditional by default)"

    def __init__(
        self,
        *,
        image_size: int = 128,
        num_classes: int = 0,
        latent_dim: int = 100,
        channels: int = 256,  # the paper's widest layer; the later blocks use channels // 2
        activation: str = "relu",
        bn_momentum: float = 0.2,  # PyTorch convention (Keras momentum 0.8)
    ):
        super().__init__()
        _check_size(image_size)
        self.image_size, self.num_classes, self.latent_dim = image_size, num_classes, latent_dim
        c, c2 = channels, channels // 2
        self.dense = nn.Linear(latent_dim + num_classes, 4 * 4 * c)
        self.dense_act = _activation(activation)
        self.channels = c

        def bn(n):
            return nn.BatchNorm2d(n, eps=KERAS_BN_EPS, momentum=bn_momentum)

        last_up = image_size // 32  # 4 at 128 px (the paper), 2 at 64 px, 1 at 32 px
        layers = OrderedDict()
        # (upsampling factor, in channels, out channels) for the four conv blocks of Table 1
        for i, (up, cin, cout) in enumerate([(2, c, c), (2, c, c), (2, c, c2), (last_up, c2, c2)]):
            if up > 1:
                layers[f"up{i}"] = nn.Upsample(scale_factor=up, mode="nearest")  # UpSampling2D
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, padding=1)  # stride 1: 'same' == pad 1
            layers[f"bn{i}"] = bn(cout)
            layers[f"act{i}"] = _activation(activation)
        layers["conv_out"] = nn.Conv2d(c2, 3, 3, padding=1)
        layers["tanh"] = nn.Tanh()
        self.blocks = nn.Sequential(layers)
        keras_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        h = self.dense_act(self.dense(z)).view(-1, self.channels, 4, 4)
        return self.blocks(h)

    @classmethod
    def search_space(cls, trial):
        return {
            "channels": trial.suggest_categorical("channels", [128, 256]),
            "activation": trial.suggest_categorical("activation", ["relu", "leaky_relu"]),
        }


class DCGANDiscriminator(Discriminator):
    name = "dcgan"
    description = "paper A's Keras DCGAN critic: five 3x3 convs, BN, LeakyReLU 0.2, dropout, dense logit"

    def __init__(
        self,
        *,
        image_size: int = 128,
        num_classes: int = 0,
        channels: int = 32,  # first conv; doubles per layer: 32, 64, 128, 256, 512
        dropout: float = 0.25,
        bn_momentum: float = 0.2,  # PyTorch convention (Keras momentum 0.8)
    ):
        super().__init__()
        _check_size(image_size)
        self.image_size, self.num_classes = image_size, num_classes
        widths = [channels * 2**i for i in range(5)]
        strides = [2, 2, 2, 1, 1]
        layers = OrderedDict()
        size, cin = image_size, 3 + num_classes
        for i, (cout, s) in enumerate(zip(widths, strides)):
            before, after = same_pad(size, 3, s)
            layers[f"pad{i}"] = nn.ZeroPad2d((before, after, before, after))  # (left, right, top, bottom)
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, 3, stride=s)
            size = math.ceil(size / s)
            if i == 1:  # Keras ZeroPadding2D(((0, 1), (0, 1))): one row/column bottom/right
                layers["zeropad"] = nn.ZeroPad2d((0, 1, 0, 1))
                size += 1
            if i > 0:  # the first block has no BN (Table 2)
                layers[f"bn{i}"] = nn.BatchNorm2d(cout, eps=KERAS_BN_EPS, momentum=bn_momentum)
            layers[f"lrelu{i}"] = nn.LeakyReLU(0.2)
            layers[f"drop{i}"] = nn.Dropout(dropout)
            cin = cout
        self.features = nn.Sequential(layers)
        self.final_size = size  # 17 at 128 px, 9 at 64 px, 5 at 32 px
        self.dense = nn.Linear(size * size * cin, 1)
        keras_init(self)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            onehot = F.one_hot(labels, self.num_classes).to(images.dtype)
            maps = onehot[:, :, None, None].expand(-1, -1, images.shape[2], images.shape[3])
            images = torch.cat([images, maps], dim=1)
        return self.dense(self.features(images).flatten(1)).squeeze(1)

    @classmethod
    def search_space(cls, trial):
        return {
            "channels": trial.suggest_categorical("channels", [16, 32]),
            "dropout": trial.suggest_categorical("dropout", [0.0, 0.25]),
        }


@hookimpl
def augforge_register_generators():
    return [DCGANGenerator]


@hookimpl
def augforge_register_discriminators():
    return [DCGANDiscriminator]
