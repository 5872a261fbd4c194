"""augforge.runtime: torch-free, map-style, deterministic, clear errors, mixing at a ratio."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from augforge.runtime import CHUNK, READ_AHEAD, RuntimeModelError, SyntheticLesions, mix

CLASSES = ["nv", "mel", "bcc"]


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """A conditional (3 classes) and an unconditional fake generator, exported once."""
    import torch

    from augforge import plugins, registry, testing
    from augforge.export import export_onnx

    plugins.register(testing, name="augforge.testing")
    try:
        out = tmp_path_factory.mktemp("onnx")
        torch.manual_seed(0)
        g = registry.build("generator", "fake", image_size=16, num_classes=3, latent_dim=8)
        g0 = registry.build("generator", "fake", image_size=16, num_classes=0, latent_dim=8)
        files = {
            "cond": export_onnx(g, out / "cond.onnx", {"class_names": CLASSES, "dataset": "fake-blobs"}, exporter="torchscript"),
            "uint8": export_onnx(g, out / "u8.onnx", {"class_names": CLASSES}, uint8=True, exporter="torchscript"),
            "uncond": export_onnx(g0, out / "uncond.onnx", {"class_names": ["mel"]}, exporter="torchscript"),
        }
        plain = onnx.helper.make_model(onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["z"], ["image"])], "plain",
            [onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [None, 8])],
            [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [None, 8])],
        ), opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
        onnx.save(plain, out / "plain.onnx")
        files["plain"] = out / "plain.onnx"
        yield files
    finally:
        plugins.get_plugin_manager().unregister(name="augforge.testing")
        plugins.reset()


def test_import_does_not_pull_in_torch(onnx_files):
    code = textwrap.dedent(f"""
        import sys
        import augforge.runtime as rt
        assert "torch" not in sys.modules, "import"
        ds = rt.SyntheticLesions({str(onnx_files['cond'])!r}, per_class=2, seed=0)
        image, label = ds[0]
        list(ds)
        rt.mix([(image, 0)] * 4, ds, 0.5, seed=0, class_names=ds.class_names)[0]
        bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
        assert not bad, bad[:5]
        print("ok", image.shape)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ok (16, 16, 3)" in res.stdout


def test_items_labels_and_order(onnx_files):
    ds = SyntheticLesions(onnx_files["cond"], counts={"mel": 70, "bcc": 3}, seed=1)
    assert len(ds) == 73 and ds.class_names == CLASSES and ds.counts == {"mel": 70, "bcc": 3}
    image, label = ds[0]
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert label == 1 and ds[72][1] == 2  # class index in class_names; items ordered as given
    assert [lbl for _, lbl in ds] == [1] * 70 + [2] * 3
    assert ds[-1][1] == 2
    with pytest.raises(IndexError, match="out of range for 73"):
        ds[73]
    assert len(list(iter(ds))) == 73
    batches = list(ds.batches(32))
    assert [len(b[0]) for b in batches] == [32, 32, 9]
    assert np.array_equal(batches[0][0][5], ds[5][0])


def test_deterministic_by_seed_whatever_the_access_order(onnx_files):
    a = SyntheticLesions(onnx_files["cond"], per_class=CHUNK + 5, seed=7)
    b = SyntheticLesions(onnx_files["cond"], per_class=CHUNK + 5, seed=7)
    order = np.random.default_rng(0).permutation(len(a))[:40]
    for i in order:
        assert np.array_equal(a[int(i)][0], b[int(i)][0])
    c = SyntheticLesions(onnx_files["cond"], per_class=CHUNK + 5, seed=8)
    assert not np.array_equal(a[0][0], c[0][0])
    # the first N images of a class do not depend on the other classes' counts
    d = SyntheticLesions(onnx_files["cond"], counts={"bcc": 3, "nv": 2}, seed=7)
    assert np.array_equal(d[0][0], a[2 * (CHUNK + 5)][0]) and np.array_equal(d[3][0], a[0][0])


