"""The evaluation math against closed forms and constructed cases (small dims: fast)."""

import numpy as np
import pytest
from scipy import linalg

from augforge_plugins import measures as M
from augforge_plugins import privacy


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


# ---- FID -------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    mu, sigma = M.gaussian_stats(x)
    assert abs(M.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_fid_between_diagonal_gaussians_matches_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)  # = 5 + 4 + 1
    assert M.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(10.0)


def test_fid_general_covariances_matches_symmetric_form():
    # Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2): an independent formula, computed with eigh
    rng = np.random.default_rng(1)
    s1, s2 = _spd(rng, 6), _spd(rng, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)

    def psd_sqrt(a):
        w, v = np.linalg.eigh(a)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = psd_sqrt(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * psd_sqrt(r1 @ s2 @ r1))
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_fid_of_samples_approaches_the_population_value():
    rng = np.random.default_rng(2)
    s1, s2 = _spd(rng, 4), _spd(rng, 4)
    mu2 = np.array([1.0, 0, 0, 0])
    a = rng.multivariate_normal(np.zeros(4), s1, size=200_000)
    b = rng.multivariate_normal(mu2, s2, size=200_000)
    pop = M.frechet_distance(np.zeros(4), s1, mu2, s2)
    assert M.frechet_distance(*M.gaussian_stats(a), *M.gaussian_stats(b)) == pytest.approx(pop, abs=0.02)


def test_class_balanced_stats_weight_each_class_equally():
    rng = np.random.default_rng(3)
    # class 0: 900 points around 0; class 1: 100 points around 10 -> balanced mean is 5
    x = np.concatenate([rng.normal(0, 1, (900, 2)), rng.normal(10, 1, (100, 2))])
    labels = np.array([0] * 900 + [1] * 100)
    mu, cov = M.gaussian_stats(x, M.class_balanced_weights(labels))
    assert mu == pytest.approx([5, 5], abs=0.15)
    # mixture variance: within (1) + between (25)
    assert np.diag(cov) == pytest.approx([26, 26], rel=0.08)
    # and equal weights give the plain estimate
    m0, c0 = M.gaussian_stats(x, np.ones(len(x)))
    m1, c1 = M.gaussian_stats(x)
    assert np.allclose(m0, m1) and np.allclose(c0, c1)


def test_fid_is_finite_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(10, 32))
    assert np.isfinite(M.frechet_distance(*M.gaussian_stats(a), *M.gaussian_stats(b)))


# ---- KID -------------------------------------------------------------------------------------


def test_mmd_equals_the_analytic_value_for_point_masses():
    # all of X at a, all of Y at b: the unbiased estimate is exactly k(a,a) + k(b,b) - 2 k(a,b)
    a, b = np.array([[1.0, 2.0, 0.5]]), np.array([[0.0, -1.0, 2.0]])
    x, y = np.repeat(a, 7, 0), np.repeat(b, 5, 0)
    k = lambda u, v: (u @ v.T / 3 + 1) ** 3  # noqa: E731  KID's kernel, d = 3
    expected = (k(a, a) + k(b, b) - 2 * k(a, b)).item()
    assert M.mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)


def test_kid_is_unbiased_for_the_same_distribution():
    # the expectation is 0; a biased (V-statistic) estimate would be positive every time
    rng = np.random.default_rng(5)
    vals = [M.mmd2_unbiased(rng.normal(size=(20, 4)), rng.normal(size=(20, 4))) for _ in range(400)]
    se = np.std(vals) / np.sqrt(len(vals))
    assert abs(np.mean(vals)) < 3 * se
    assert min(vals) < 0  # unbiased estimates go negative


def test_kid_linear_kernel_matches_mean_difference():
    # with k(x, y) = <x, y>, MMD^2 = |mu_x - mu_y|^2 exactly in expectation
    rng = np.random.default_rng(6)
    mu = np.array([1.0, -0.5, 0.0])
    vals = [M.mmd2_unbiased(rng.normal(size=(15, 3)), rng.normal(size=(15, 3)) + mu, degree=1, gamma=1.0, coef0=0.0)
            for _ in range(600)]
    assert np.mean(vals) == pytest.approx(mu @ mu, abs=4 * np.std(vals) / np.sqrt(len(vals)))


