"""policy-study at toy size (2 seeds, 1 epoch, 16 px fake blobs): mechanics, not a measurement."""

import numpy as np
import pytest
import torch

from augforge import config, registry

from augforge import evaluation as evaluate
from augforge.interfaces import ImageSet
from augforge_runtime.policies import mix

FAKE = {
    "data.name": "fake-blobs", "dataset.n_per_class": "40", "dataset.size": "32", "data.image_size": "16",
    "data.val_fraction": "0.2", "data.test_fraction": "0.25", "model.generator": "fake", "model.latent_dim": "8",
}


@pytest.fixture
def sets(fakes):
    cfg = config.resolve(overrides=FAKE)
    return evaluate.split_sets(*evaluate.load_data(cfg))


def _imbalanced(s: ImageSet, keep_every: int = 3) -> ImageSet:
    """Drop two thirds of class 1, so the policies add different numbers of images."""
    idx = np.flatnonzero((s.labels == 0) | (np.arange(len(s)) % keep_every == 0))
    return s.subset(idx)


def _context(train, val, sampler, calls):
    det = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2, widths=[8, 8, 8], feature_dim=8).eval()

    def sample(counts, seed):
        calls.append((np.asarray(counts).tolist(), sampler(counts, seed)))
        return calls[-1][1]

    return evaluate.EvalContext(det, torch.device("cpu"), train.class_names, seed=0, image_size=16, real_val=val, sampler=sample)


@pytest.mark.slow
def test_policy_study_mechanics(sets, monkeypatch):
    from augforge.evaluation import classify
    trained = []  # every training set the study fits on, in order
    real_fit = classify.fit_classifier

    def fit(model, train, *a, **kw):
        trained.append(train)
        return real_fit(model, train, *a, **kw)

    monkeypatch.setattr(classify, "fit_classifier", fit)
    train = _imbalanced(sets["train"])
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    sampler = lambda counts, seed: evaluate.sample_images(g, counts, ["nv", "mel"], seed=seed, device="cpu")  # noqa: E731
    calls = []
    ctx = _context(train, sets["val"], sampler, calls)
    ev = registry.build("evaluator", "policy-study", seeds=2, epochs=1)
    assert ev.cheap is False and len(ev.policies) >= 6 and str(ev.policies[0]) == "top-up"
    res = ev.evaluate(train, None, sets["test"], ctx)
    table, runs, m = res.tables["policy_study"], res.tables["policy_study_runs"], res.metrics
    assert list(table.policy) == [str(p) for p in ev.policies]
    assert len(runs) == 2 * (1 + len(ev.policies))  # real-only + every policy, per seed
    # one pool, big enough for every policy, doubled for filtering
    counts = np.bincount(train.labels, minlength=2)
    need = np.max([p.synthetic_counts(counts) for p in ev.policies], axis=0)
    assert [c for c, _ in calls] == [np.ceil(2 * need).astype(int).tolist()]
    for p in ev.policies:
        assert (runs[runs.policy == str(p)].synthetic == p.synthetic_counts(counts).sum()).all()
    # the study trains on exactly the set augforge_runtime.policies.mix gives a downstream trainer
    pool = calls[0][1]
    unfiltered = [p for p in ev.policies if not p.filtered and not p.two_stage]
    fits = iter(trained)
    for seed in range(2):
        next(fits)  # real only
        for p in ev.policies:
            got = next(fits)
            if p.two_stage:
                assert next(fits) is train  # then fine-tuned on real only
            if p in unfiltered:
                want = pool.images[mix(train.labels, pool.labels, p, seed=seed)]
                assert np.array_equal(got.images[len(train):], want)
    assert unfiltered
    # the best mixing policy has the best val gain; its metrics are its paired test deltas
    best = table.loc[table.val_gain_mean.idxmax()]
    base = runs[runs.policy == "real"].set_index("seed").test_bacc
    mine = runs[runs.policy == best.policy].set_index("seed").test_bacc
    deltas = (mine - base).to_numpy()
    assert m["policy_study_best_mixing_index"] == list(table.policy).index(best.policy)
    assert m["policy_study_best_mixing_gain"] == pytest.approx(deltas.mean())
    half = 12.706204736174707 * deltas.std(ddof=1) / np.sqrt(2)  # t(0.975, df=1)
    assert m["policy_study_best_mixing_gain_ci_low"] == pytest.approx(deltas.mean() - half)
    assert m["policy_study_best_mixing_gain_ci_high"] == pytest.approx(deltas.mean() + half)
    # it is recommended only when it beat real only on val; else "none", whose gain is 0 by construction
    if best.val_gain_mean > 0:
        assert res.tags["recommended_policy"] == best.policy and table.chosen.tolist() == list(table.policy == best.policy)
        assert m["policy_study_gain"] == m["policy_study_best_mixing_gain"]
        assert m["policy_study_gain_ci_low"] == pytest.approx(deltas.mean() - half)
    else:
        assert res.tags["recommended_policy"] == "none" and not table.chosen.any()
        assert m["policy_study_gain"] == m["policy_study_gain_ci_low"] == m["policy_study_gain_ci_high"] == 0.0
        assert m["policy_study_chosen_index"] == -1
    assert set(res.tables["policy_study_recall_delta"]["class"]) == {"nv", "mel"}
    fig = res.figures["policy_study_gain"]
    assert fig.dtype == np.uint8 and fig.ndim == 3 and fig.shape[2] == 3 and fig.shape[0] > 100


def _fit_weights(train, weights, seed=0):
    from augforge.evaluation.classify import fit_classifier

    model = registry.build("classifier", "fake", image_size=16, num_classes=2)
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fit = fit_classifier(model, train, None, seed=seed, device="cpu", sample_weights=weights, epochs=2, batch_size=8,
                         augment=False, epoch_size=0)
    return torch.cat([p.detach().flatten() for p in fit.model.parameters()])


