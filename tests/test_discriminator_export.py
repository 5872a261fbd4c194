"""The discriminator exported beside its generator (`augforge export --with-discriminator`), and
realism-filtered draws without torch: the runtime and `augforge generate` keep the same images."""

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from PIL import Image

from augforge.checkpoint import save_checkpoint
from augforge.cli import main
from augforge.config import RunConfig
from augforge.export import read_metadata
from augforge.runtime import OnnxGenerator, RuntimeModelError, SyntheticLesions, discriminator_for, mix

CLASSES = ["nv", "mel"]


@pytest.fixture
def trained(fakes, tmp_path):
    """A checkpoint of a conditional fake G (+ EMA) and D on fake-blobs, 16 px."""
    from augforge import registry

    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    d = registry.build("discriminator", "fake", image_size=16, num_classes=2)
    cfg = RunConfig()
    cfg.data.name, cfg.data.image_size = "fake-blobs", 16
    cfg.dataset = {"n_per_class": 24, "size": 16}
    state = {
        "config": cfg.to_dict(), "class_names": CLASSES, "image_size": 16, "latent_dim": 8, "run_id": None, "step": 7,
        "epoch": 1, "generator": {"name": "fake", "config": g.config, "state": g.state_dict()}, "g_ema": g.state_dict(),
        "discriminator": {"name": "fake", "config": d.config, "state": d.state_dict()},
    }
    return save_checkpoint(tmp_path / "ckpt.pt", state), d.eval()


@pytest.fixture
def exported(trained, tmp_path, capsys):
    ckpt, d = trained
    main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "g.onnx"), "--with-discriminator"])
    assert "its discriminator (realism scores)" in capsys.readouterr().out
    return tmp_path / "g.onnx", d


def _torch_realism(d, images, labels):
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        return d(x, torch.as_tensor(labels, dtype=torch.long)).numpy()


def test_export_writes_the_discriminator_beside_the_generator(exported):
    g_path, d = exported
    d_path = g_path.with_name("g.discriminator.onnx")
    meta = read_metadata(g_path)
    assert meta["discriminator_file"] == d_path.name
    assert meta["discriminator_sha256"] == hashlib.sha256(d_path.read_bytes()).hexdigest()
    d_meta = read_metadata(d_path)
    assert d_meta["format"] == "augforge-discriminator/1" and json.loads(d_meta["class_names"]) == CLASSES
    assert d_meta["step"] == "7" and d_meta["image_size"] == "16" and d_meta["conditional"] == "true"
    sess = ort.InferenceSession(str(d_path), providers=["CPUExecutionProvider"])
    ins = {i.name: i.type for i in sess.get_inputs()}
    assert ins == {"image": "tensor(uint8)", "label": "tensor(int64)"} and sess.get_outputs()[0].name == "realism"
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, 9)
    got = discriminator_for(OnnxGenerator(g_path)).score(images, labels)
    assert got.shape == (9,) and np.abs(got - _torch_realism(d, images, labels)).max() < 1e-4
    # the label matters (projection term), so the graph really uses it
    assert not np.allclose(got, discriminator_for(OnnxGenerator(g_path)).score(images, 1 - labels))