@pytest.mark.slow
def test_dataloader_workers_see_the_same_items(onnx_files):
    import torch

    ds = SyntheticLesions(onnx_files["cond"], per_class=6, seed=3, output="float")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    assert x.shape == (18, 3, 16, 16) and x.dtype == torch.float32
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert np.allclose(x[7].numpy(), ds[7][0]) and y.tolist() == [0] * 6 + [1] * 6 + [2] * 6


def test_transform_and_uint8_model(onnx_files):
    f = SyntheticLesions(onnx_files["cond"], per_class=2, seed=0, transform=lambda im: im[:8])
    assert f[0][0].shape == (8, 16, 3)
    u = SyntheticLesions(onnx_files["uint8"], per_class=2, seed=0)
    c = SyntheticLesions(onnx_files["cond"], per_class=2, seed=0)
    assert np.abs(u[3][0].astype(int) - c[3][0].astype(int)).max() <= 1  # same model, uint8 head


def test_unconditional_model(onnx_files):
    ds = SyntheticLesions(onnx_files["uncond"], per_class=3, seed=0)
    assert ds.class_names == ["mel"] and len(ds) == 3 and ds[0][1] == 0
    with pytest.raises(RuntimeModelError, match="makes only: mel"):
        SyntheticLesions(onnx_files["uncond"], counts={"bcc": 1})


def test_clear_errors(onnx_files):
    with pytest.raises(RuntimeModelError, match="unknown class 'melanoma'; this generator makes: nv, mel, bcc"):
        SyntheticLesions(onnx_files["cond"], counts={"melanoma": 5})
    with pytest.raises(RuntimeModelError, match="no augforge metadata"):
        SyntheticLesions(onnx_files["plain"], per_class=1)
    with pytest.raises(RuntimeModelError, match="does not exist"):
        SyntheticLesions("nowhere.onnx", per_class=1)
    with pytest.raises(RuntimeModelError, match="cannot load"):
        SyntheticLesions(__file__, per_class=1)
    with pytest.raises(RuntimeModelError, match="exactly one of"):
        SyntheticLesions(onnx_files["cond"])
    with pytest.raises(RuntimeModelError, match="integer >= 0"):
        SyntheticLesions(onnx_files["cond"], counts={"mel": -1})
    with pytest.raises(RuntimeModelError, match="output must be"):
        SyntheticLesions(onnx_files["cond"], per_class=1, output="png")
    gen = SyntheticLesions(onnx_files["cond"], per_class=1).generator
    z = np.zeros((1, 8), np.float32)
    with pytest.raises(RuntimeModelError, match="label 3 out of range; valid labels: 0=nv, 1=mel, 2=bcc"):
        gen.sample([3], z)
    with pytest.raises(RuntimeModelError, match="label -1 out of range"):
        gen.sample([-1], z)
    with pytest.raises(RuntimeModelError, match=r"z must be float32 \[n, 8\]"):
        gen.sample([0], np.zeros((1, 5), np.float32))
    with pytest.raises(RuntimeModelError, match="label_map lacks class"):
        SyntheticLesions(onnx_files["cond"], per_class=1, label_map={"mel": 0})


def test_mix_at_a_ratio(onnx_files):
    real = [(np.full((16, 16, 3), i, np.uint8), 0) for i in range(20)]
    synth = SyntheticLesions(onnx_files["cond"], counts={"mel": 10, "bcc": 10}, seed=0,
                             label_map={"mel": 5, "bcc": 6})
    m = mix(real, synth, ratio=0.5, seed=1)
    assert len(m) == 30 and m.n_synthetic == 10
    flags = [m.is_synthetic(i) for i in range(len(m))]
    assert sum(flags) == 10 and flags != sorted(flags)  # shuffled in, not appended
    labels = [m[i][1] for i in range(len(m))]
    assert sorted(set(labels)) in ([0, 5, 6], [0, 5], [0, 6])
    assert all(lbl in (5, 6) for lbl, s in zip(labels, flags) if s)
    again = mix(real, synth, ratio=0.5, seed=1)
    assert all(np.array_equal(m[i][0], again[i][0]) for i in range(len(m)))
    assert len(mix(real, synth, ratio=0.0, seed=0)) == 20
    with pytest.raises(RuntimeModelError, match="needs 40 synthetic items but the sampler holds 20"):
        mix(real, synth, ratio=2.0)
    with pytest.raises(RuntimeModelError, match="ratio must be"):
        mix(real, synth, ratio=-1)


