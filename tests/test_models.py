"""Model families: paper A's parameter counts, the conformance suite over every registered
generator/discriminator, family-specific properties, ONNX export parity, and the presets."""

import numpy as np
import pytest
import torch
from torch import nn

from augforge import registry, testing
from augforge.config import resolve
from augforge.presets import PRESETS

# --------------------------------------------------------------------------------------------
# Paper A, Tables 1 and 2 (Keras model.summary() at 128x128, latent 100): params per layer.
#
# Keras counts 4 numbers per BatchNormalization channel: gamma and beta (trainable) plus the
# moving mean and variance (non-trainable, but listed in the table and in "Total params").
# PyTorch holds gamma/beta as parameters and the moving statistics as buffers
# (running_mean, running_var; num_batches_tracked is PyTorch bookkeeping, not counted).
# So a layer's Keras count = its PyTorch parameters + its BN running-statistic buffers, and
# Keras "Trainable params" = PyTorch parameters.

PAPER_A_G = [  # (PyTorch module type, Keras params) in order
    ("Linear", 413_696),  # dense: 100 * 4096 + 4096
    ("Conv2d", 590_080),
    ("BatchNorm2d", 1_024),
    ("Conv2d", 590_080),
    ("BatchNorm2d", 1_024),
    ("Conv2d", 295_040),
    ("BatchNorm2d", 512),
    ("Conv2d", 147_584),
    ("BatchNorm2d", 512),
    ("Conv2d", 3_459),
]
PAPER_A_D = [
    ("Conv2d", 896),
    ("Conv2d", 18_496),
    ("BatchNorm2d", 256),
    ("Conv2d", 73_856),
    ("BatchNorm2d", 512),
    ("Conv2d", 295_168),
    ("BatchNorm2d", 1_024),
    ("Conv2d", 1_180_160),
    ("BatchNorm2d", 2_048),
    ("Linear", 147_969),  # dense_1: 17 * 17 * 512 + 1
]


def keras_layer_counts(model: nn.Module) -> list[tuple[str, int]]:
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
            n = sum(p.numel() for p in m.parameters(recurse=False))
            if isinstance(m, nn.BatchNorm2d):
                n += m.running_mean.numel() + m.running_var.numel()
            out.append((type(m).__name__, n))
    return out


