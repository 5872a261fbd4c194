"""Detectors: the classifiers that evaluators use to judge generated lesions.

``paper-b-cnn`` is paper B's detector (three conv blocks, batch norm, dropout; trained with
class oversampling). ``resnet`` is a small ResNet of basic blocks written here (no
torchvision) for stronger features. Both take images in [-1, 1] and expose ``features(x)``,
the penultimate embedding that FID/KID, precision/recall and the memorisation audit use.
Training happens in the core (``augforge.evaluation.classify.fit_classifier``) with each class's
``recipe``.
"""

from __future__ import annotations

import torch
from torch import nn

from augforge.interfaces import Classifier
from augforge.plugins import hookimpl


class PaperBCNN(Classifier):
    name = "paper-b-cnn"
    description = "paper B's detector: 3 conv blocks + BN + dropout, oversampled classes"
    # CPU-sized: at most 12 x 2,500 class-balanced draws (about 5 passes over the 6,000 training
    # images of the shared HAM10000 sample), validated every 2,500
    recipe = {"epochs": 12, "epoch_size": 2500, "lr": 1e-3, "batch_size": 64, "oversample": True, "augment": True, "patience": 4}

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 7,
        widths: list[int] | tuple[int, ...] = (16, 32, 64),
        feature_dim: int = 128,
        dropout: float = 0.3,
    ):
        super().__init__()
        if image_size < 16:
            raise ValueError(f"paper-b-cnn needs image_size >= 16, got {image_size}")
        self.image_size, self.num_classes = image_size, num_classes
        layers, c_in = [], 3
        for c in widths:
            # one block: conv, batch norm, ReLU, 2x2 max-pool, light spatial dropout
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2), nn.Dropout2d(dropout / 3)]
            c_in = c
        self.blocks = nn.Sequential(*layers)
        # 2x2 pooled map keeps a little layout (centre vs border) at every input size
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(4 * c_in, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.pool(self.blocks(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNNDetector(PaperBCNN):
    name = "cnn-detector"
    description = "alias of paper-b-cnn (the name the evaluation issue uses)"


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Identity() if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class SmallResNet(Classifier):
    name = "resnet"
    description = "small ResNet (basic blocks, no torchvision) for stronger detector features"
    recipe = PaperBCNN.recipe  # the same training schedule, so the two backbones compare like for like

    def __init__(
        self,
        *,
        image_size: int = 64,
        num_classes: int = 7,
        widths: list[int] | tuple[int, ...] = (32, 64, 128, 256),
        blocks_per_stage: int = 1,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        # stride-2 stem: a 64 px image costs what a 32 px one would (CPU-friendly)
        stem_stride = 2 if image_size >= 64 else 1
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, c_in = [], widths[0]
        for i, c in enumerate(widths):
            for b in range(blocks_per_stage):
                stages.append(_BasicBlock(c_in, c, 2 if (i > 0 and b == 0) else 1))
                c_in = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@hookimpl
def augforge_register_classifiers():
    return [PaperBCNN, CNNDetector, SmallResNet]