def test_mix_by_policy_is_the_set_the_policy_study_measured(onnx_files):
    from augforge_runtime import policies

    real_labels = [0] * 12 + [1] * 4 + [2] * 2  # nv, mel, bcc: imbalanced like HAM10000
    real = [(np.full((16, 16, 3), i, np.uint8), lbl) for i, lbl in enumerate(real_labels)]
    synth = SyntheticLesions(onnx_files["cond"], per_class=12, seed=0)
    for policy in ("balanced", "ratio:0.5", "top-up:6", "pretrain-synthetic:ratio:1"):
        m = mix(real, synth, policy=policy, seed=3, real_labels=real_labels, class_names=["nv", "mel", "bcc"])
        want = policies.mix(real_labels, synth.labels, policy, seed=3, num_classes=3)  # what the evaluator mixes
        assert np.array_equal(m.synthetic_indices, want), policy
        counts = np.bincount(synth.labels[want], minlength=3)
        assert list(counts) == list(policies.parse_policy(policy).synthetic_counts(np.bincount(real_labels, minlength=3)))
    assert list(np.bincount(synth.labels[mix(real, synth, policy="balanced", seed=0, real_labels=real_labels,
                                              class_names=["nv", "mel", "bcc"]).synthetic_indices], minlength=3)) == [0, 8, 10]
    scores = np.arange(len(synth), dtype=float)  # filtered: the highest scores of each class
    m = mix(real, synth, policy="top-up:6:filtered", seed=0, real_labels=real_labels, scores=scores, class_names=["nv", "mel", "bcc"])
    assert list(m.synthetic_indices) == [22, 23, 32, 33, 34, 35]
    weighted = mix(real, synth, policy="ratio:0.5:weight=0.25", seed=0, real_labels=real_labels, class_names=["nv", "mel", "bcc"])
    assert {weighted.weight(i) for i in range(len(weighted))} == {1.0, 0.25}
    alone = mix(real, synth, policy="none", seed=0, real_labels=real_labels, class_names=["nv", "mel", "bcc"])
    assert len(alone) == len(real) and len(alone.synthetic_indices) == 0  # the study's "real only"
    with pytest.raises(RuntimeModelError, match="needs the real labels: pass real_labels"):
        mix(real, synth, policy="balanced", class_names=["nv", "mel", "bcc"])
    with pytest.raises(RuntimeModelError, match="give exactly one of ratio=R"):
        mix(real, synth, ratio=0.5, policy="balanced")
    with pytest.raises(RuntimeModelError, match="is filtered: pass the synthetic images' scores"):
        mix(real, synth, policy="balanced:filtered", real_labels=real_labels, class_names=["nv", "mel", "bcc"])