@pytest.mark.parametrize("kind,table", [("generator", PAPER_A_G), ("discriminator", PAPER_A_D)])
def test_dcgan_matches_paper_a_parameter_counts(kind, table):
    kwargs = {"image_size": 128, "num_classes": 0}
    if kind == "generator":
        kwargs["latent_dim"] = 100
    model = registry.build(kind, "dcgan", **kwargs)
    assert keras_layer_counts(model) == table, "per-layer counts differ from paper A's table"
    keras_total = sum(n for _, n in table)
    keras_non_trainable = sum(n // 2 for t, n in table if t == "BatchNorm2d")  # moving mean + var
    trainable = sum(p.numel() for p in model.parameters())
    assert trainable == keras_total - keras_non_trainable
    buffers = sum(m.running_mean.numel() * 2 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert trainable + buffers == keras_total
    # The totals as the paper's summaries would print them:
    assert (kind, keras_total) in {("generator", 2_043_011), ("discriminator", 1_720_385)}


def test_dcgan_shapes_follow_paper_a_table_2():
    """Keras 'same' padding + ZeroPadding2D((0,1),(0,1)): 128 -> 64 -> 32 -> 33 -> 17 -> 17 -> 17."""
    g = registry.build("generator", "dcgan", image_size=128, latent_dim=100).eval()
    d = registry.build("discriminator", "dcgan", image_size=128).eval()
    seen = {"g": [], "d": []}

    def record(key):
        return lambda module, inputs, out: seen[key].append((out.shape[1], out.shape[2]))

    hooks = [m.register_forward_hook(record("g")) for m in g.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(record("d")) for m in d.modules() if isinstance(m, nn.Conv2d) or m is d.features.zeropad]
    with torch.no_grad():
        d(g(torch.randn(1, 100)))
    for h in hooks:
        h.remove()
    # (channels, side) after each layer of Tables 1 and 2
    assert seen["g"] == [(256, 8), (256, 16), (128, 32), (128, 128), (3, 128)]
    assert seen["d"] == [(32, 64), (64, 32), (64, 33), (128, 17), (256, 17), (512, 17)]
    assert d.dense.in_features == 147_968  # Table 2's flatten


@pytest.mark.parametrize("size,final", [(32, 5), (64, 9), (128, 17)])
def test_dcgan_other_sizes(size, final):
    g = registry.build("generator", "dcgan", image_size=size)
    d = registry.build("discriminator", "dcgan", image_size=size)
    assert d.final_size == final
    with torch.no_grad():
        x = g.eval()(torch.randn(2, 100))
        assert x.shape == (2, 3, size, size) and d.eval()(x).shape == (2,)


# --------------------------------------------------------------------------------------------
# Conformance: every registered generator and discriminator, whoever registered it.


@pytest.mark.parametrize("name", registry.names("generator"))
def test_generator_conformance(name):
    testing.check_generator(name, image_size=32)


@pytest.mark.parametrize("name", registry.names("discriminator"))
def test_discriminator_conformance(name):
    testing.check_discriminator(name, image_size=32)


@pytest.mark.parametrize("family", ["dcgan", "cdcgan", "sngan"])
@pytest.mark.parametrize("size", [64, pytest.param(128, marks=pytest.mark.slow)])
def test_families_shapes_at_larger_sizes(family, size):
    k = 0 if family == "dcgan" else 3
    g = registry.build("generator", family, image_size=size, num_classes=k).eval()
    d = registry.build("discriminator", family, image_size=size, num_classes=k).eval()
    z, labels = g.example_inputs(batch=2)
    with torch.no_grad():
        x = g(z, labels)
        assert x.shape == (2, 3, size, size)
        assert d(x, labels).shape == (2,)


def test_unsupported_size_fails_listing_valid_ones():
    from augforge.errors import ConfigError

    for family in ("dcgan", "cdcgan", "sngan"):
        with pytest.raises(ConfigError, match="valid: 32, 64, 128"):
            registry.build("generator", family, image_size=48)


# --------------------------------------------------------------------------------------------
# Family specifics


def _spectral_layers(model):
    from torch.nn.utils.parametrize import is_parametrized

    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) and is_parametrized(m, "weight")]


def test_cdcgan_bn_momentum_and_spectral_norm():
    g = registry.build("generator", "cdcgan", image_size=64, num_classes=7)
    d = registry.build("discriminator", "cdcgan", image_size=64, num_classes=7)
    bns = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == pytest.approx(0.1) for m in bns)  # Keras momentum 0.9
    assert all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in g.modules() if isinstance(m, (nn.LeakyReLU, nn.ReLU)))
    assert any(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert convs and _spectral_layers(d) == convs  # every D conv is spectrally normalised
    for m in convs:
        assert m.parametrizations.weight[0].n_power_iterations == 1
    assert d.net[0].in_channels == 3 + 7  # label maps concatenated as channels


def test_sngan_projection_head_uses_labels():
    torch.manual_seed(0)
    d = registry.build("discriminator", "sngan", image_size=32, num_classes=4).eval()
    x = torch.rand(1, 3, 32, 32).repeat(4, 1, 1, 1) * 2 - 1
    with torch.no_grad():
        out = d(x, torch.arange(4))
    assert out.shape == (4,) and len(set(out.tolist())) == 4, "same image, different labels must score differently"
    assert all(isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) for m in _spectral_layers(d))
    assert len(_spectral_layers(d)) == sum(isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)) for m in d.modules())


