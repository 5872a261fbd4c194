"""Silent-wrong models and configs are refused before training, and export never clamps."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from augforge import plugins
from augforge.errors import ConfigError
from augforge.model_checks import check_models
from augforge.plugins import hookimpl
from augforge.testing import FakeDiscriminator, FakeGenerator


class NoTanh(FakeGenerator):
    """The fake without its final tanh: unbounded output."""

    name = "no-tanh"

    def __init__(self, *, image_size: int = 16, num_classes: int = 0, latent_dim: int = 8, width: int = 8):
        super().__init__(image_size=image_size, num_classes=num_classes, latent_dim=latent_dim, width=width)
        self.out = self.out[:-1]


class HalfSize(FakeGenerator):
    """Always makes images half the size it was asked for."""

    name = "half-size"

    def forward(self, z, labels=None):
        return nn.functional.avg_pool2d(super().forward(z, labels), 2)


class Sized(FakeGenerator):
    name = "sized"
    image_sizes = (16, 32)


class FlatD(FakeDiscriminator):
    """Logits shaped [B, 1] instead of [B]."""

    name = "flat-d"

    def forward(self, images, labels=None):
        return super().forward(images, labels)[:, None]


class Bad:
    @hookimpl
    def augforge_register_generators(self):
        return [NoTanh, HalfSize, Sized]

    @hookimpl
    def augforge_register_discriminators(self):
        return [FlatD, type("SizedD", (FakeDiscriminator,), {"name": "sized"})]


@pytest.fixture
def bad(fakes):
    plugins.register(Bad(), name="bad-models")
    yield
    plugins.reset()


def build(gen: str, disc: str = "fake", image_size: int = 16, num_classes: int = 0):
    from augforge import registry

    G = registry.build("generator", gen, image_size=image_size, num_classes=num_classes, latent_dim=8)
    D = registry.build("discriminator", disc, image_size=image_size, num_classes=num_classes)
    return G, D


def check(G, D, image_size=16, num_classes=0):
    check_models(G, D, image_size=image_size, num_classes=num_classes, latent_dim=8, device="cpu")


def test_good_models_pass_and_are_left_as_they_were(bad):
    G, D = build("fake", num_classes=2)
    G.train()
    before = {k: v.clone() for k, v in {**G.state_dict(), **D.state_dict()}.items()}
    rng = torch.get_rng_state()
    check(G, D, num_classes=2)
    assert G.training and D.training  # mode restored
    assert torch.equal(torch.get_rng_state(), rng)  # the training stream is untouched
    after = {**G.state_dict(), **D.state_dict()}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_generator_without_tanh_is_refused_naming_plugin_and_fix(bad):
    G, D = build("no-tanh")
    with pytest.raises(ConfigError, match=r"generator 'no-tanh' \(plugin 'bad-models'.*returned values in \[.*\].*"
                                          r"expected \[-1, 1\] for any z; end forward\(\) with torch.tanh"):
        check(G, D)


def test_generator_of_the_wrong_size_is_refused(bad):
    G, D = build("half-size")
    with pytest.raises(ConfigError, match=r"generator 'half-size' \(plugin 'bad-models'.*shape \(2, 3, 8, 8\) for "
                                          r"image_size=16; expected \(2, 3, 16, 16\)"):
        check(G, D)


def test_discriminator_logits_shape_is_checked(bad):
    G, D = build("fake", "flat-d")
    with pytest.raises(ConfigError, match=r"discriminator 'flat-d' \(plugin 'bad-models'.*shape \(2, 1\); expected \(2,\)"):
        check(G, D)


def test_declared_image_sizes_are_enforced(bad):
    G, D = build("sized", "sized", image_size=16)
    with pytest.raises(ConfigError, match=r"generator 'sized'.*image_sizes=\(16, 32\), but the run uses "
                                          r"data.image_size=48; use --image-size 16 or 32"):
        check(G, D, image_size=48)


def test_training_refuses_a_bad_generator_before_step_1(bad, tmp_path):
    from augforge.config import resolve
    from augforge.tracking import NullTracker
    from augforge.training import train

    cfg = resolve("", {"data.name": "fake-blobs", "model.generator": "no-tanh", "model.discriminator": "fake",
                       "data.image_size": 16, "model.latent_dim": 8, "train.batch_size": 8, "train.steps": 2,
                       "train.out_dir": str(tmp_path / "runs")})
    with pytest.raises(ConfigError, match="end forward\\(\\) with torch.tanh"):
        train(cfg, tracker=NullTracker())
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.pt"))


# ---- export ----------------------------------------------------------------------------------


def test_export_refuses_unbounded_output_instead_of_clamping(bad, tmp_path):
    from augforge.export import ExportError, export_onnx

    G, _ = build("no-tanh")
    with pytest.raises(ExportError, match=r"generator 'no-tanh' \(plugin 'bad-models'.*the file promises \[-1, 1\] "
                                          r"and export does not clamp; end the generator's forward\(\) with torch.tanh"):
        export_onnx(G, tmp_path / "g.onnx", {"image_size": 16})
    assert not (tmp_path / "g.onnx").exists()


def test_export_refuses_output_that_disagrees_with_the_metadata_size(bad, tmp_path):
    from augforge.export import ExportError, export_onnx

    G, _ = build("half-size")
    with pytest.raises(ExportError, match=r"generator 'half-size'.*shape \(16, 3, 8, 8\), but the metadata says "
                                          r"image_size=16 \(expected \(16, 3, 16, 16\)\)"):
        export_onnx(G, tmp_path / "g.onnx", {"image_size": 16})
    assert not (tmp_path / "g.onnx").exists()


# ---- config validation before any data is decoded ----------------------------------------------


def invoke_train(*args):
    from augforge.cli import cli

    return CliRunner().invoke(cli, ["train", *args])


def test_dry_run_rejects_an_unknown_plugin_key():
    result = invoke_train("--preset", "smoke", "--set", "generator.bogus=1", "--dry-run")
    assert isinstance(result.exception, ConfigError)
    assert "generator 'sngan' (plugin 'sngan'" in str(result.exception)
    assert "has no option(s) bogus; valid: channels, upsample (image_size, num_classes, latent_dim filled in by the core)" in str(result.exception)


@pytest.mark.parametrize("key,fix", [("latent_dim", "model.latent_dim"), ("image_size", "data.image_size"),
                                     ("num_classes", "model.conditional")])
def test_injected_keys_given_with_set_are_explained(key, fix):
    result = invoke_train("--preset", "smoke", "--set", f"generator.{key}=32", "--dry-run")
    assert isinstance(result.exception, ConfigError), result.exception
    assert f"--set generator.{key}: {key} is not an option you set per generator" in str(result.exception)
    assert f"from {fix}" in str(result.exception)


def test_preset_keys_for_another_model_are_blamed_on_the_preset(bad):
    result = invoke_train("--preset", "smoke", "--model", "fake", "--dry-run")
    assert isinstance(result.exception, ConfigError), result.exception
    message = str(result.exception)
    assert "generator 'fake'" in message and "has no option(s) channels" in message
    assert "generator.channels came from preset 'smoke', which is written for sngan" in message
    assert "valid: width" in message


def test_unknown_model_fails_before_any_data_is_decoded(monkeypatch):
    from augforge import data

    def decode(*a, **k):
        raise AssertionError("data was decoded before the model name was checked")

    monkeypatch.setattr(data, "load_splits", decode, raising=False)
    monkeypatch.setattr(data, "load_arrays", decode, raising=False)
    result = invoke_train("--preset", "smoke", "--model", "no-such-gan", "--no-track")
    assert isinstance(result.exception, ConfigError), result.exception
    assert "unknown generator 'no-such-gan'; available:" in str(result.exception)


def test_image_size_outside_declared_sizes_fails_in_dry_run(bad):
    result = invoke_train("--dataset", "fake-blobs", "--model", "sized", "--image-size", "48", "--dry-run")
    assert isinstance(result.exception, ConfigError), result.exception
    assert "supports image sizes 16, 32 px, not data.image_size=48; use --image-size 16 or 32" in str(result.exception)
