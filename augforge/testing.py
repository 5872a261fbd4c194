"""Tiny fake components and conformance checks that plugin authors can reuse.

In a plugin's own tests::

    from augforge import testing
    testing.check_generator("my-gan")        # builds it through the registry and checks it

``augforge.testing`` is itself a plugin module (``augforge.plugins.register(augforge.testing)``)
providing ``fake-blobs`` (dataset), ``fake`` (generator and discriminator) for fast tests.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from torch import nn

from augforge import registry
from augforge.interfaces import Dataset, Discriminator, Generator
from augforge.plugins import hookimpl

# --------------------------------------------------------------------------------------------
# Fakes


class FakeBlobs(Dataset):
    """Coloured discs on a flat background; class i has hue i. Made in memory, deterministic."""

    name = "fake-blobs"
    description = "test fake: coloured discs, no files"

    def __init__(self, *, classes: list[str] | None = None, n_per_class: int = 16, size: int = 40, seed: int = 0):
        self.classes = list(classes or ["nv", "mel"])
        self.n_per_class, self.size, self.seed = n_per_class, size, seed

    def records(self) -> pd.DataFrame:
        rows = [
            {"image_id": f"FAKE_{c}_{i:04d}", "label": c, "group": f"L_{c}_{i // 2}", "source": ""}
            for c in self.classes
            for i in range(self.n_per_class)
        ]
        return pd.DataFrame(rows)

    def load_image(self, record) -> np.ndarray:
        k = self.classes.index(record["label"])
        i = int(record["image_id"].rsplit("_", 1)[1])
        rng = np.random.default_rng((self.seed, k, i))
        yy, xx = np.mgrid[: self.size, : self.size]
        cy, cx = rng.uniform(0.35, 0.65, 2) * self.size
        r = rng.uniform(0.2, 0.3) * self.size
        img = np.full((self.size, self.size, 3), (220, 180, 160), np.uint8)
        colour = np.array([60 + 150 * (k % 2), 40 + 60 * k % 200, 90], np.uint8)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = colour
        return img

    def fingerprint(self) -> str:
        return json.dumps([self.classes, self.n_per_class, self.size, self.seed])


class FakeGenerator(Generator):
    name = "fake"
    description = "test fake: linear + 1 conv"

    def __init__(self, *, image_size: int = 16, num_classes: int = 0, latent_dim: int = 8, width: int = 8):
        super().__init__()
        self.image_size, self.num_classes, self.latent_dim = image_size, num_classes, latent_dim
        self.embed = nn.Embedding(max(num_classes, 1), latent_dim)
        self.fc = nn.Linear(latent_dim, width * (image_size // 4) ** 2)
        self.width = width
        self.out = nn.Sequential(nn.Upsample(scale_factor=4), nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

    def forward(self, z, labels=None):
        if self.conditional:
            z = z * self.embed(labels)
        s = self.image_size // 4
        return self.out(self.fc(z).view(-1, self.width, s, s))

    @classmethod
    def search_space(cls, trial):
        return {"width": trial.suggest_categorical("width", [4, 8])}


class FakeDiscriminator(Discriminator):
    name = "fake"
    description = "test fake: 1 conv + linear"

    def __init__(self, *, image_size: int = 16, num_classes: int = 0, width: int = 8):
        super().__init__()
        self.image_size, self.num_classes = image_size, num_classes
        self.conv = nn.Sequential(nn.Conv2d(3, width, 4, 4), nn.LeakyReLU(0.2), nn.Flatten())
        self.fc = nn.Linear(width * (image_size // 4) ** 2, 1)
        self.embed = nn.Embedding(max(num_classes, 1), width * (image_size // 4) ** 2)

    def forward(self, images, labels=None):
        h = self.conv(images)
        out = self.fc(h).squeeze(1)
        if self.conditional:
            out = out + (self.embed(labels) * h).sum(1)  # projection discriminator term
        return out


@hookimpl
def augforge_register_datasets():
    return [FakeBlobs]


@hookimpl
def augforge_register_generators():
    return [FakeGenerator]


@hookimpl
def augforge_register_discriminators():
    return [FakeDiscriminator]


# --------------------------------------------------------------------------------------------
# Conformance checks (plain functions: call them from any test framework)


def _roundtrip(obj, kind: str, name: str):
    config = json.loads(json.dumps(obj.config))
    assert config == obj.config, f"{kind} {name}: config is not JSON round-trippable: {obj.config}"
    return registry.build(kind, name, **config)


def check_generator(name: str, image_size: int = 32, num_classes: int = 3, latent_dim: int | None = None) -> None:
    """Build generator ``name`` conditional and unconditional and check its contract."""
    for k in (0, num_classes):
        kwargs = {"image_size": image_size, "num_classes": k}
        if latent_dim is not None:
            kwargs["latent_dim"] = latent_dim
        torch.manual_seed(0)
        g = registry.build("generator", name, **kwargs).eval()
        assert g.conditional == (k > 0)
        z, labels = g.example_inputs(batch=3)
        assert z.shape == (3, g.latent_dim), f"generator {name}: example z shape {tuple(z.shape)}"
        assert (labels is None) == (k == 0), f"generator {name}: labels must be given exactly when conditional"
        with torch.no_grad():
            x = g(z, labels)
        assert x.shape == (3, 3, image_size, image_size), f"generator {name}: output {tuple(x.shape)}"
        assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0, f"generator {name}: outside [-1, 1]"
        g2 = _roundtrip(g, "generator", name)
        g2.load_state_dict(g.state_dict())
        with torch.no_grad():
            assert torch.allclose(g2.eval()(z, labels), x, atol=1e-6), f"generator {name}: rebuilt model differs"
        _check_search_space(type(g), "generator", name, kwargs)


def check_discriminator(name: str, image_size: int = 32, num_classes: int = 3) -> None:
    for k in (0, num_classes):
        d = registry.build("discriminator", name, image_size=image_size, num_classes=k)
        x = torch.rand(4, 3, image_size, image_size) * 2 - 1
        labels = torch.arange(4) % k if k else None
        out = d(x, labels)
        assert out.shape == (4,), f"discriminator {name}: logits shape {tuple(out.shape)}, want (4,)"
        out.sum().backward()  # must be differentiable w.r.t. its parameters
        _roundtrip(d, "discriminator", name)
        _check_search_space(type(d), "discriminator", name, {"image_size": image_size, "num_classes": k})


def _check_search_space(cls, kind: str, name: str, base_kwargs: dict) -> None:
    import optuna

    trial = optuna.create_study().ask()
    space = cls.search_space(trial)
    registry.bind(kind, name, **{**base_kwargs, **space})


def check_dataset(name: str, **kwargs) -> None:
    """Build dataset ``name`` and check its records and first image."""
    ds = registry.build("dataset", name, **kwargs)
    rec = ds.records()
    for col in ("image_id", "label", "group", "source"):
        assert col in rec.columns, f"dataset {name}: records() lacks column {col!r}"
    assert rec["image_id"].is_unique, f"dataset {name}: duplicate image_id"
    assert len(rec) > 0, f"dataset {name}: no records"
    img = ds.load_image(rec.iloc[0])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, f"dataset {name}: image {img.dtype}{img.shape}"
    assert ds.fingerprint() == registry.build("dataset", name, **kwargs).fingerprint(), f"dataset {name}: fingerprint unstable"
