"""The evaluation core on fake data: detector cache, evaluators end to end, report, tracking, CLI."""

import json

import numpy as np
import pytest
import torch

from augforge import config, registry

from augforge import evaluation as evaluate
from augforge.checkpoint import save_checkpoint
from augforge.evaluation import Evaluation
from augforge.interfaces import ImageSet

FAKE = {
    "data.name": "fake-blobs", "dataset.n_per_class": "40", "dataset.size": "32", "data.image_size": "16",
    "data.val_fraction": "0.2", "data.test_fraction": "0.25",
    "model.generator": "fake", "model.latent_dim": "8",
}


@pytest.fixture
def cfg(fakes):
    return config.resolve(overrides=FAKE)


@pytest.fixture
def fast_detector(monkeypatch):
    """Shrink the detector's recipe so tests train it in a second or two."""
    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 3, "batch_size": 16, "patience": 2, "epoch_size": 0})


def write_fake_checkpoint(cfg, path, run_id=None, step=40):
    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    state = {
        "config": cfg.to_dict(), "class_names": ["nv", "mel"], "image_size": 16, "latent_dim": 8, "run_id": run_id,
        "step": step, "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": None,
    }
    return save_checkpoint(path, state)


def test_detector_is_trained_once_and_cached(cfg, fast_detector, monkeypatch, tmp_path):
    arrays, splits = evaluate.load_data(cfg)
    det = evaluate.get_detector(cfg, arrays, splits)
    info = det.detector_info
    assert info["metrics"]["balanced_accuracy"] > 0.9  # colours tell fake-blobs classes apart
    assert set(info["split_sizes"]) == {"train", "val", "test"}
    assert (tmp_path / "cache" / "detectors").is_dir()  # AUGFORGE_CACHE_DIR (conftest) wins

    def boom(*a, **k):
        raise AssertionError("retrained a cached detector")

    monkeypatch.setattr(evaluate.detector, "fit_classifier", boom)
    again = evaluate.get_detector(cfg, arrays, splits)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    assert torch.allclose(again(x), det(x), atol=1e-5)
    # a different split is a different detector
    other = dict(splits, train=splits["train"][1:])
    with pytest.raises(AssertionError, match="retrained"):
        evaluate.get_detector(cfg, arrays, other)


def test_detector_does_not_depend_on_what_the_process_drew_before(cfg, fast_detector, monkeypatch, tmp_path):
    arrays, splits = evaluate.load_data(cfg)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    outputs = []
    for i, draws in enumerate((0, 1000)):
        monkeypatch.setenv("AUGFORGE_CACHE_DIR", str(tmp_path / f"cache{i}"))  # no cache: train each time
        torch.manual_seed(123)
        torch.rand(draws)  # e.g. a generator built before the detector
        outputs.append(evaluate.get_detector(cfg, arrays, splits)(x))
    assert torch.equal(outputs[0], outputs[1])


def test_sample_images_is_deterministic_and_jpeg_is_applied(fakes):
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    a = evaluate.sample_images(g, [3, 2], ["nv", "mel"], seed=7, device="cpu")
    b = evaluate.sample_images(g, [3, 2], ["nv", "mel"], seed=7, device="cpu")
    assert a.images.dtype == np.uint8 and a.images.shape == (5, 16, 16, 3)
    assert list(a.labels) == [0, 0, 0, 1, 1]
    assert np.array_equal(a.images, b.images)
    j = evaluate.sample_images(g, [3, 2], ["nv", "mel"], seed=7, device="cpu", jpeg_quality=30)
    assert not np.array_equal(j.images, a.images)
    assert np.abs(j.images.astype(int) - a.images.astype(int)).mean() < 40
    # unconditional over two classes: labelled by the given function
    u = registry.build("generator", "fake", image_size=16, num_classes=0, latent_dim=8)
    s = evaluate.sample_images(u, [2, 2], ["nv", "mel"], seed=0, device="cpu", label_fn=lambda im: np.ones(len(im)))
    assert len(s) == 4 and set(s.labels) == {1}
    with pytest.raises(evaluate.EvaluationError, match="label_fn"):
        evaluate.sample_images(u, [2, 2], ["nv", "mel"], device="cpu")