def test_kid_subset_size_is_capped_by_the_smallest_set():
    rng = np.random.default_rng(7)
    mean, std = M.kid(rng.normal(size=(500, 4)), rng.normal(size=(6, 4)), n_subsets=10, subset_size=1000)
    assert np.isfinite(mean) and np.isfinite(std)
    with pytest.raises(ValueError, match="at least 2"):
        M.mmd2_unbiased(rng.normal(size=(1, 4)), rng.normal(size=(5, 4)))


def test_kid_orders_distances():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(300, 8))
    near, far = rng.normal(0.2, 1, (300, 8)), rng.normal(1.0, 1, (300, 8))
    assert M.kid(real, near, n_subsets=10)[0] < M.kid(real, far, n_subsets=10)[0]


# ---- precision / recall, density / coverage ---------------------------------------------------


def test_precision_recall_on_constructed_manifolds():
    rng = np.random.default_rng(9)
    real = rng.uniform(0, 1, (800, 2))
    same = rng.uniform(0, 1, (800, 2))
    p, r = M.precision_recall(real, same, k=3)
    assert p > 0.95 and r > 0.95
    # generated covers only the left half of the square: realistic but not diverse
    half = rng.uniform(0, 1, (800, 2)) * [0.5, 1]
    p, r = M.precision_recall(real, half, k=3)
    assert p > 0.95 and 0.4 < r < 0.62
    # generated far away: neither
    p, r = M.precision_recall(real, same + 5, k=3)
    assert p == 0 and r == 0
    # mode collapse onto a small blob inside the data: precise, no recall
    blob = 0.5 + rng.normal(0, 0.01, (800, 2))
    p, r = M.precision_recall(real, blob, k=3)
    assert p > 0.95 and r < 0.05


def test_density_and_coverage_for_identical_distributions():
    # Naeem et al.: E[density] = 1; E[coverage] = 1 - (1/2)^k for equal set sizes
    rng = np.random.default_rng(10)
    k, dens, cov = 5, [], []
    for _ in range(5):
        d, c = M.density_coverage(rng.normal(size=(600, 4)), rng.normal(size=(600, 4)), k=k)
        dens.append(d)
        cov.append(c)
    assert np.mean(dens) == pytest.approx(1.0, abs=0.06)
    assert np.mean(cov) == pytest.approx(1 - 0.5**k, abs=0.02)


def test_coverage_penalises_collapse_and_density_falls_off_the_manifold():
    rng = np.random.default_rng(11)
    real = rng.normal(size=(500, 2))
    collapsed = rng.normal(0, 0.05, (500, 2))  # inside the data, but one small mode
    d, c = M.density_coverage(real, collapsed, k=5)
    assert d > 0.5 and c < 0.2
    d, c = M.density_coverage(real, real[:250] + 20, k=5)
    assert d == 0 and c == 0


def test_knn_radii_need_more_points_than_k():
    with pytest.raises(ValueError, match="more than k=3"):
        M.knn_radii(np.zeros((3, 2)), 3)


# ---- c2st ------------------------------------------------------------------------------------


def test_c2st_is_chance_on_two_halves_of_one_set():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(1200, 5))
    out = M.c2st(x[:600], x[600:], M.logistic_fit_predict, seed=0)
    assert abs(out["accuracy"] - 0.5) < 0.07
    assert out["p_value"] > 0.01
    assert out["n_test"] == 600


def test_c2st_is_one_on_obviously_different_sets():
    rng = np.random.default_rng(13)
    out = M.c2st(rng.normal(size=(300, 5)), rng.normal(size=(300, 5)) + 6, M.logistic_fit_predict, seed=0)
    assert out["accuracy"] > 0.99
    assert out["p_value"] < 1e-30