def test_sample_weights_scale_each_items_loss(sets):
    """Weight 0: an item's image cannot change the model; weight 1: it does (a loss weight, not ignored)."""
    train = sets["train"]
    other = ImageSet(train.images.copy(), train.labels, train.class_names)
    synth = np.arange(len(train)) % 3 == 0  # every third item plays "synthetic"
    other.images[synth] = 255 - other.images[synth]
    w0 = np.where(synth, 0.0, 1.0)
    assert torch.equal(_fit_weights(train, w0), _fit_weights(other, w0))
    assert not torch.allclose(_fit_weights(train, np.ones(len(train))), _fit_weights(other, np.ones(len(train))))
    with pytest.raises(ValueError, match="one per training item"):
        _fit_weights(train, np.ones(3))


def test_policy_study_trains_weighted_policies_with_their_weight(sets, monkeypatch):
    from augforge.evaluation import classify

    seen = []
    real_fit = classify.fit_classifier

    def fit(model, train, *a, sample_weights=None, **kw):
        seen.append((len(train), None if sample_weights is None else np.asarray(sample_weights)))
        return real_fit(model, train, *a, sample_weights=sample_weights, **kw)

    monkeypatch.setattr(classify, "fit_classifier", fit)
    train = _imbalanced(sets["train"])
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    ctx = _context(train, sets["val"], lambda counts, seed: evaluate.sample_images(g, counts, ["nv", "mel"], seed=seed, device="cpu"), [])
    ev = registry.build("evaluator", "policy-study", policies=["top-up", "ratio:1:weight=0.25"], seeds=1, epochs=1)
    ev.evaluate(train, None, sets["test"], ctx)
    (n_real, w_real), (n_top, w_top), (n_w, w) = seen
    assert w_real is None and w_top is None and n_real == len(train)
    assert n_w > len(train) and w.tolist() == [1.0] * len(train) + [0.25] * (n_w - len(train))


@pytest.mark.parametrize("margin, want", [(-1.0, "ratio:0.5"), (1.0, "none")])
def test_policy_study_recommends_none_unless_a_policy_beats_real_only_on_val(sets, monkeypatch, margin, want):
    """The same runs, two thresholds: a policy is recommended only when its val gain clears min_val_gain."""
    train = _imbalanced(sets["train"])
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    ctx = _context(train, sets["val"], lambda counts, seed: evaluate.sample_images(g, counts, ["nv", "mel"], seed=seed, device="cpu"), [])
    ev = registry.build("evaluator", "policy-study", policies=["top-up", "ratio:0.5"], seeds=2, epochs=1, min_val_gain=margin)
    # (val, test) balanced accuracy by fit, per seed: real, top-up, ratio:0.5 -> ratio:0.5 is best on val (+0.2)
    fixed = [(0.5, 0.5), (0.4, 0.45), (0.7, 0.4)]
    fits = iter(range(100))

    def fit_score(self, *a, **kw):
        i = next(fits)
        val, test = fixed[i % 3]
        return {"val_bacc": val, "test_bacc": test + 0.01 * (i // 3), "recall_nv": 0.5, "recall_mel": 0.5}

    monkeypatch.setattr(type(ev), "_fit_score", fit_score)
    res = ev.evaluate(train, None, sets["test"], ctx)
    m = res.metrics
    assert res.tags["recommended_policy"] == want
    assert m["policy_study_best_mixing_index"] == 1 and m["policy_study_best_mixing_gain"] == pytest.approx(-0.1)
    if want == "none":
        assert m["policy_study_gain"] == 0.0 and m["policy_study_chosen_index"] == -1
        assert "no policy beat real only on val (best ratio:0.5" in res.tags["recommended_policy_evidence"]
    else:
        assert m["policy_study_gain"] == pytest.approx(-0.1) and m["policy_study_chosen_index"] == 1


def test_policy_study_options_fail_loudly(fakes):
    with pytest.raises(ValueError, match="always compares against real only"):
        registry.build("evaluator", "policy-study", policies=["top-up", "none"])
    with pytest.raises(ValueError, match="at least 2 distinct"):
        registry.build("evaluator", "policy-study", policies=["top-up", "top-up"])
    with pytest.raises(ValueError, match="valid forms"):
        registry.build("evaluator", "policy-study", policies=["top-up", "mixup"])


def test_filtered_policies_rank_by_the_discriminator_when_the_evaluation_has_it(sets, monkeypatch):
    from augforge.evaluation import filtering

    ranked = []
    real_select = filtering.select

    def spy(labels, scores, **kw):
        ranked.append({k: np.asarray(v) for k, v in scores.items()})
        return real_select(labels, scores, **kw)

    monkeypatch.setattr(filtering, "select", spy)
    train = _imbalanced(sets["train"])
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    pools = []
    ctx = _context(train, sets["val"], lambda counts, seed: evaluate.sample_images(g, counts, ["nv", "mel"], seed=seed, device="cpu"), pools)
    ev = registry.build("evaluator", "policy-study", policies=["top-up", "ratio:1:filtered"], seeds=1, epochs=1)
    ev.evaluate(train, None, sets["test"], ctx)
    assert set(ranked[0]) == {"label", "novelty"}  # no discriminator at hand
    ranked.clear()
    ctx.realism = lambda s: s.images.reshape(len(s), -1).mean(1)  # a stand-in D: brighter = "more real"
    ev.evaluate(train, None, sets["test"], ctx)
    pool = pools[-1][1]
    assert set(ranked[0]) == {"label", "novelty", "realism"}
    assert np.array_equal(ranked[0]["realism"], pool.images.reshape(len(pool), -1).mean(1))