@pytest.mark.slow
def test_evaluate_checkpoint_runs_every_cheap_evaluator_writes_report_and_logs(cfg, fast_detector, tmp_path):
    ckpt = write_fake_checkpoint(cfg, tmp_path / "run" / "checkpoints" / "last.pt")
    result = evaluate.evaluate_checkpoint_full(ckpt, n_per_class=20, jpeg_quality=75)
    m = result.metrics
    for key in ("detection_rate", "detection_rate_nv", "real_recall_mel", "fid", "fid_real_baseline", "kid", "kid_nv",
                "precision", "recall", "density", "coverage", "c2st_accuracy", "c2st_p_value", "memorization",
                "memorization_pixel", "detector_balanced_accuracy"):
        assert key in m and np.isfinite(m[key]), key
    assert "augmentation_gain" not in m  # expensive: only on request
    assert m["c2st_accuracy"] > 0.75  # an untrained generator is easy to tell apart
    assert m["fid"] > m["fid_real_baseline"]
    out = result.out_dir
    assert out == tmp_path / "run" / "checkpoints" / "eval-last"
    report = result.report.read_text()
    assert "JPEG at quality 75" in report and "lesion-grouped split" in report
    for fig in ("real_vs_generated", "detector_confusion_real_test", "detector_confusion_generated",
                "closest_pairs_pixel", "closest_pairs_feature"):
        assert (out / "figures" / f"{fig}.png").is_file(), fig
        assert f"figures/{fig}.png" in report
    assert (out / "tables" / "detection_rate.csv").is_file()
    assert json.loads((out / "metrics.json").read_text())["fid"] == pytest.approx(m["fid"])
    # no source run: a linked evaluation run holds the metrics and the report
    import mlflow

    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["augforge.kind"] == "evaluation"
    assert run.data.metrics["eval/fid"] == pytest.approx(m["fid"])
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_evaluate_logs_into_a_finished_source_run(cfg, fast_detector, tmp_path):
    from augforge.tracking import make_tracker

    t = make_tracker(True).start(run_name="train")
    run_id = t.run_id
    t.end()
    ckpt = write_fake_checkpoint(cfg, tmp_path / "last.pt", run_id=run_id)
    metrics = evaluate.evaluate_checkpoint(ckpt, metrics=["fid", "detection-rate"], n_per_class=10)
    assert set(k for k in metrics if not k.startswith(("detector_", "seconds_"))) >= {"fid", "detection_rate"}
    assert "kid" not in metrics
    import mlflow

    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["eval/fid"] == pytest.approx(metrics["fid"])
    assert run.info.status == "FINISHED"


def test_unknown_metric_fails_listing_the_valid_ones(cfg, tmp_path):
    from augforge.errors import ConfigError

    ckpt = write_fake_checkpoint(cfg, tmp_path / "last.pt")
    with pytest.raises(ConfigError, match="available: .*kid"):
        evaluate.evaluate_checkpoint(ckpt, metrics=["kdi"], track=False)


def test_training_evaluator_returns_the_configured_metric(cfg, fast_detector, fakes):
    arrays, splits = evaluate.load_data(cfg)
    real = arrays.subset(splits["val"]).image_set()
    fn = evaluate.make_training_evaluator(cfg, real, "cpu", n_per_class=8)
    assert fn.metric == "kid" and fn.direction == "minimize"
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8).train()
    first = fn(g)
    assert "kid" in first and np.isfinite(first["kid"])
    assert g.training  # mode restored
    assert fn(g)["kid"] == pytest.approx(first["kid"])  # fixed noise, fixed real subset
    cfg2 = config.apply_overrides(cfg, {"train.eval_metric": "detection_rate"})
    fn2 = evaluate.make_training_evaluator(cfg2, real, "cpu", n_per_class=8)
    assert fn2.direction == "maximize" and "detection_rate" in fn2(g)
    # c2st keeps the checkpoint the judge finds hardest to tell from real images
    fn3 = evaluate.make_training_evaluator(config.apply_overrides(cfg, {"train.eval_metric": "c2st"}), real, "cpu", n_per_class=8)
    assert fn3.direction == "minimize" and 0.0 <= fn3(g)["c2st"] <= 1.0