def test_c2st_keeps_groups_on_one_side():
    rng = np.random.default_rng(14)
    groups = np.repeat(np.arange(50), 4)
    first = M.split_halves(200, groups, rng)
    for g in range(50):
        assert len(set(first[groups == g])) == 1
    assert 0.3 < first.mean() < 0.7


def test_binomial_pvalue():
    assert M.binomial_pvalue(50, 100) > 0.4
    assert M.binomial_pvalue(100, 100) == pytest.approx(0.5**100)


# ---- memorisation ----------------------------------------------------------------------------


def _images(rng, n, size=16):
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_near_copy_mask_flags_planted_copies():
    rng = np.random.default_rng(15)
    train, held_out = _images(rng, 200), _images(rng, 100)
    fresh = _images(rng, 40)
    copies = train[[3, 50, 120]].copy()
    copies[0] = np.clip(copies[0].astype(int) + rng.integers(-4, 5, copies[0].shape), 0, 255)  # JPEG-like noise
    copies[1] = copies[1][:, ::-1][:, ::-1]  # identical
    generated = np.concatenate([fresh, copies])
    mask = privacy.near_copy_mask(generated, train, baseline=held_out)
    assert mask[-3:].all()
    assert not mask[:-3].any()
    # an explicit threshold works without a baseline
    assert privacy.near_copy_mask(generated, train, threshold=0.02)[-3:].all()
    with pytest.raises(ValueError, match="threshold or real held-out"):
        privacy.near_copy_mask(generated, train)


def test_nearest_neighbours_skip_the_same_lesion():
    query = np.array([[0.0, 0.0], [5.0, 5.0]])
    ref = np.array([[0.0, 0.1], [3.0, 3.0], [5.0, 5.0]])
    d, i = M.nearest_neighbours(query, ref)
    assert list(i) == [0, 2]
    d, i = M.nearest_neighbours(query, ref, query_groups=np.array(["a", "b"]), ref_groups=np.array(["a", "x", "b"]))
    assert list(i) == [1, 1]  # another photo of the same lesion is not a neighbour
    assert d[0] == pytest.approx(np.sqrt(18) / np.sqrt(2))


def test_pixel_vectors_downscale_by_area():
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[0, :2, :2] = 255  # one 2x2 block -> one pixel at 32 px
    v = M.pixel_vectors(img, 32).reshape(32, 32, 3)
    assert v[0, 0, 0] == pytest.approx(1.0) and v.sum() == pytest.approx(3.0)


# ---- detection rate, augmentation helpers ----------------------------------------------------


def test_detection_table_on_a_constructed_case():
    # 4 images of class 0 (3 detected), 2 of class 1 (none detected)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.55, 0.45], [0.8, 0.2]])
    labels = np.array([0, 0, 0, 0, 1, 1])
    t = M.detection_table(probs, labels, ["nv", "mel"]).set_index("class")
    assert t.loc["nv", "n"] == 4
    assert t.loc["nv", "detection_rate"] == pytest.approx(0.75)
    assert t.loc["nv", "confidence"] == pytest.approx((0.9 + 0.6 + 0.7 + 0.2) / 4)
    assert t.loc["nv", "confidence_detected"] == pytest.approx((0.9 + 0.6 + 0.7) / 3)
    assert t.loc["mel", "detection_rate"] == 0
    assert np.isnan(t.loc["mel", "confidence_detected"])


def test_top_up_counts_and_mean_std():
    assert list(M.top_up_counts([500, 120, 40, 600], 300)) == [0, 180, 260, 0]
    m, s = M.mean_std([0.5, 0.6, 0.7])
    assert m == pytest.approx(0.6) and s == pytest.approx(0.1)


def test_frechet_distance_agrees_with_scipy_sqrtm_reference():
    rng = np.random.default_rng(16)
    s1, s2 = _spd(rng, 5), _spd(rng, 5)
    ref = np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert M.frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(ref)
