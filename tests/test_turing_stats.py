"""The Turing test's statistics against published values."""

import math

import numpy as np
import pytest

from augforge.turing import stats

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857,
# Table I: method 3 (Wilson score, no continuity correction) and method 5 (Clopper-Pearson).
NEWCOMBE = [
    # k, n, wilson, clopper-pearson
    (81, 263, (0.2553, 0.3662), (0.2527, 0.3676)),
    (15, 148, (0.0624, 0.1605), (0.0578, 0.1617)),
    (0, 20, (0.0, 0.1611), (0.0, 0.1684)),
    (1, 29, (0.0061, 0.1718), (0.0009, 0.1776)),
]

# Fleiss' kappa worked example (Wikipedia "Fleiss' kappa"; 10 subjects, 14 raters, 5 categories):
# P-bar = 0.378, P_e = 0.213, kappa = 0.210 (statsmodels' fleiss_kappa gives 0.20993).
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


@pytest.mark.parametrize("k,n,wilson,cp", NEWCOMBE)
def test_binomial_intervals_match_newcombe(k, n, wilson, cp):
    assert stats.wilson_interval(k, n) == pytest.approx(wilson, abs=6e-5)
    assert stats.clopper_pearson_interval(k, n) == pytest.approx(cp, abs=6e-5)


def test_binomial_interval_edges():
    assert stats.wilson_interval(10, 10)[1] == 1.0 and stats.clopper_pearson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in stats.wilson_interval(0, 0))
    assert all(math.isnan(x) for x in stats.clopper_pearson_interval(0, 0))
    lo95, hi95 = stats.wilson_interval(30, 50)
    lo99, hi99 = stats.wilson_interval(30, 50, confidence=0.99)
    assert lo99 < lo95 < 0.6 < hi95 < hi99
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 3)
    with pytest.raises(ValueError):
        stats.wilson_interval(1, 3, confidence=1.0)


def test_fleiss_kappa_textbook_example():
    assert stats.fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=5e-5)
    assert stats.kappa_label(stats.fleiss_kappa(FLEISS_TABLE)) == "fair"


def test_fleiss_kappa_special_cases():
    # perfect agreement on a mix of categories
    assert stats.fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    # systematic disagreement goes below zero
    assert stats.fleiss_kappa([[1, 1], [1, 1], [1, 1]]) < 0
    # one category only: chance agreement is 1, kappa undefined
    assert math.isnan(stats.fleiss_kappa([[4, 0], [4, 0]]))
    # subjects with a single rating carry no information and are dropped
    assert stats.fleiss_kappa([[3, 0], [0, 3], [1, 0]]) == pytest.approx(1.0)
    assert math.isnan(stats.fleiss_kappa([[1, 0], [0, 1]]))
    # unequal numbers of ratings: equals the plain formula when n_i happen to be equal
    equal = np.array(FLEISS_TABLE)
    assert stats.fleiss_kappa(equal) == stats.fleiss_kappa(equal.tolist())
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[1, -1]])


def test_confusion_sensitivity_specificity():
    # positive = generated. 4 generated (3 detected), 6 real (4 called real)
    truth = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    said = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]
    c = stats.confusion(np.array(truth, bool), np.array(said, bool))
    assert (c.tp, c.fn, c.tn, c.fp) == (3, 1, 4, 2)
    assert stats.sensitivity(c) == pytest.approx(0.75)
    assert stats.specificity(c) == pytest.approx(4 / 6)
    assert stats.accuracy(c) == pytest.approx(0.7)
    assert math.isnan(stats.sensitivity(stats.confusion([False], [True])))
    with pytest.raises(ValueError):
        stats.confusion([True], [True, False])


def test_cluster_bootstrap_is_wider_when_raters_disagree():
    # same pooled share (50%), raters either all-in or identical
    split = stats.cluster_bootstrap_interval([10, 0, 10, 0, 10, 0], [10] * 6)
    same = stats.cluster_bootstrap_interval([5] * 6, [10] * 6)
    assert same == (0.5, 0.5)
    assert split[0] < 0.3 and split[1] > 0.7
    assert stats.cluster_bootstrap_interval([5, 5], [10, 10], seed=1) == stats.cluster_bootstrap_interval([5, 5], [10, 10], seed=1)
    assert all(math.isnan(x) for x in stats.cluster_bootstrap_interval([3], [4]))


def test_kappa_labels():
    assert [stats.kappa_label(x) for x in (-0.1, 0.0, 0.3, 0.5, 0.7, 0.9)] == [
        "poor", "slight", "fair", "moderate", "substantial", "almost perfect"
    ]