def test_runtime_keeps_the_most_realistic_draws_as_generate_does(exported, tmp_path):
    g_path, d = exported
    synth = SyntheticLesions(g_path, counts={"mel": 6, "nv": 4}, seed=3, filter="realism", keep=0.5)
    assert len(synth) == 10 and synth.counts == {"mel": 6, "nv": 4} and synth.scores.shape == (10,)
    images = np.stack([synth[i][0] for i in range(len(synth))])
    # kept = the n best of ceil(n / 0.5) draws by the torch discriminator's own logits
    for name, n, rows in (("mel", 6, slice(0, 6)), ("nv", 4, slice(6, 10))):
        label = CLASSES.index(name)
        draws = SyntheticLesions(g_path, counts={name: 2 * n}, seed=3)
        pool = np.stack([draws[i][0] for i in range(2 * n)])
        best = set(np.argsort(-_torch_realism(d, pool, np.full(2 * n, label)), kind="stable")[:n].tolist())
        kept = {int(np.flatnonzero((pool == im).all((1, 2, 3)))[0]) for im in images[rows]}
        assert kept == best
    # deterministic by seed; another seed keeps other images
    again = SyntheticLesions(g_path, counts={"mel": 6, "nv": 4}, seed=3, filter="realism", keep=0.5)
    assert np.array_equal(images, np.stack([again[i][0] for i in range(10)]))
    other = SyntheticLesions(g_path, counts={"mel": 6, "nv": 4}, seed=4, filter="realism", keep=0.5)
    assert not np.array_equal(images, np.stack([other[i][0] for i in range(10)]))
    # augforge generate --filter realism (no checkpoint: the ONNX discriminator) writes the same images
    out = tmp_path / "gen"
    main(["generate", "--onnx", str(g_path), "--counts", "mel=6,nv=4", "--seed", "3", "--out", str(out),
          "--filter", "realism", "--keep", "0.5"])
    meta = pd.read_csv(out / "metadata.csv")
    written = np.stack([np.asarray(Image.open(out / "images" / f"{i}.png")) for i in meta.image_id])
    assert np.array_equal(written, images)
    assert np.allclose(meta.score_realism, synth.realism, atol=1e-6) and np.allclose(meta.score_rank, synth.scores)
    # a filtered mixing policy takes the realism ranks as its scores: ratio:0.5 adds 2 to the 4 real
    # mel (nv, the largest class, gets none) and they are the two most realistic kept mel images
    real_labels = [0] * 8 + [1] * 4
    real = [(np.zeros((16, 16, 3), np.uint8), k) for k in real_labels]
    mixed = mix(real, synth, policy="ratio:0.5:filtered", seed=0, real_labels=real_labels, class_names=CLASSES,
                scores=synth.scores)
    assert len(mixed) == 12 + 2
    assert set(mixed.synthetic_indices.tolist()) == set(np.argsort(-synth.scores[:6])[:2].tolist())


def test_realism_needs_the_right_discriminator(exported, trained, tmp_path, capsys):
    g_path, _ = exported
    d_path = g_path.with_name("g.discriminator.onnx")
    plain = tmp_path / "plain.onnx"
    main(["export", "--checkpoint", str(trained[0]), "--out", str(plain)])
    assert not (tmp_path / "plain.discriminator.onnx").exists()
    with pytest.raises(RuntimeModelError, match="augforge export --with-discriminator"):
        SyntheticLesions(plain, per_class=2, filter="realism")
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(plain), "--per-class", "2", "--out", str(tmp_path / "e"), "--filter", "realism"])
    assert exc.value.code == 2 and "exported without one; re-export with `augforge export --with-discriminator`" in capsys.readouterr().err
    with pytest.raises(RuntimeModelError, match="label and novelty need the detector"):
        SyntheticLesions(g_path, per_class=2, filter="label")
    with pytest.raises(RuntimeModelError, match=r"keep must be in \(0, 1\]"):
        SyntheticLesions(g_path, per_class=2, filter="realism", keep=1.5)
    # another run's discriminator under the expected name is refused by its digest
    saved = d_path.read_bytes()
    d_path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    with pytest.raises(RuntimeModelError, match="sha256 differs"):
        SyntheticLesions(g_path, per_class=2, filter="realism")
    d_path.unlink()
    with pytest.raises(RuntimeModelError, match="not beside it"):
        SyntheticLesions(g_path, per_class=2, filter="realism")


def test_no_discriminator_file_is_left_when_the_generator_export_fails(trained, tmp_path, monkeypatch):
    from augforge.export import ExportError, sources

    def broken(*args, **kwargs):
        raise ExportError("parity check failed (planted)")

    monkeypatch.setattr(sources, "export_onnx", broken)
    with pytest.raises(ExportError, match="planted"):
        sources.export_checkpoint(trained[0], tmp_path / "x.onnx", with_discriminator=True)
    assert not any(p.name.startswith("x.") for p in tmp_path.iterdir())


@pytest.mark.slow
def test_registered_model_carries_its_discriminator(exported, tmp_path, monkeypatch):
    from augforge.export import register_onnx

    monkeypatch.chdir(tmp_path)
    g_path, _ = exported
    register_onnx(g_path, "augforge-d-test")
    uri = "models:/augforge-d-test@champion"
    from_registry = SyntheticLesions(uri, counts={"mel": 3}, seed=1, filter="realism", keep=0.5)
    local = SyntheticLesions(g_path, counts={"mel": 3}, seed=1, filter="realism", keep=0.5)
    assert from_registry.generator.path.endswith("model.onnx")  # the generator, not the discriminator beside it
    assert np.array_equal(np.stack([from_registry[i][0] for i in range(3)]), np.stack([local[i][0] for i in range(3)]))