def _context(train: ImageSet, seed=0):
    det = registry.build("classifier", "paper-b-cnn", image_size=16, num_classes=2, widths=[8, 8, 8], feature_dim=8).eval()
    return evaluate.EvalContext(det, torch.device("cpu"), train.class_names, seed=seed, image_size=16)


def test_memorization_evaluator_flags_a_generator_that_copies(cfg):
    sets = evaluate.split_sets(*evaluate.load_data(cfg))
    train, test = sets["train"], sets["test"]
    ctx = _context(train)
    ev = registry.build("evaluator", "memorization")
    copies = train.subset(np.arange(0, len(train), 2))
    copies = ImageSet(copies.images, copies.labels, copies.class_names)
    res = ev.evaluate(train, copies, test, ctx)
    assert res.metrics["memorization_pixel"] == 1.0 and res.metrics["memorization"] == 1.0
    noise = ImageSet(np.random.default_rng(0).integers(0, 256, copies.images.shape, dtype=np.uint8), copies.labels, copies.class_names)
    res = ev.evaluate(train, noise, test, ctx)
    assert res.metrics["memorization_pixel"] == 0.0
    assert res.figures["closest_pairs_pixel"].dtype == np.uint8


def test_c2st_evaluator_pixel_judge(cfg):
    sets = evaluate.split_sets(*evaluate.load_data(cfg))
    train, test = sets["train"], sets["test"]
    ctx = _context(train)
    ev = registry.build("evaluator", "c2st", epochs=4, reference="train")
    noise = ImageSet(np.random.default_rng(1).integers(0, 256, train.images.shape, dtype=np.uint8), train.labels, train.class_names)
    m = ev.evaluate(train, noise, test, ctx).metrics
    assert m["c2st_accuracy"] > 0.9 and m["c2st_repeats"] == 3  # default: three judges, averaged
    assert m["c2st_accuracy_min"] <= m["c2st_accuracy"] <= m["c2st_accuracy_max"] and m["c2st_accuracy_std"] >= 0
    # the mean is the mean of the single-judge runs with seeds seed, seed+1, ...
    singles = []
    for r in range(2):
        ctx_r = _context(train, seed=r)
        singles.append(registry.build("evaluator", "c2st", epochs=4, reference="train", repeats=1)
                       .evaluate(train, noise, test, ctx_r).metrics["c2st_accuracy"])
    pair = registry.build("evaluator", "c2st", epochs=4, reference="train", repeats=2).evaluate(train, noise, test, _context(train)).metrics
    assert pair["c2st_accuracy"] == pytest.approx(np.mean(singles))
    with pytest.raises(ValueError, match="reference"):
        registry.build("evaluator", "c2st", reference="val")
    with pytest.raises(ValueError, match="repeats"):
        registry.build("evaluator", "c2st", repeats=0)


@pytest.mark.slow
def test_augmentation_gain_runs_settings_and_seeds(cfg, fast_detector):
    sets = evaluate.split_sets(*evaluate.load_data(cfg))
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    ctx = _context(sets["train"])
    ctx.real_val = sets["val"]
    ctx.sampler = lambda counts, seed: evaluate.sample_images(g, counts, ["nv", "mel"], seed=seed, device="cpu")
    ev = registry.build("evaluator", "augmentation-gain", seeds=2, target_count=30, synthetic_per_class=10, epochs=2)
    res = ev.evaluate(sets["train"], None, sets["test"], ctx)
    runs = res.tables["augmentation_gain_runs"]
    assert sorted(runs.setting.unique()) == ["real", "real+synthetic", "synthetic"] and len(runs) == 6
    m = res.metrics
    assert m["augmentation_gain"] == pytest.approx(m["aug_mixed_bacc_mean"] - m["aug_real_bacc_mean"])
    assert m["augmentation_synthetic_added"] == sum(max(0, 30 - n) for n in np.bincount(sets["train"].labels))


@pytest.mark.slow
def test_cli_evaluate_checkpoint_prints_the_report_path(cfg, fast_detector, tmp_path, capsys):
    from augforge.cli import main

    ckpt = write_fake_checkpoint(cfg, tmp_path / "last.pt")
    out = tmp_path / "report"
    main(["evaluate", "--checkpoint", str(ckpt), "--metrics", "fid,kid", "--n-per-class", "10", "--out", str(out), "--no-track"])
    text = capsys.readouterr().out
    assert f"report: {out / 'report.md'}" in text and "fid" in text
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(ckpt), "--run", "abc"])


