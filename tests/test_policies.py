"""Augmentation policies: parsing, documented counts, deterministic mixing."""

import subprocess
import sys

import numpy as np
import pytest

from augforge_runtime.policies import Policy, PolicyError, describe, mix, parse_policy, sample_weights

REAL = np.array([100, 40, 7, 0, 25])  # imbalanced, with an empty class


def test_top_up_matches_augmentation_gains_top_up():
    from augforge_plugins.measures import top_up_counts

    for n in (0, 30, 100, 669):
        assert parse_policy(f"top-up:{n}").synthetic_counts(REAL).tolist() == top_up_counts(REAL, n).tolist()
    assert parse_policy("top-up:30").synthetic_counts(REAL).tolist() == [0, 0, 23, 30, 5]
    # no N: the second-largest class, augmentation-gain's default target
    assert parse_policy("top-up").synthetic_counts(REAL).tolist() == [0, 0, 33, 40, 15]


def test_ratio_rounds_half_up_and_caps_at_the_largest_class():
    # R x n = 50, 20, 3.5 -> 4 (half up, not to even), 0, 12.5 -> 13; class 0 is the largest: cap 0
    assert parse_policy("ratio:0.5").synthetic_counts(REAL).tolist() == [0, 20, 4, 0, 13]
    # R = 2: 80 for class 1 is capped at 100 - 40 = 60; 14 for class 2 is under its cap 93
    assert parse_policy("ratio:2").synthetic_counts(REAL).tolist() == [0, 60, 14, 0, 50]
    assert parse_policy("ratio:0").synthetic_counts(REAL).tolist() == [0] * 5


def test_balanced_brings_every_class_to_the_largest():
    add = parse_policy("balanced").synthetic_counts(REAL)
    assert add.tolist() == [0, 60, 93, 100, 75]
    assert set((REAL + add).tolist()) == {100}


def test_none_adds_nothing_and_mixes_nothing():
    """``none``: what the policy study recommends when no policy beat real only on val."""
    assert parse_policy("none").synthetic_counts(REAL).tolist() == [0] * 5
    _, synth = _synth()
    assert mix(np.repeat(np.arange(5), REAL), synth, "none", seed=0).tolist() == []


@pytest.mark.parametrize("text, expect", [
    ("none", Policy("none")),
    ("top-up:669", Policy("top-up", 669)),
    ("ratio:0.5", Policy("ratio", 0.5)),
    ("balanced", Policy("balanced")),
    ("balanced:filtered", Policy("balanced", filtered=True)),
    ("ratio:1:filtered", Policy("ratio", 1.0, filtered=True)),
    ("pretrain-synthetic:ratio:1", Policy("ratio", 1.0, two_stage=True)),
    ("pretrain-synthetic:top-up:filtered:weight=0.5", Policy("top-up", None, True, True, 0.5)),
    (" Ratio:0.25:weight=2 ", Policy("ratio", 0.25, synthetic_weight=2.0)),
])
def test_parse_and_canonical_round_trip(text, expect):
    p = parse_policy(text)
    assert p == expect
    assert parse_policy(str(p)) == p


@pytest.mark.parametrize("text", ["", "ratio", "ratio:x", "top-up:-3", "top-up:2.5", "random", "balanced:filtered:filtered",
                                  "balanced:weight=0", "pretrain-synthetic", "ratio:1:sharp",
                                  "none:3", "none:filtered", "pretrain-synthetic:none", "none:weight=0.5"])
def test_bad_policies_fail_listing_the_valid_forms(text):
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    msg = str(err.value)
    assert "top-up" in msg and ("ratio" in msg or "weight" in msg)


def _synth(per_class=120, c=5, seed=3):
    labels = np.repeat(np.arange(c), per_class)
    return labels, np.random.default_rng(seed).permutation(labels)


def test_mix_takes_the_documented_count_per_class():
    _, synth = _synth()
    real = np.repeat(np.arange(5), REAL)
    for text in ("top-up:100", "ratio:0.5", "balanced", "pretrain-synthetic:ratio:1"):
        idx = mix(real, synth, text, seed=0)
        got = np.bincount(synth[idx], minlength=5)
        assert got.tolist() == parse_policy(text).synthetic_counts(REAL).tolist()
        assert len(np.unique(idx)) == len(idx)  # no image twice


def test_mix_is_deterministic_by_seed():
    _, synth = _synth()
    real = np.repeat(np.arange(5), REAL)
    a, b, c = (mix(real, synth, "ratio:0.5", seed=s) for s in (1, 1, 2))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_mix_filtered_takes_the_best_scores_and_breaks_ties_by_seed():
    _, synth = _synth()
    real = np.repeat(np.arange(5), REAL)
    scores = np.random.default_rng(0).normal(size=len(synth))
    idx = mix(real, synth, "balanced:filtered", seed=0, scores=scores)
    need = parse_policy("balanced").synthetic_counts(REAL)
    for k in range(5):
        pool = np.flatnonzero(synth == k)
        best = pool[np.argsort(-scores[pool])[: need[k]]]
        assert set(idx[synth[idx] == k]) == set(best)
    # all scores tied: the seeded order decides, reproducibly
    flat = np.zeros(len(synth))
    t1, t2 = mix(real, synth, "ratio:0.5:filtered", 5, flat), mix(real, synth, "ratio:0.5:filtered", 5, flat)
    assert np.array_equal(t1, t2)
    assert not np.array_equal(t1, mix(real, synth, "ratio:0.5:filtered", 6, flat))
    with pytest.raises(PolicyError, match="scores"):
        mix(real, synth, "balanced:filtered", seed=0)


def test_mix_refuses_too_few_synthetic_images():
    _, synth = _synth(per_class=10)
    with pytest.raises(PolicyError, match="needs 60 synthetic images of class 1, only 10 given"):
        mix(np.repeat(np.arange(5), REAL), synth, "balanced")


def test_weights_and_description():
    w = sample_weights(3, 2, "ratio:1:weight=0.25")
    assert w.tolist() == [1, 1, 1, 0.25, 0.25]
    text = describe("pretrain-synthetic:balanced", REAL, ["a", "b", "c", "d", "e"])
    assert "two stages" in text and "real      7 + synthetic     93 =    100" in text


def test_policies_module_does_not_import_torch():
    code = "import sys, augforge_runtime.policies; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