@pytest.mark.slow
def test_downstream_example_trains_on_mixed_data(onnx_files, tmp_path):
    """examples/train_downstream.py: albumentations + a tiny CNN on real images mixed with synthetic ones."""
    import importlib.util
    from pathlib import Path

    from augforge.export.generate import generate_images

    real = tmp_path / "real"  # a HAM10000-layout folder standing in for real data
    generate_images(onnx_files["cond"], real, per_class=10, seed=3, progress=False)
    path = Path(__file__).resolve().parents[1] / "examples" / "train_downstream.py"
    spec = importlib.util.spec_from_file_location("train_downstream", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = example.main(["--onnx", str(onnx_files["cond"]), "--real", str(real), "--epochs", "1", "--ratio", "0.5",
                        "--batch-size", "8"])
    assert out["n_real"] == 24 and out["n_synthetic"] == 12
    assert 0.0 <= out["balanced_accuracy"] <= 1.0


def test_shuffled_pass_renders_each_image_at_most_twice_within_a_bounded_cache(onnx_files):
    """2,000 items read in a shuffled order, one by one and in DataLoader-style batches, with a
    cache far smaller than the data: <= 2 x 2,000 images rendered, the same pixels as in order."""
    n = 2000
    counts = {"nv": 700, "mel": 700, "bcc": 600}
    seq = SyntheticLesions(onnx_files["cond"], counts=counts, seed=4, cache_mb=0)
    in_order = np.stack([seq[i][0] for i in range(n)])
    assert seq.rendered == n  # read-ahead blocks, each image once
    image_bytes = in_order[0].nbytes
    cache_mb = 300 * image_bytes / 2**20  # room for 300 of the 2,000 images
    order = np.random.default_rng(0).permutation(n)

    one = SyntheticLesions(onnx_files["cond"], counts=counts, seed=4, cache_mb=cache_mb)
    got = np.stack([one[int(i)][0] for i in order])
    assert one.rendered <= 2 * n, one.rendered
    assert np.array_equal(got, in_order[order])  # the same image whatever the access order
    assert one._cached <= one.cache_bytes and len(one._cache) <= 300

    batched = SyntheticLesions(onnx_files["cond"], counts=counts, seed=4, cache_mb=cache_mb)
    items = [item for start in range(0, n, 32) for item in batched.__getitems__(order[start : start + 32].tolist())]
    assert batched.rendered <= 2 * n, batched.rendered
    assert np.array_equal(np.stack([im for im, _ in items]), in_order[order])
    assert [lbl for _, lbl in items] == [int(seq.labels[i]) for i in order]


def test_cache_reuses_images_and_read_ahead_is_bounded(onnx_files):
    ds = SyntheticLesions(onnx_files["cond"], per_class=40, seed=0)
    ds[5]
    assert ds.rendered == 1  # random access: just that image
    ds[6]
    assert ds.rendered == 1 + READ_AHEAD  # reading in order: the next block in one call
    before = ds.rendered
    for i in range(6, 6 + READ_AHEAD):
        ds[i]
    ds[5]
    assert ds.rendered == before  # all cached
    import pickle

    copy = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets: no cached images
    assert len(copy._cache) == 0 and np.array_equal(copy[5][0], ds[5][0])
    with pytest.raises(RuntimeModelError, match="cache_mb must be"):
        SyntheticLesions(onnx_files["cond"], per_class=1, cache_mb=-1)


def test_batching_does_not_change_a_pixel(onnx_files):
    """Why per-item rendering is deterministic: the exported graph maps each (z, label) row on its
    own, so an image rendered alone equals the same image rendered inside any batch."""
    gen = SyntheticLesions(onnx_files["cond"], per_class=1).generator
    labels = np.arange(37) % 3
    z = np.random.default_rng(0).standard_normal((37, 8)).astype(np.float32)
    sess = gen._load_session()
    whole = sess.run(["image"], {"z": z, "label": labels})[0]
    alone = np.concatenate([sess.run(["image"], {"z": z[i : i + 1], "label": labels[i : i + 1]})[0] for i in range(37)])
    assert np.array_equal(whole, alone)


def test_providers(onnx_files):
    ds = SyntheticLesions(onnx_files["cond"], per_class=1, providers=["CPUExecutionProvider"])
    assert ds.generator.providers == ["CPUExecutionProvider"] and ds[0][0].shape == (16, 16, 3)
    with pytest.raises(RuntimeModelError, match=r"none of providers \['NopeExecutionProvider'\] is available.*CPUExecutionProvider"):
        SyntheticLesions(onnx_files["cond"], per_class=1, providers=["NopeExecutionProvider"])


def test_labels_are_checked_before_the_graph(onnx_files):
    gen = SyntheticLesions(onnx_files["cond"], per_class=1).generator
    z = np.zeros((1, 8), np.float32)
    with pytest.raises(RuntimeModelError, match="whole numbers"):
        gen.sample([1.5], z)
    with pytest.raises(RuntimeModelError, match="label -2 out of range; valid labels: 0=nv, 1=mel, 2=bcc"):
        gen.render(0, [-2], [0])
    assert gen.sample(np.array([2.0]), z).shape == (1, 16, 16, 3)  # a whole float is an index


class _Folder:
    """A stand-in for a downstream dataset with its own vocabulary (torchvision's ``classes``)."""

    def __init__(self, classes, size=16, n=10):
        self.classes, self.size, self.n = classes, size, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.zeros((self.size, self.size, 3), np.uint8), i % len(self.classes)


def test_mix_checks_vocabularies_and_sizes(onnx_files):
    synth = SyntheticLesions(onnx_files["cond"], counts={"mel": 10, "bcc": 10}, seed=0)
    # same names, different order: refused with the label_map that fixes it
    with pytest.raises(RuntimeModelError, match=r"synthetic 'mel' is label 1 but the real dataset's label 1 is 'bcc'.*"
                                                r"label_map=\{'mel': 2, 'bcc': 1\}"):
        mix(_Folder(["nv", "bcc", "mel"]), synth, ratio=0.5)
    fixed = SyntheticLesions(onnx_files["cond"], counts={"mel": 10, "bcc": 10}, seed=0, label_map={"mel": 2, "bcc": 1})
    m = mix(_Folder(["nv", "bcc", "mel"]), fixed, ratio=0.5)
    assert {m[i][1] for i in range(len(m)) if m.is_synthetic(i)} <= {1, 2}
    # the real vocabulary lacks a synthetic class
    with pytest.raises(RuntimeModelError, match="the real data have no class 'bcc'"):
        mix(_Folder(["nv", "mel"]), synth, ratio=0.5)
    with pytest.raises(RuntimeModelError, match="outside the real vocabulary 0..1"):
        mix(_Folder(["nv", "mel"]), fixed, ratio=0.5)
    # no vocabulary anywhere and no label_map: refused; class_names= supplies it
    with pytest.raises(RuntimeModelError, match="cannot check that real and synthetic labels"):
        mix([(np.zeros((16, 16, 3), np.uint8), 0)] * 4, synth, ratio=0.5)
    assert len(mix([(np.zeros((16, 16, 3), np.uint8), 0)] * 4, synth, ratio=0.5, class_names=CLASSES)) == 6
    # sizes: 32-px real images with 16-px synthetic ones
    with pytest.raises(RuntimeModelError, match=r"image sizes differ: real items are \(32, 32, 3\), synthetic items are \(16, 16, 3\)"):
        mix(_Folder(CLASSES, size=32), synth, ratio=0.5)


def test_mixed_batches_render_synthetic_items_together(onnx_files):
    synth = SyntheticLesions(onnx_files["cond"], counts={"mel": 30, "bcc": 30}, seed=0)
    m = mix(_Folder(CLASSES, n=40), synth, ratio=1.0)
    idx = list(range(len(m)))
    batch = m.__getitems__(idx)
    assert synth.rendered == 40  # only the 40 drawn synthetic items, not all 60
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(batch, (m[i] for i in idx)))