@pytest.mark.slow
def test_training_keeps_best_by_the_real_evaluator_and_evaluate_run_finds_it(cfg, fast_detector, tmp_path, capsys):
    """Integration with augforge.training: train.eval_every calls make_training_evaluator (KID),
    best.pt is kept, and `augforge evaluate --run ID --best` evaluates it."""
    from augforge.checkpoint import load_checkpoint
    from augforge.cli import main
    from augforge.training import train

    run_cfg = config.apply_overrides(cfg, {
        "train.steps": 6, "train.batch_size": 8, "train.eval_every": 3, "train.checkpoint_every": 3, "train.log_every": 3,
        "train.device": "cpu", "train.out_dir": str(tmp_path / "runs"),
    })
    result = train(run_cfg)
    assert result.status == "FINISHED" and "kid" in result.metrics
    best = load_checkpoint(result.best_checkpoint)
    assert best["step"] in (3, 6)
    out = tmp_path / "best-report"
    main(["evaluate", "--run", result.run_id, "--best", "--metrics", "kid,detection-rate", "--n-per-class", "8", "--out", str(out)])
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    assert f"at step {best['step']}" in (out / "report.md").read_text()


class _TinyInception(torch.nn.Module):
    """Stands in for NVIDIA's TorchScript Inception: same call, uint8 NCHW in, features out."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # 9 features


@pytest.fixture
def inception_file(tmp_path):
    path = tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(_TinyInception()), str(path))
    return path


def test_inception_variant_uses_the_given_network_and_the_same_formulas(cfg, inception_file):
    from augforge_plugins.measures import class_balanced_weights, frechet_distance, gaussian_stats

    sets = evaluate.split_sets(*evaluate.load_data(cfg))
    train, test = sets["train"], sets["test"]
    fn = evaluate.load_inception(inception_file, "cpu")
    ctx = _context(train)
    assert "fid_inception" not in registry.build("evaluator", "fid").evaluate(train, test, test, ctx).metrics
    ctx.inception = fn
    fake = ImageSet(np.clip(test.images.astype(int) + 40, 0, 255).astype(np.uint8), test.labels, test.class_names)
    m = registry.build("evaluator", "fid").evaluate(train, fake, test, ctx).metrics
    expected = frechet_distance(*gaussian_stats(fn(train.images), class_balanced_weights(train.labels)),
                                *gaussian_stats(fn(fake.images), class_balanced_weights(fake.labels)))
    assert fn(train.images).shape == (len(train), 9)
    assert m["fid_inception"] == pytest.approx(expected) and m["fid_inception"] > m["fid_inception_real_baseline"]
    k = registry.build("evaluator", "kid", n_subsets=5, subset_size=10).evaluate(train, fake, test, ctx).metrics
    assert {"kid_inception", "kid_inception_nv", "kid_inception_real_baseline"} <= set(k)
    assert k["kid_inception"] > k["kid_inception_real_baseline"]


def test_inception_weights_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(evaluate.EvaluationError, match="no such file.*never downloads"):
        evaluate.load_inception(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a network")
    with pytest.raises(evaluate.EvaluationError, match="junk.pt: not a TorchScript file"):
        evaluate.load_inception(junk)
    ctx = evaluate.EvalContext(None, torch.device("cpu"), ["nv"])
    with pytest.raises(evaluate.EvaluationError, match="--inception-weights"):
        ctx.inception_features(ImageSet(np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1, np.int64), ["nv"]))


def test_evaluator_options_parse_and_fail_loudly():
    from augforge.errors import ConfigError

    opts = evaluate.parse_evaluator_options(["augmentation-gain.epochs=2", "augmentation-gain.seeds=3", "c2st.reference=train"])
    assert opts == {"augmentation-gain": {"epochs": 2, "seeds": 3}, "c2st": {"reference": "train"}}
    (ev,) = evaluate.select_evaluators(["augmentation-gain"], {"augmentation-gain": {"epochs": 2}})
    assert ev.epochs == 2 and ev.seeds == 3
    with pytest.raises(ConfigError, match="EVALUATOR.KEY=VALUE"):
        evaluate.parse_evaluator_options(["epochs=2"])
    with pytest.raises(ConfigError, match="not selected: kid"):
        evaluate.select_evaluators(["fid"], {"kid": {"n_subsets": 3}})
    with pytest.raises(ConfigError, match="no option.*epocs.*valid: seeds"):
        evaluate.select_evaluators(["augmentation-gain"], {"augmentation-gain": {"epocs": 2}})


def test_cli_evaluate_with_options_and_inception(cfg, fast_detector, inception_file, tmp_path, capsys):
    from augforge.cli import main

    ckpt = write_fake_checkpoint(cfg, tmp_path / "last.pt")
    out = tmp_path / "report"
    main(["evaluate", "--checkpoint", str(ckpt), "--metrics", "fid,augmentation-gain", "--n-per-class", "10",
          "--set", "augmentation-gain.seeds=1", "--set", "augmentation-gain.epochs=1", "--set", "augmentation-gain.target_count=20",
          "--inception-weights", str(inception_file), "--out", str(out), "--no-track"])
    text = capsys.readouterr().out
    assert "fid_inception" in text and "augmentation_gain" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["fid_inception"]) and np.isfinite(metrics["augmentation_gain"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluator_options"]["augmentation-gain"]["seeds"] == 1
    runs = (out / "tables" / "augmentation_gain_runs.csv").read_text().strip().splitlines()
    assert len(runs) == 1 + 3  # header + one seed x three settings
    assert str(inception_file) in (out / "report.md").read_text()
    with pytest.raises(SystemExit):
        main(["evaluate", "--checkpoint", str(ckpt), "--metrics", "fid", "--set", "kid.n_subsets=3", "--no-track"])
    assert "not selected: kid" in capsys.readouterr().err


@pytest.mark.parametrize("status", ["KILLED", "FINISHED"])
def test_evaluation_keeps_the_training_runs_status_even_when_it_fails(cfg, tmp_path, monkeypatch, status):
    """Reopening an ended training run to log eval/* must not rewrite its status: a run stopped
    at its budget stays KILLED, and a crashed evaluation does not mark the training FAILED."""
    import mlflow

    from augforge.tracking import make_tracker

    t = make_tracker(True).start(run_name="train")
    run_id = t.run_id
    t.end(status)
    ckpt = write_fake_checkpoint(cfg, tmp_path / "last.pt", run_id=run_id)
    monkeypatch.setattr(evaluate.run, "evaluate_generator", lambda *a, **k: Evaluation({"fid": 1.0}, None, None, run_id, {}))
    evaluate.evaluate_checkpoint(ckpt, metrics=["fid"])
    assert mlflow.MlflowClient().get_run(run_id).info.status == status

    def boom(*a, **k):
        raise RuntimeError("evaluator crashed")

    monkeypatch.setattr(evaluate.run, "evaluate_generator", boom)
    with pytest.raises(RuntimeError, match="crashed"):
        evaluate.evaluate_checkpoint(ckpt, metrics=["fid"])
    assert mlflow.MlflowClient().get_run(run_id).info.status == status


def test_evaluator_classifiers_start_from_their_seed_not_from_earlier_work(cfg):
    """augmentation-gain's real-only detector and c2st's judge must not depend on what ran
    before them (another generator's sampling), or two generators' baselines differ."""
    sets = evaluate.split_sets(*evaluate.load_data(cfg))
    ctx = _context(sets["train"])
    a = ctx.new_classifier(seed=3, widths=[8, 8, 8], feature_dim=8)
    torch.rand(1000)  # earlier work moving the global stream
    b = ctx.new_classifier(seed=3, widths=[8, 8, 8], feature_dim=8)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    state = torch.get_rng_state()
    ctx.new_classifier(seed=4, widths=[8, 8, 8], feature_dim=8)
    assert torch.equal(state, torch.get_rng_state())  # the caller's stream is untouched
    ev = registry.build("evaluator", "c2st", widths=[4, 4, 4], epochs=2)
    first = ev.evaluate(sets["train"], sets["test"], sets["test"], ctx).metrics["c2st_accuracy"]
    torch.rand(1000)
    assert ev.evaluate(sets["train"], sets["test"], sets["test"], ctx).metrics["c2st_accuracy"] == first
