"""Creating a Turing-test study: balanced picks, blinding down to the bytes, CLI errors."""

import io
import re
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy.stats import ks_2samp

from augforge.cli import cli
from augforge.errors import AugforgeError, DataError
from augforge.turing import sample
from augforge.turing import items as turing_items
from augforge.turing import study as st


def key(path: Path) -> dict[str, tuple[str, str]]:
    con = sqlite3.connect(path / st.DB_NAME)
    return {i: (o, c) for i, o, c in con.execute("SELECT id, origin, class FROM images")}


def byte_features(data: bytes) -> dict:
    """Everything about a file except its pixels."""
    chunks = turing_items.png_chunks(data)
    ihdr_at = 8 + 8
    return {
        "size": len(data),
        "signature": data[:8],
        "chunk_types": tuple(t for t, _ in chunks),
        "chunk_lengths": tuple(n for _, n in chunks),
        "ihdr": data[ihdr_at : ihdr_at + 13],
        "zlib_header": data[8 + 25 + 8 : 8 + 25 + 8 + 2],
    }


def compressed_sizes(study: Path) -> dict[str, list[int]]:
    """Sizes of the study's images re-saved as optimised (compressed) PNGs, by origin."""
    k = key(study)
    sizes = {"real": [], "generated": []}
    for p in (study / st.IMAGE_DIR).iterdir():
        buf = io.BytesIO()
        Image.open(p).save(buf, "PNG", optimize=True)
        sizes[k[p.stem][0]].append(len(buf.getvalue()))
    return sizes


@pytest.fixture
def folders(tmp_path):
    real = sample.write_real_folder(tmp_path / "real", ("mel", "bcc", "nv"), 12, seed=0)
    gen = sample.write_generated_folder(tmp_path / "gen", ("mel", "bcc"), 12, seed=0)
    return real, gen


def test_study_is_balanced_and_blinded(tmp_path, folders):
    real, gen = folders
    created = st.create_study(tmp_path / "study", turing_items.folder_items(real), turing_items.folder_items(gen), per_class=10, seed=3)
    assert created.classes == ["bcc", "mel"]  # the classes both sources have
    assert created.size == 64  # the smallest side: nothing is upscaled
    k = key(created.path)
    assert Counter(k.values()) == {(o, c): 10 for o in ("real", "generated") for c in ("bcc", "mel")}

    served = sorted((created.path / st.IMAGE_DIR).iterdir())
    assert {p.suffix for p in served} == {".png"} and len(served) == 40
    assert {p.stem for p in served} == set(k)
    groups = {"real": [], "generated": []}
    for p in served:
        data = p.read_bytes()
        groups[k[p.stem][0]].append(byte_features(data))
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            assert not im.info and not im.getexif()  # no text, gamma, dpi, EXIF
    real_f, gen_f = groups["real"], groups["generated"]
    # file sizes: identical, so no test can separate them
    assert ks_2samp([f["size"] for f in real_f], [f["size"] for f in gen_f]).statistic == 0.0
    for name in ("size", "signature", "chunk_types", "chunk_lengths", "ihdr", "zlib_header"):
        values = {f[name] for f in real_f + gen_f}
        assert len(values) == 1, f"{name} differs between files: {values}"
    assert byte_features(served[0].read_bytes())["chunk_types"] == ("IHDR", "IDAT", "IEND")
    # ids: one pattern, random, unrelated to origin; one modification time for every file
    assert all(st.ID_RE.match(i) for i in k)
    assert len({p.stat().st_mtime_ns for p in served}) == 1
    # the key lives only in the database, next to (not inside) the served folder
    assert {p.name for p in created.path.iterdir()} - {"study.sqlite-wal", "study.sqlite-shm"} == {st.DB_NAME, st.IMAGE_DIR}


def test_size_check_has_teeth(tmp_path, folders):
    """The same images as *compressed* PNGs would be told apart by file size alone."""
    real, gen = folders
    created = st.create_study(tmp_path / "study", turing_items.folder_items(real), turing_items.folder_items(gen), per_class=12, seed=3)
    sizes = compressed_sizes(created.path)
    assert ks_2samp(sizes["real"], sizes["generated"]).pvalue < 0.01


