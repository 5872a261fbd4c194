"""augforge generate: PNGs + HAM10000-style metadata.csv, reproducible by seed, near-copy dropping."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from augforge.export import generate as generate_mod
from augforge.cli import main
from augforge.runtime import SyntheticLesions

HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_writes_ham10000_layout_reproducibly(onnx_file, tmp_path, capsys):
    main(["generate", "--onnx", str(onnx_file), "--counts", "mel=70,nv=3", "--out", str(tmp_path / "a"), "--seed", "5"])
    assert "wrote 73 images (mel=70, nv=3)" in capsys.readouterr().out
    main(["generate", "--onnx", str(onnx_file), "--counts", "mel=70,nv=3", "--out", str(tmp_path / "b"), "--seed", "5"])
    main(["generate", "--onnx", str(onnx_file), "--counts", "mel=70,nv=3", "--out", str(tmp_path / "c"), "--seed", "6"])
    a, b, c = (tmp_path / x for x in "abc")
    assert _digest(a) == _digest(b)  # same seed: byte-identical files
    assert _digest(a) != _digest(c)

    meta = pd.read_csv(a / "metadata.csv")
    assert list(meta.columns) == HAM_COLUMNS
    assert meta["dx"].value_counts().to_dict() == {"mel": 70, "nv": 3}
    assert (meta["dx_type"] == "synthetic").all() and meta["age"].isna().all()
    assert (meta["sex"] == "unknown").all() and (meta["localization"] == "unknown").all()
    assert meta["image_id"].is_unique and meta["lesion_id"].is_unique
    for image_id in meta["image_id"]:
        with Image.open(a / "images" / f"{image_id}.png") as im:
            assert im.mode == "RGB" and im.size == (16, 16)
    info = json.loads((a / "generation.json").read_text())
    assert info["seed"] == 5 and info["counts"] == {"mel": 70, "nv": 3}

    # the same images as the runtime sampler with the same seed
    ds = SyntheticLesions(onnx_file, counts={"mel": 70, "nv": 3}, seed=5)
    first = np.asarray(Image.open(a / "images" / f"{meta['image_id'][0]}.png"))
    assert np.array_equal(first, ds[0][0])


def test_existing_ham10000_code_reads_it(onnx_file, tmp_path):
    from augforge import registry

    generate_mod.generate_images(onnx_file, tmp_path / "syn", per_class=4, seed=0, progress=False)
    ds = registry.build("dataset", "ham10000", root=str(tmp_path / "syn" / "metadata.csv"))
    rec = ds.records()
    assert len(rec) == 8 and sorted(rec["label"].unique()) == ["mel", "nv"]
    assert ds.load_image(rec.iloc[0]).shape == (16, 16, 3)


def test_errors(onnx_file, tmp_path, capsys):
    out = str(tmp_path / "x")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(onnx_file), "--counts", "melanoma=3", "--out", out])
    assert exc.value.code == 2 and "unknown class 'melanoma'; this generator makes: nv, mel" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--onnx", str(onnx_file), "--counts", "mel=3", "--per-class", "2", "--out", out])
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(onnx_file), "--counts", "mel=lots", "--out", out])
    assert "expected CLASS=N" in capsys.readouterr().err
    main(["generate", "--onnx", str(onnx_file), "--per-class", "1", "--out", out])
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(onnx_file), "--per-class", "1", "--out", out])
    assert "not empty" in capsys.readouterr().err
    main(["generate", "--onnx", str(onnx_file), "--per-class", "2", "--out", out, "--overwrite"])
    assert len(pd.read_csv(tmp_path / "x" / "metadata.csv")) == 4


def test_drop_near_copies_replaces_flagged_images(onnx_file, tmp_path, monkeypatch):
    calls = []

    def fake_check(onnx_path, metadata, train_data, quantile):
        def check(images):
            calls.append(len(images))
            flags = np.zeros(len(images), bool)
            if len(calls) == 1:
                flags[:3] = True  # the first three draws are "copies"
            return flags
        return check

    monkeypatch.setattr(generate_mod, "_near_copy_check", fake_check)
    res = generate_mod.generate_images(onnx_file, tmp_path / "d", counts={"mel": 10}, seed=0, drop_near_copies=True,
                                       progress=False)
    assert res.counts == {"mel": 10} and res.dropped == {"mel": 3}
    assert calls == [10, 3]  # three replacements drawn
    assert len(pd.read_csv(tmp_path / "d" / "metadata.csv")) == 10
    plain = SyntheticLesions(onnx_file, counts={"mel": 13}, seed=0)
    kept = np.asarray(Image.open(sorted((tmp_path / "d" / "images").iterdir())[0]))
    assert np.array_equal(kept, plain[3][0])  # draws 0-2 dropped, draw 3 is the first kept


def test_drop_near_copies_on_real_training_data(onnx_file, tmp_path):
    """The real check: the training split rebuilt from the model's metadata (fake-blobs)."""
    res = generate_mod.generate_images(onnx_file, tmp_path / "r", per_class=5, seed=0, drop_near_copies=True,
                                       progress=False)
    assert res.n_images == 10 and set(res.dropped) == {"nv", "mel"}


def test_drop_near_copies_gives_up_on_a_memorising_model(onnx_file, tmp_path, monkeypatch):
    monkeypatch.setattr(generate_mod, "_near_copy_check", lambda *a: (lambda images: np.ones(len(images), bool)))
    with pytest.raises(Exception, match="memorises this class"):
        generate_mod.generate_images(onnx_file, tmp_path / "m", counts={"mel": 2}, drop_near_copies=True, progress=False)


