"""Learning-per-image and speed options of the loop: LeCam, top-k, bCR, bf16 on CPU, the wall
budget; the blockiness test and sngan's bilinear upsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from augforge.checkpoint import load_checkpoint
from augforge.errors import ConfigError
from augforge.training.losses import consistency_penalty, lecam_penalty, topk_count, topk_logits
from augforge.tracking import NullTracker

from _training import Keep, assert_same_weights, fake_cfg, run

class TagTracker(NullTracker):
    def __init__(self):
        super().__init__()
        self.tags = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def test_lecam_penalty_matches_the_paper_formula():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 1.0])
    ema_real, ema_fake = 0.8, -0.4
    # mean(relu(D(x) - ema_fake)^2) + mean(relu(ema_real - D(G(z)))^2), by hand:
    first = ((2.0 + 0.4) ** 2 + (0.5 + 0.4) ** 2 + 0.0) / 3
    second = ((0.8 + 3.0) ** 2 + 0.0) / 2
    assert lecam_penalty(real, fake, ema_real, ema_fake).item() == pytest.approx(first + second)
    # no penalty once D's real logits sit below the fake average and its fake logits above the real one
    assert lecam_penalty(torch.tensor([-1.0]), torch.tensor([1.0]), 0.0, 0.0).item() == 0.0


def test_topk_keeps_the_k_fakes_d_rates_best_and_decays_to_its_floor():
    logits = torch.tensor([0.1, 3.0, -2.0, 1.5, 0.7, -0.3])
    assert sorted(topk_logits(logits, 2).tolist()) == [1.5, 3.0]
    assert torch.equal(topk_logits(logits, 6), logits)
    assert topk_count(64, 0, 0.99, 0.5) == 64  # all fakes at the start
    assert topk_count(64, 10, 0.99, 0.5) == math.ceil(64 * 0.99**10)
    assert topk_count(64, 500, 0.99, 0.5) == 32  # the floor
    assert topk_count(64, 500, 0.99, 1.0) == 64  # min_fraction 1: off
    with pytest.raises(ValueError, match="must be in"):
        topk_count(64, 0, 0.99, 0.0)


def test_topk_gradient_reaches_only_the_selected_fakes():
    logits = torch.tensor([0.1, 3.0, -2.0, 1.5], requires_grad=True)
    (-topk_logits(logits, 2).mean()).backward()
    assert logits.grad.tolist() == [0.0, -0.5, 0.0, -0.5]


def test_consistency_penalty_is_the_mean_squared_difference():
    assert consistency_penalty(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.0])).item() == pytest.approx(2.0)


def test_new_levers_resume_bitwise_exact_with_bf16_on_cpu(tmp_path, fakes):
    over = dict(train__ema_decay=0.9, train__diffaug="color,translation,cutout", train__lecam_weight=0.3,
                train__topk_min=0.5, train__topk_decay=0.5, train__cr_weight=1.0, train__amp="bf16",
                train__channels_last=True, train__device="cpu")
    full = run(fake_cfg(tmp_path, **over))
    part = run(fake_cfg(tmp_path, train__steps=5, **over))
    resumed = run(fake_cfg(tmp_path, **over), resume=part.run_dir)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in ("generator", "discriminator", "g_ema", "opt_g", "opt_d"):
        for (name, x), y in zip(a[key]["state"].items() if "state" in a[key] else a[key].items(),
                                (b[key]["state"] if "state" in b[key] else b[key]).values()):
            if isinstance(x, torch.Tensor):
                assert torch.equal(x, y), f"{key}/{name}"
    assert a["extra"]["lecam"] == b["extra"]["lecam"] and a["extra"]["lecam"]["updates"] == 12
    assert a["extra"]["history"] == b["extra"]["history"]


def test_bf16_on_cpu_really_autocasts(tmp_path, fakes, monkeypatch):
    seen = []
    orig = torch.nn.functional.conv2d

    def spy(x, *a, **k):
        out = orig(x, *a, **k)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.functional, "conv2d", spy)
    result = run(fake_cfg(tmp_path, train__amp="bf16", train__device="cpu", train__steps=2))
    assert result.status == "FINISHED"
    assert torch.bfloat16 in seen  # the fake models' conv layers ran in bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        run(fake_cfg(tmp_path, train__amp="fp16", train__device="cpu"))


def test_wall_budget_stops_cleanly_keeps_best_and_says_why(tmp_path, fakes, monkeypatch):
    import augforge.evaluation
    import augforge.training.budget

    now = {"s": 0.0}  # a clock that moves only when the evaluator says so: the test cannot race the machine
    monkeypatch.setattr(augforge.training.budget, "wall_clock", lambda: now["s"])
    values = iter([5.0, 1.0, 7.0, 8.0])

    def fake_evaluator(cfg, real, device):
        def evaluate(generator):
            value = next(values)
            if value == 1.0:
                now["s"] += 120.0  # the second evaluation takes two minutes: the 1-minute budget is spent
            return {"kid": value}

        evaluate.direction = "minimize"
        return evaluate

    monkeypatch.setattr(augforge.evaluation, "make_training_evaluator", fake_evaluator)
    reported = []
    tracker = TagTracker()
    result = run(fake_cfg(tmp_path, train__eval_every=2, train__max_minutes=1, train__steps=10_000,
                          train__checkpoint_every=1000), tracker=tracker, report=lambda s, m: reported.append((s, m["kid"])))
    # evaluated at 2 and 4; the budget is seen at step 5, which is evaluated too, checkpointed, and the end
    assert reported == [(2, 5.0), (4, 1.0), (5, 7.0)]
    assert result.status == "FINISHED" and result.step == 5
    assert tracker.tags["stop_reason"] == "budget"
    assert tracker.tags["stop_detail"] == "wall budget of 1 min reached at step 5 after 2.0 min of training; best.pt is step 4 (kid 1)"
    assert load_checkpoint(result.best_checkpoint)["step"] == 4
    last = load_checkpoint(result.checkpoint)
    assert last["step"] == 5 and last["extra"]["stop_reason"] == "budget" and last["extra"]["train_seconds"] == 120.0
    assert result.metrics["train_minutes"] == 2.0


def test_progress_eta_ends_at_the_budget_on_its_own_clock(monkeypatch):
    import types

    import augforge.training.budget
    import augforge.training.progress
    from augforge.training.budget import Budget
    from augforge.training.progress import Progress

    clock = {"budget": 0.0, "wall": 0.0}
    monkeypatch.setattr(augforge.training.budget, "wall_clock", lambda: clock["budget"])
    monkeypatch.setattr(augforge.training.progress.time, "perf_counter", lambda: clock["wall"])
    t = types.SimpleNamespace(max_minutes=10.0, budget_clock="wall", eval_every_minutes=0.0)
    budget = Budget(t, before=120.0)  # a resumed run: 2 of its 10 minutes were spent before
    progress = Progress(10**7, 0, enabled=True, images_per_step=32, budget=budget)
    by_steps, no_budget = Progress(2000, 0, True, 32, budget), Progress(2000, 0, True, 32)
    budget.begin()
    clock["budget"], clock["wall"] = 60.0, 120.0  # the budget's clock runs at half the wall's (a shared core)
    # 7 budget minutes are left, 14 wall minutes at the measured ratio; 10^7 steps would take days
    assert progress.eta(1000, 1000 / 120.0, 120.0) == pytest.approx(14 * 60.0)
    assert by_steps.eta(1000, 10.0, 120.0) == pytest.approx(100.0)  # the steps end first
    assert no_budget.eta(1000, 10.0, 120.0) == pytest.approx(100.0)  # no budget: steps only


def test_option_errors_name_the_key(tmp_path, fakes):
    with pytest.raises(ConfigError, match="train.cr_weight > 0 .* set train.diffaug"):
        run(fake_cfg(tmp_path, train__cr_weight=1.0))
    with pytest.raises(ConfigError, match=r"train.topk_min=0.0"):
        run(fake_cfg(tmp_path, train__topk_min=0.0))
    with pytest.raises(ConfigError, match="train.budget_clock='gpu': expected wall or cpu"):
        run(fake_cfg(tmp_path, train__budget_clock="gpu"))


def test_cpu_budget_clock_counts_process_time(tmp_path, fakes):
    tracker = TagTracker()
    result = run(fake_cfg(tmp_path, train__budget_clock="cpu", train__max_minutes=1e-6, train__steps=10_000), tracker=tracker)
    assert result.step < 10_000 and tracker.tags["stop_reason"] == "budget"
    assert tracker.tags["stop_detail"].startswith("cpu budget of 1e-06 min reached")


def test_unknown_extra_evaluator_lists_the_valid_ones(tmp_path, fakes):
    with pytest.raises(ConfigError, match="train.eval_extra: unknown evaluator 'nope'; evaluators: .*blockiness"):
        run(fake_cfg(tmp_path, train__eval_every=4, train__eval_extra="nope"))


def test_blockiness_finds_block_copies_and_not_smooth_images():
    from augforge_plugins.artefacts import block_step_ratio

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (16, 8, 8, 3)).astype(np.uint8)
    blocky = small.repeat(8, axis=1).repeat(8, axis=2)  # nearest x8: constant 8x8 blocks
    assert block_step_ratio(blocky, 8) > 50  # steps only at the borders
    noise = rng.integers(0, 256, (16, 64, 64, 3)).astype(np.uint8)
    assert block_step_ratio(noise, 8) == pytest.approx(1.0, abs=0.05)
    shifted = np.roll(blocky, 4, axis=2)  # the same blocks off the grid: the 8-px test no longer fires
    assert block_step_ratio(shifted, 8) < 0.1
    with pytest.raises(ValueError, match="at least 32 px wide"):
        block_step_ratio(noise[:, :, :20], 16)


def test_blockiness_evaluator_reports_nan_for_blocks_wider_than_half_the_image():
    from augforge.interfaces import ImageSet
    from augforge_plugins.artefacts import Blockiness

    rng = np.random.default_rng(1)
    small = ImageSet(rng.integers(0, 256, (8, 16, 16, 3)).astype(np.uint8), np.zeros(8, int), ["nv"])
    m = Blockiness().evaluate(small, small, small, None).metrics
    assert np.isnan(m["blockiness_16"]) and "blockiness_16_real_baseline" not in m
    assert np.isfinite(m["blockiness_8"]) and np.isfinite(m["blockiness_4"])


def test_sngan_bilinear_upsampling_builds_exports_and_rejects_unknown_modes():
    from augforge_plugins.artefacts import block_step_ratio
    from augforge_plugins.sngan import SNGANGenerator

    torch.manual_seed(0)
    nearest = SNGANGenerator(image_size=32, num_classes=3, channels=8).eval()
    torch.manual_seed(0)
    bilinear = SNGANGenerator(image_size=32, num_classes=3, channels=8, upsample="bilinear").eval()
    z, y = torch.randn(64, 128), torch.arange(64) % 3
    with torch.no_grad():
        a, b = nearest(z, y), bilinear(z, y)
    assert b.shape == (64, 3, 32, 32) and not torch.equal(a, b)
    to_u8 = lambda x: ((x.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)  # noqa: E731
    # at initialisation nearest upsampling already tiles the image with 8-px blocks
    assert block_step_ratio(to_u8(a), 8) > 1.3 > block_step_ratio(to_u8(b), 8)
    with pytest.raises(ConfigError, match="valid: nearest, bilinear"):
        SNGANGenerator(image_size=32, upsample="bicubic")


def test_sngan_decoder_reconstructs_from_d_features_and_is_required():
    from augforge_plugins.sngan import SNGANDiscriminator

    torch.manual_seed(0)
    D = SNGANDiscriminator(image_size=64, num_classes=3, channels=8, decoder=True)
    x = torch.rand(4, 3, 64, 64) * 2 - 1
    loss = D.self_supervised_loss(x, torch.arange(4) % 3)
    assert loss.ndim == 0 and loss.item() > 0
    loss.backward()
    assert D.decoder[-2].parametrizations.weight.original.grad.abs().sum() > 0  # the decoder learns
    assert D.blocks[0].conv1.parametrizations.weight.original.grad.abs().sum() > 0  # and so do D's early blocks
    assert D.blocks[-1].conv1.parametrizations.weight.original.grad is None  # blocks after the 8x8 map are not used
    with pytest.raises(ConfigError, match="--set discriminator.decoder=true"):
        SNGANDiscriminator(image_size=64).self_supervised_loss(x)


def test_ssl_weight_needs_a_discriminator_with_a_task(tmp_path, fakes):
    with pytest.raises(ConfigError, match="discriminator 'fake' has no self_supervised_loss"):
        run(fake_cfg(tmp_path, train__ssl_weight=1.0))


def test_ssl_training_runs_logs_and_resumes_bitwise(tmp_path, fakes):
    over = dict(model__generator="sngan", data__image_size=32, model__latent_dim=16, generator__channels=8,
                discriminator__channels=8, discriminator__decoder=True, train__ssl_weight=1.0,
                train__diffaug="translation", train__steps=6, train__checkpoint_every=3)
    keep = Keep()
    full = run(fake_cfg(tmp_path, **over), tracker=keep)
    assert "train/ssl" in keep.logged and keep.logged["train/ssl"] > 0
    part = run(fake_cfg(tmp_path, **{**over, "train__steps": 3}))
    resumed = run(fake_cfg(tmp_path, **over), resume=part.run_dir)
    assert_same_weights(load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint))


def test_lr_schedules_are_flat_until_the_start_then_fall_to_zero():
    from augforge.training.schedules import lr_factor

    assert lr_factor(0.3, "linear", 0.5) == 1.0 and lr_factor(0.75, "linear", 0.5) == pytest.approx(0.5)
    assert lr_factor(1.0, "cosine", 0.0) == pytest.approx(0.0) and lr_factor(0.5, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(0.9, "none", 0.0) == 1.0 and lr_factor(7.0, "linear", 0.0) == 0.0  # past the budget: clamped


def test_lr_decay_anneals_both_optimisers_by_steps_and_resumes_bitwise(tmp_path, fakes, sigint_at_epoch):
    over = dict(train__lr_decay="linear", train__lr_decay_start=0.25, train__lr_g=1e-3, train__lr_d=2e-3)
    full = load_checkpoint(run(fake_cfg(tmp_path, **over)).checkpoint)
    # the last step (12 of 12) set the rate for a next step that never comes: 0
    assert full["opt_g"]["param_groups"][0]["lr"] == 0.0 and full["opt_d"]["param_groups"][0]["lr"] == 0.0
    with sigint_at_epoch(2):
        part = run(fake_cfg(tmp_path, **over))
    mid = load_checkpoint(part.checkpoint)
    assert part.status == "KILLED" and 3 < mid["step"] < 12
    factor = 1 - (mid["step"] / 12 - 0.25) / 0.75  # linear from a quarter of the run, both optimisers (TTUR kept)
    assert mid["opt_g"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * factor)
    assert mid["opt_d"]["param_groups"][0]["lr"] == pytest.approx(2e-3 * factor)
    resumed = load_checkpoint(run(fake_cfg(tmp_path, **over), resume=part.run_dir).checkpoint)
    assert_same_weights(full, resumed, keys=("generator",))


def test_lr_decay_errors_list_the_valid_schedules(tmp_path, fakes):
    with pytest.raises(ConfigError, match="train.lr_decay='step': expected one of none, linear, cosine"):
        run(fake_cfg(tmp_path, train__lr_decay="step"))
    with pytest.raises(ConfigError, match=r"train.lr_decay_start=1.0 must be in \[0, 1\)"):
        run(fake_cfg(tmp_path, train__lr_decay="linear", train__lr_decay_start=1.0))


def test_mode_seeking_penalty_is_large_for_collapse_and_small_for_diversity():
    from augforge.training.losses import mode_seeking_penalty

    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    same = torch.zeros(8, 3, 4, 4)  # every z gives the same image: collapse
    varied = z[:, :3, None, None].expand(8, 3, 4, 4).clone()  # images move with z
    assert mode_seeking_penalty(same, z) > 1e4 and mode_seeking_penalty(varied, z) < 2.0
    half = (z[:4] - z[4:]).abs().mean()
    assert mode_seeking_penalty(varied, z) == pytest.approx(float(1.0 / ((varied[:4] - varied[4:]).abs().mean() / half + 1e-5)))


def test_mode_seeking_training_logs_the_term_and_resumes_bitwise(tmp_path, fakes):
    over = dict(train__ms_weight=1.0, train__device="cpu")
    full = run(fake_cfg(tmp_path, **over))
    assert "ms" in full.metrics and math.isfinite(full.metrics["ms"])
    part = run(fake_cfg(tmp_path, train__steps=5, **over))
    resumed = run(fake_cfg(tmp_path, **over), resume=part.run_dir)
    assert_same_weights(load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint), keys=("generator",))
    with pytest.raises(ConfigError, match="train.ms_weight=-1.0 must be >= 0"):
        run(fake_cfg(tmp_path, train__ms_weight=-1.0))


def test_template_share_is_one_for_copies_and_low_for_varied_images():
    from augforge_plugins.artefacts import template_share

    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (1, 16, 16, 3)).astype(np.uint8)
    copies = np.repeat(one, 10, axis=0)
    varied = rng.integers(0, 256, (10, 16, 16, 3)).astype(np.uint8)
    labels = np.zeros(10, int)
    assert template_share(copies, labels) == pytest.approx(1.0)
    assert template_share(varied, labels) < 0.2
    assert np.isnan(template_share(varied[:3], labels[:3]))  # too few images of the class to say