def test_sngan_generator_conditional_bn_uses_labels():
    torch.manual_seed(0)
    g = registry.build("generator", "sngan", image_size=32, num_classes=3)
    for m in g.modules():  # move the per-class gains away from their identity init
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 1.0, 0.5)
    z = torch.randn(1, g.latent_dim).repeat(3, 1)
    with torch.no_grad():
        x = g.eval()(z, torch.arange(3))
    assert not torch.allclose(x[0], x[1]) and not torch.allclose(x[1], x[2])


# --------------------------------------------------------------------------------------------
# ONNX export: one quick test per family (generator and discriminator, batch 1, eval mode).


def _onnx_roundtrip(model, inputs, names, tmp_path):
    import onnxruntime as ort

    model.eval()
    path = tmp_path / "model.onnx"
    # dynamo=True: the TorchScript exporter has no ONNX symbol for aten::vdot, which
    # torch.nn.utils.parametrizations.spectral_norm uses; the dynamo exporter decomposes it.
    torch.onnx.export(model, tuple(inputs), str(path), dynamo=True, input_names=names, verbose=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(names, inputs) if t is not None}
    got = sess.run(None, feed)[0]
    with torch.no_grad():
        want = model(*inputs).numpy()
    assert got.shape == want.shape
    return float(np.abs(got - want).max())


@pytest.mark.slow  # the dynamo exporter takes ~5 s per model
@pytest.mark.parametrize("family,k", [("dcgan", 0), ("cdcgan", 3), ("sngan", 3)])
def test_onnx_export_matches_pytorch(family, k, tmp_path):
    torch.manual_seed(0)
    g = registry.build("generator", family, image_size=32, num_classes=k)
    d = registry.build("discriminator", family, image_size=32, num_classes=k)
    with torch.no_grad():  # a few training forwards so BN statistics and SN vectors are not at init
        for _ in range(2):
            z, labels = g.example_inputs(batch=4)
            d(g(z, labels), labels)
    z, labels = g.example_inputs(batch=1)
    g_inputs, names = ([z, labels], ["z", "labels"]) if k else ([z], ["z"])
    assert _onnx_roundtrip(g, g_inputs, names, tmp_path) <= 1e-4
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    d_inputs, names = ([x, labels], ["images", "labels"]) if k else ([x], ["images"])
    assert _onnx_roundtrip(d, d_inputs, names, tmp_path) <= 1e-4


# --------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_resolves_and_builds(preset):
    cfg = resolve(preset)
    assert cfg.preset == preset
    for kind, name, extra in (
        ("generator", cfg.model.generator, {"latent_dim": cfg.model.latent_dim, **cfg.generator}),
        ("discriminator", cfg.discriminator_name, dict(cfg.discriminator)),
    ):
        registry.bind(kind, name, image_size=cfg.data.image_size, num_classes=3 if cfg.model.conditional else 0, **extra)
    from augforge.training.diffaug import parse_policy
    from augforge.training.losses import get_loss

    parse_policy(cfg.train.diffaug)
    get_loss(cfg.train.loss)


def test_presets_reproduce_the_papers():
    a, b, m = resolve("paper-a"), resolve("paper-b"), resolve("modern")
    assert (a.model.generator, a.model.conditional, a.model.latent_dim, a.data.image_size) == ("dcgan", False, 100, 128)
    assert (a.train.loss, a.train.lr_g, a.train.lr_d, a.train.beta1, a.train.beta2, a.train.eps, a.train.steps) == (
        "bce", 1.5e-4, 1.5e-4, 0.5, 0.999, 1e-7, 2000)
    assert (b.model.generator, b.model.conditional, b.model.latent_dim) == ("cdcgan", True, 100)
    assert (b.train.loss, b.train.gp_weight, b.train.lr_g, b.train.lr_d, b.train.beta1) == ("bce", 10.0, 2e-4, 2e-4, 0.5)
    assert (m.model.generator, m.train.loss, m.train.ema_decay, m.data.balance, m.data.image_size) == ("sngan", "hinge", 0.999, True, 64)
    assert m.train.lr_d > m.train.lr_g and m.train.diffaug == "color,translation,cutout"
