"""The auxiliary classifier (``train.ac_weight``, sngan's ``discriminator.class_head``): one D
pass gives both logits, the loop trains the head on real labels and asks G for fakes it
classifies as theirs, refuses setups it cannot serve, and resumes bitwise."""

from __future__ import annotations

import pytest
import torch

from augforge.checkpoint import load_checkpoint
from augforge.errors import ConfigError
from augforge.tracking import NullTracker
from augforge.training.state import check_train_config

from _training import Keep, assert_same_weights, fake_cfg, run

SNGAN = dict(model__generator="sngan", data__image_size=32, model__latent_dim=16, generator__channels=8,
             discriminator__channels=8, discriminator__class_head=True, train__ac_weight=0.5,
             train__diffaug="translation", train__steps=6, train__checkpoint_every=3)


def test_sngan_class_head_shares_the_pass_with_the_projection_logits():
    from augforge_plugins.sngan import SNGANDiscriminator

    torch.manual_seed(0)
    D = SNGANDiscriminator(image_size=32, num_classes=5, channels=8, class_head=True).eval()
    x, y = torch.rand(4, 3, 32, 32) * 2 - 1, torch.tensor([0, 1, 4, 2])
    logits, classes = D.forward_with_classes(x, y)
    assert classes.shape == (4, 5)
    assert torch.allclose(logits, D(x, y))  # the same score as the plain forward
    classes.sum().backward()
    assert D.classifier.parametrizations.weight.original.grad.abs().sum() > 0
    assert D.embed.parametrizations.weight.original.grad is None  # the head does not touch the projection
    with pytest.raises(ConfigError, match="--set discriminator.class_head=true"):
        SNGANDiscriminator(image_size=32, num_classes=5, channels=8).forward_with_classes(x, y)
    with pytest.raises(ConfigError, match="needs a conditional model"):
        SNGANDiscriminator(image_size=32, num_classes=0, class_head=True)


def test_ac_weight_refuses_a_discriminator_without_a_class_head(tmp_path, fakes):
    with pytest.raises(ConfigError, match="discriminator 'fake' has no forward_with_classes"):
        run(fake_cfg(tmp_path, train__ac_weight=1.0))
    with pytest.raises(ConfigError, match="needs a conditional model"):
        run(fake_cfg(tmp_path, model__conditional=False, train__ac_weight=1.0))
    with pytest.raises(ConfigError, match="train.ac_weight=-0.1 must be >= 0"):
        check_train_config(fake_cfg(tmp_path, train__ac_weight=-0.1).train)


def test_ac_training_trains_the_head_logs_both_terms_and_resumes_bitwise(tmp_path, fakes):
    keep, head = Keep(), "classifier.parametrizations.weight.original"
    heads = {}
    for weight in (0.5, 0.0):  # ac_weight=0: the head gets no gradient and Adam skips it
        for steps in (3, 6):
            out = run(fake_cfg(tmp_path / f"{weight}-{steps}", **{**SNGAN, "train__ac_weight": weight, "train__steps": steps}),
                      tracker=keep if (weight, steps) == (0.5, 6) else NullTracker())
            heads[weight, steps] = load_checkpoint(out.checkpoint)["discriminator"]["state"][head]
            if (weight, steps) == (0.5, 6):
                full = out
    assert not torch.equal(heads[0.5, 3], heads[0.5, 6]) and torch.equal(heads[0.0, 3], heads[0.0, 6])
    # cross-entropies of the head on real (D) and fake (G) batches, both logged
    assert keep.logged["train/ac_d"] > 0 and keep.logged["train/ac_g"] > 0
    assert load_checkpoint(full.checkpoint)["config"]["train"]["ac_weight"] == 0.5  # the checkpoint carries it
    part = run(fake_cfg(tmp_path, **{**SNGAN, "train__steps": 3}))
    resumed = run(fake_cfg(tmp_path, **SNGAN), resume=part.run_dir)
    assert_same_weights(load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint))


def test_unconditional_modern_cpu_says_how_to_turn_the_head_off(tmp_path, fakes):
    over = dict(model__generator="sngan", data__image_size=32, model__latent_dim=16, generator__channels=8,
                discriminator__channels=8, model__conditional=False)
    with pytest.raises(ConfigError, match="--set discriminator.class_head=false --set train.ac_weight=0"):
        run(fake_cfg(tmp_path, "modern-cpu", **over))
    ok = {**over, "discriminator__class_head": False, "train__ac_weight": 0.0, "train__steps": 2, "train__eval_every": 0}
    assert run(fake_cfg(tmp_path, "modern-cpu", **ok)).checkpoint.exists()
