"""Scored, filtered sampling: exact shares, determinism, near-copies always dropped."""

import numpy as np
import pytest

from augforge.evaluation.filtering import FilterError, kept_count, novelty, parse_filters, percentile_ranks, select


def _labels(sizes):
    return np.random.default_rng(7).permutation(np.repeat(np.arange(len(sizes)), sizes))


@pytest.mark.parametrize("keep", [0.5, 0.29, 0.1, 1.0, 0.75])
def test_keeps_exactly_the_requested_share_per_class(keep):
    sizes = [100, 37, 9, 1]
    labels = _labels(sizes)
    rng = np.random.default_rng(0)
    scores = {"realism": rng.normal(size=len(labels)), "label": rng.random(len(labels))}
    sel = select(labels, scores, keep=keep, seed=0)
    got = np.bincount(labels[sel.indices], minlength=len(sizes))
    assert got.tolist() == [int(np.floor(keep * n + 1e-9)) for n in sizes]
    assert kept_count(100, 0.29) == 29 and kept_count(9, 0.5) == 4  # floor, not round


def test_keeps_the_best_combined_rank():
    labels = np.zeros(6, int)
    realism = np.array([0.0, 5.0, 1.0, 4.0, 2.0, 3.0])
    label = np.array([0.0, 0.9, 0.1, 0.8, 0.2, 0.3])  # same order: combined = the same order
    sel = select(labels, {"realism": realism, "label": label}, keep=0.5)
    assert sel.indices.tolist() == [1, 3, 5]
    # opposite orders cancel: all combined ranks tie at 0.5
    tie = select(labels, {"realism": realism, "label": -realism}, keep=0.5)
    assert np.allclose(tie.combined, 0.5)


def test_deterministic_by_seed_with_ties():
    labels = _labels([50, 50])
    flat = {"label": np.ones(len(labels))}  # every image ties: the seeded order decides
    a, b = select(labels, flat, keep=0.5, seed=3), select(labels, flat, keep=0.5, seed=3)
    assert np.array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, select(labels, flat, keep=0.5, seed=4).indices)


def test_percentile_ranks_average_ties():
    assert percentile_ranks(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [1.0, 1 / 6, 1 / 6, 2 / 3]


def test_near_copies_are_dropped_even_with_the_best_scores():
    labels = np.repeat([0, 1], 10)
    realism = np.arange(20, dtype=float)
    copies = np.zeros(20, bool)
    copies[[9, 19, 18]] = True  # the best-scored images of each class
    sel = select(labels, {"realism": realism}, keep=0.5, near_copy=copies)
    assert not set(sel.indices) & {9, 18, 19}
    assert np.bincount(labels[sel.indices]).tolist() == [5, 5]
    assert sel.dropped_near_copies == {0: 1, 1: 2}
    short = select(labels, {"realism": realism}, counts={0: 10, 1: 3}, near_copy=copies)
    assert short.shortfall == {0: 1}


def test_planted_copies_of_training_images_are_flagged_by_novelty():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    held_out = rng.integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)  # genuinely new "lesions"
    generated = rng.integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    planted = [3, 11, 27]
    generated[planted] = train[[0, 5, 39]]
    dist, copies, thr = novelty(generated, train, baseline=held_out)
    assert np.flatnonzero(copies).tolist() == planted
    assert thr > 0 and np.allclose(dist[planted], 0, atol=1e-6)
    labels = np.zeros(30, int)
    sel = select(labels, {"novelty": dist}, keep=0.5, near_copy=copies)
    assert len(sel.indices) == 15 and not set(sel.indices) & set(planted)


def test_bad_inputs_fail_with_the_valid_choices():
    with pytest.raises(FilterError, match="realism, label, novelty"):
        parse_filters("realism,sharpness")
    assert parse_filters("label, realism,label") == ("label", "realism")
    with pytest.raises(FilterError, match=r"\(0, 1\]"):
        select(np.zeros(3, int), {}, keep=1.5)
    with pytest.raises(FilterError, match="one score per image"):
        select(np.zeros(3, int), {"label": np.ones(2)}, keep=0.5)