@pytest.mark.slow
def test_runtime_installs_alone_in_a_clean_venv(onnx_files, tmp_path):
    """`pip install ./runtime` into a fresh venv: no torch, no mlflow, `pip check` clean, and it samples."""
    root = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", None) or "python3"
    subprocess.run([base, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    import shutil

    src = shutil.copytree(root / "runtime", tmp_path / "runtime", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # installed from a copy: setuptools builds in the source folder, which must stay clean
    res = subprocess.run([py, "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = subprocess.run([py, "-m", "pip", "check"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    code = textwrap.dedent(f"""
        import importlib.util, sys
        import augforge_runtime as rt
        for name in ("torch", "mlflow", "augforge"):
            assert importlib.util.find_spec(name) is None, name + " is installed"
        ds = rt.SyntheticLesions({str(onnx_files['cond'])!r}, per_class=3, seed=0)
        image, label = ds[4]
        assert "torch" not in sys.modules
        try:
            rt.SyntheticLesions("models:/x@champion", per_class=1)
        except rt.RuntimeModelError as exc:
            assert "need mlflow" in str(exc), exc
        else:
            raise AssertionError("models:/ without mlflow was accepted")
        print("ok", image.shape, label, len(ds))
    """)
    res = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok (16, 16, 3) 1 9" in res.stdout