def test_jpeg_pass_and_explicit_size(tmp_path, folders):
    real, gen = folders
    created = st.create_study(
        tmp_path / "s", turing_items.folder_items(real), turing_items.folder_items(gen), per_class=3, classes=["mel"], size=48, jpeg_quality=80
    )
    assert created.size == 48 and len(key(created.path)) == 6
    sizes = {p.stat().st_size for p in (created.path / st.IMAGE_DIR).iterdir()}
    assert len(sizes) == 1


def test_real_images_from_a_dataset_plugin(tmp_path, fakes):
    from augforge import config

    gen = sample.write_generated_folder(tmp_path / "gen", ("nv", "mel"), 5)
    cfg = config.resolve(overrides={"data.name": "fake-blobs", "dataset.n_per_class": 8, "dataset.size": 40})
    items = turing_items.dataset_items(cfg)
    assert {it.label for it in items} == {"nv", "mel"}
    created = st.create_study(tmp_path / "s", items, turing_items.folder_items(gen), per_class=4, seed=1)
    assert created.size == 40
    real_sources = [s for (s,) in sqlite3.connect(created.path / st.DB_NAME).execute("SELECT source FROM images WHERE origin = 'real'")]
    assert len(real_sources) == 8 and all(s.startswith("fake-blobs:FAKE_") for s in real_sources)
    # one image per lesion group while groups last (fake-blobs: 2 images per group)
    groups = [s.rsplit("_", 1)[0] + str(int(s.rsplit("_", 1)[1]) // 2) for s in real_sources]
    assert len(set(groups)) == len(groups)


def test_class_subfolders_and_picks_are_seeded(tmp_path):
    root = tmp_path / "byclass"
    for c in ("melanoma", "BCC"):  # folder names go through augforge.data's class synonyms
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(root / c / f"{i}.png")
    items = turing_items.folder_items(root)
    assert Counter(it.label for it in items) == {"mel": 5, "bcc": 5}
    a = turing_items.pick(items, ["mel"], 3, np.random.default_rng(7), "x")
    b = turing_items.pick(items, ["mel"], 3, np.random.default_rng(7), "x")
    assert [i.source for i in a] == [i.source for i in b]
    (root / "freckle").mkdir()
    Image.new("RGB", (8, 8)).save(root / "freckle" / "x.png")
    with pytest.raises(DataError, match="unknown class 'freckle'; valid: nv, mel"):
        turing_items.folder_items(root)


def test_bad_inputs_fail_with_clear_messages(tmp_path, folders):
    real, gen = folders
    r, g = turing_items.folder_items(real), turing_items.folder_items(gen)
    with pytest.raises(DataError, match="class 'nv' missing from the generated images"):
        st.create_study(tmp_path / "a", r, g, per_class=2, classes=["nv"])
    with pytest.raises(DataError, match="class 'mel' has 12 image"):
        st.create_study(tmp_path / "b", r, g, per_class=13, classes=["mel"])
    calls = []

    def flaky():  # decodes in the first pass (sizes), fails while the study is being written
        calls.append(1)
        if len(calls) > 1:
            raise DataError("decoder exploded")
        return np.zeros((40, 40, 3), np.uint8)

    with pytest.raises(DataError, match="decoder exploded"):
        st.create_study(tmp_path / "half", r, [turing_items.Item("mel", "g", "bad.png", flaky)], per_class=1, classes=["mel"])
    assert not (tmp_path / "half").exists() and not list(tmp_path.glob(".half.*"))  # nothing half-written
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(AugforgeError, match="not empty"):
        st.create_study(tmp_path / "full", r, g, per_class=2)
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (8, 8)).save(loose / "a.png")
    with pytest.raises(DataError, match="class sub-folder"):
        turing_items.folder_items(loose)
    (loose / "metadata.csv").write_text("image_id,dx\nb,mel\n")
    with pytest.raises(DataError, match="image_id 'b' matches no image file"):
        turing_items.folder_items(loose)
    (loose / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(loose / "sub" / "a.png")
    (loose / "metadata.csv").write_text("image_id,dx\na,mel\n")
    with pytest.raises(DataError, match="image_id 'a' matches 2 files"):
        turing_items.folder_items(loose)


def test_cli_create(tmp_path, folders):
    real, gen = folders
    out = tmp_path / "study"
    res = CliRunner().invoke(cli, ["turing", "create", "--real", str(real), "--generated", str(gen), "--per-class", "3",
                                   "--classes", "mel,bcc", "--out", str(out), "--seed", "5", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "12 images" in res.output and "32 px" in res.output
    token = re.search(r"admin token \(shown once, stored hashed\): (\S+)", res.output).group(1)
    s = st.Study(out)
    assert s.check_token(token) and not s.check_token(token + "x") and token not in (out / st.DB_NAME).read_bytes().decode("latin-1")
    res = CliRunner().invoke(cli, ["turing", "create", "--real", str(real), "--dataset", "x", "--generated", str(gen),
                                   "--per-class", "3", "--out", str(tmp_path / "s2")])
    assert isinstance(res.exception, AugforgeError) and "exactly one of --real" in str(res.exception)


def test_onnx_generator_as_source(tmp_path):
    """--onnx: generated images sampled through augforge.runtime from an exported generator."""
    pytest.importorskip("augforge.runtime")
    export = pytest.importorskip("augforge.export")
    import torch

    from augforge.testing import FakeGenerator

    torch.manual_seed(0)
    g = FakeGenerator(image_size=16, num_classes=2, latent_dim=8).eval()
    onnx_path = export.export_onnx(g, tmp_path / "g.onnx", {"class_names": ["nv", "mel"]}, exporter="torchscript")
    real = sample.write_real_folder(tmp_path / "real", ("nv", "mel"), 3)
    out = tmp_path / "study"
    res = CliRunner().invoke(cli, ["turing", "create", "--real", str(real), "--onnx", str(onnx_path), "--per-class", "2",
                                   "--classes", "mel", "--out", str(out)])
    assert res.exit_code == 0, (res.output, res.exception)
    k = key(out)
    assert Counter(k.values()) == {("real", "mel"): 2, ("generated", "mel"): 2}
    sources = [s for (s,) in sqlite3.connect(out / st.DB_NAME).execute("SELECT source FROM images WHERE origin = 'generated'")]
    assert all(s.startswith("g.onnx#") for s in sources)
    assert len({p.stat().st_size for p in (out / st.IMAGE_DIR).iterdir()}) == 1  # 16 px: real ones downscaled


def test_rater_order_is_random_per_rater_and_stable():
    ids = [f"{i:016x}" for i in range(50)]
    a = st.rater_order(ids, "R1", 0)
    assert a == st.rater_order(list(reversed(ids)), "R1", 0) and sorted(a) == ids
    assert a != st.rater_order(ids, "R2", 0) and a != st.rater_order(ids, "R1", 1) and a != ids


def test_blinding_on_real_ham_images(tmp_path, shared_ham):
    """Real HAM10000 JPEGs (200x150) against 64 px generator-style PNGs: still one byte pattern."""
    gen = sample.write_generated_folder(tmp_path / "gen", ("mel", "bcc"), 20)
    created = st.create_study(tmp_path / "s", turing_items.folder_items(shared_ham), turing_items.folder_items(gen), per_class=20, classes=["mel", "bcc"])
    k = key(created.path)
    sizes = {"real": [], "generated": []}
    for p in (created.path / st.IMAGE_DIR).iterdir():
        sizes[k[p.stem][0]].append(p.stat().st_size)
        assert byte_features(p.read_bytes())["chunk_types"] == ("IHDR", "IDAT", "IEND")
    assert ks_2samp(sizes["real"], sizes["generated"]).statistic == 0.0
    compressed = compressed_sizes(created.path)  # what a compressed format would have leaked
    assert ks_2samp(compressed["real"], compressed["generated"]).pvalue < 1e-4