# ---- --filter realism,label,novelty ---------------------------------------------------------


@pytest.fixture
def fast_detector(monkeypatch):
    from augforge import registry

    cls = registry.get("classifier", "paper-b-cnn")
    monkeypatch.setattr(cls, "recipe", {**cls.recipe, "epochs": 2, "batch_size": 16, "patience": 1, "epoch_size": 0})


@pytest.fixture
def checkpoint_with_d(fakes, tmp_path):
    import torch

    from augforge import registry
    from augforge.checkpoint import save_checkpoint

    torch.manual_seed(1)
    d = registry.build("discriminator", "fake", image_size=16, num_classes=2)
    return save_checkpoint(tmp_path / "run.pt", {"image_size": 16, "discriminator": {"name": "fake", "config": d.config,
                                                                                         "state": d.state_dict()}})


@pytest.mark.slow
def test_filter_keeps_the_best_half_and_writes_scores(onnx_file, checkpoint_with_d, fast_detector, tmp_path, capsys):
    out = tmp_path / "f"
    main(["generate", "--onnx", str(onnx_file), "--counts", "mel=6,nv=4", "--out", str(out), "--seed", "2",
          "--filter", "realism,label,novelty", "--keep", "0.5", "--checkpoint", str(checkpoint_with_d)])
    assert "filtered by realism,label,novelty: kept the best 0.5" in capsys.readouterr().out
    meta = pd.read_csv(out / "metadata.csv")
    assert list(meta.columns) == HAM_COLUMNS + ["score_realism", "score_label", "score_novelty", "score_rank"]
    assert meta["dx"].value_counts().to_dict() == {"mel": 6, "nv": 4}
    assert meta["score_label"].between(0, 1).all() and (meta["score_novelty"] > 0).all()
    # kept: 6 distinct of the first 12 mel draws (ceil(6 / 0.5))
    ds = SyntheticLesions(onnx_file, counts={"mel": 12}, seed=2)
    draws = np.stack([ds[i][0] for i in range(12)])
    kept = [np.asarray(Image.open(out / "images" / f"{i}.png")) for i in meta.image_id[meta.dx == "mel"]]
    assert len({int(np.flatnonzero((draws == k).all((1, 2, 3)))[0]) for k in kept}) == 6
    # same call, same files
    main(["generate", "--onnx", str(onnx_file), "--counts", "mel=6,nv=4", "--out", str(tmp_path / "g"), "--seed", "2",
          "--filter", "realism,label,novelty", "--keep", "0.5", "--checkpoint", str(checkpoint_with_d)])
    assert _digest(out) == _digest(tmp_path / "g")
    assert json.loads((out / "generation.json").read_text())["filter"] == ["realism", "label", "novelty"]


def test_filter_by_novelty_keeps_the_farthest_draws(onnx_file, tmp_path):
    from augforge.evaluation import load_data, onnx_config, split_sets
    from augforge.evaluation.filtering import novelty

    res = generate_mod.generate_images(onnx_file, tmp_path / "v", counts={"nv": 5}, seed=1, filters=("novelty",), keep=0.25,
                                       progress=False)
    assert res.counts == {"nv": 5}
    cfg, _ = onnx_config(onnx_file, SyntheticLesions(onnx_file, per_class=1).generator.metadata)
    train = split_sets(*load_data(cfg), ("train",))["train"].images
    ds = SyntheticLesions(onnx_file, counts={"nv": 20}, seed=1)
    dist, _, _ = novelty(np.stack([ds[i][0] for i in range(20)]), train, threshold=0.0)
    meta = pd.read_csv(tmp_path / "v" / "metadata.csv")
    assert sorted(meta.score_novelty) == pytest.approx(sorted(np.sort(dist)[-5:]))


def test_filter_drops_planted_near_copies(onnx_file, tmp_path, monkeypatch):
    """Exact copies of training images planted into the draws never survive filtering."""
    from augforge.evaluation import load_data, onnx_config, split_sets
    from augforge.runtime import OnnxGenerator

    gen = OnnxGenerator(onnx_file)
    cfg, _ = onnx_config(onnx_file, gen.metadata)
    train = split_sets(*load_data(cfg), ("train",))["train"].images
    real_render = OnnxGenerator.render

    def render(self, seed, labels, ordinals, **kw):
        images = real_render(self, seed, labels, ordinals, **kw)
        images[::2] = train[: len(images[::2])]  # every second draw copies a training image
        return images

    monkeypatch.setattr(OnnxGenerator, "render", render)
    res = generate_mod.generate_images(onnx_file, tmp_path / "n", counts={"mel": 4}, seed=0, filters=("novelty",),
                                       keep=0.5, progress=False)
    assert res.dropped == {"mel": 4}  # 4 of the 8 draws were copies
    for p in (tmp_path / "n" / "images").iterdir():
        img = np.asarray(Image.open(p))
        assert not (train == img).all((1, 2, 3)).any()


def test_filter_errors_name_the_fix(onnx_file, tmp_path, capsys):
    out = str(tmp_path / "e")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(onnx_file), "--per-class", "2", "--out", out, "--filter", "realism"])
    assert exc.value.code == 2 and "re-export with `augforge export --with-discriminator`, or pass --checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--onnx", str(onnx_file), "--per-class", "2", "--out", out, "--filter", "beauty"])
    assert "valid: realism, label, novelty" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["generate", "--onnx", str(onnx_file), "--per-class", "2", "--out", out, "--keep", "0.5"])
    assert "only with --filter" in capsys.readouterr().err
