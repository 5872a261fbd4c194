"""Decode-once cache, grouped/stratified splits, sampler, augmentations, filters."""


import numpy as np
import pandas as pd
import pytest
import torch
from _datagen import make_ham, write_image

from augforge import config

from augforge.data import filters
from augforge import data as D
from augforge.errors import ConfigError
from augforge.interfaces import Dataset


def cfg_for(**kv):
    return config.resolve("", {k: v for k, v in kv.items()})


def syn_cfg(**extra):
    return cfg_for(**{"data.name": "synthetic-lesions", "data.image_size": "16", "dataset.n_per_class": "6",
                      "dataset.image_size": "32", "dataset.classes": "mel,nv,bcc", **extra})


def test_cache_dir_follows_env_and_config(monkeypatch, tmp_path):
    cfg = syn_cfg()
    assert D.cache_root(cfg) == tmp_path / "cache"  # conftest sets AUGFORGE_CACHE_DIR
    monkeypatch.delenv("AUGFORGE_CACHE_DIR")
    assert str(D.cache_root(cfg)) == cfg.data.cache_dir


def test_first_load_decodes_and_caches_then_memory_maps_without_decoding(tmp_path, monkeypatch):
    make_ham(tmp_path / "ham", "parts")
    cfg = cfg_for(**{"data.name": "ham10000", "dataset.root": str(tmp_path / "ham"), "data.image_size": "16"})
    a = D.load_arrays(cfg, progress=False)
    assert a.images.shape == (14, 16, 16, 3) and a.images.dtype == np.uint8
    assert a.class_names == ["nv", "mel", "bcc"]
    caches = [p for p in (tmp_path / "cache").iterdir()]
    assert len(caches) == 1 and caches[0].name.startswith("ham10000-16px-")
    assert sorted(p.name for p in caches[0].iterdir()) == ["images.npy", "info.json", "meta.csv", "skipped.csv"]

    def no_decode(*args, **kwargs):
        raise AssertionError("second load decoded an image")

    monkeypatch.setattr("augforge.imageio.read_rgb", no_decode)
    monkeypatch.setattr(Dataset, "load_image", no_decode)
    b = D.load_arrays(cfg, progress=False)
    assert isinstance(b.images, np.memmap)
    assert np.array_equal(np.asarray(a.images), np.asarray(b.images)) and list(a.labels) == list(b.labels)
    assert list(b.meta["image_id"]) == list(a.meta["image_id"]) and isinstance(b.meta["image_id"][0], str)


def test_cache_key_changes_with_options_and_source_files(tmp_path):
    make_ham(tmp_path / "ham", "images")
    base = {"data.name": "ham10000", "dataset.root": str(tmp_path / "ham")}
    D.load_arrays(cfg_for(**base, **{"data.image_size": "16"}), progress=False)
    D.load_arrays(cfg_for(**base, **{"data.image_size": "24"}), progress=False)
    D.load_arrays(cfg_for(**base, **{"data.image_size": "16", "dataset.classes": "mel"}), progress=False)
    assert len(list((tmp_path / "cache").iterdir())) == 3
    # a changed image file (size/mtime) is a new key; so is a changed label
    src = tmp_path / "ham" / "images" / "ISIC_0000000.jpg"
    write_image(src, (10, 10, 10), size=(44, 33))
    a = D.load_arrays(cfg_for(**base, **{"data.image_size": "16"}), progress=False)
    assert len(list((tmp_path / "cache").iterdir())) == 4 and a.images[0].mean() < 150
    # no temp folders are left behind
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]


def test_square_resize_centre_crops_then_resizes():
    img = np.zeros((30, 50, 3), np.uint8)
    img[:, 10:40] = 255  # the centre 30x30 square is white, the sides black
    out = D.square_resize(img, 15)
    assert out.shape == (15, 15, 3) and out.min() > 240


def test_synthetic_default_cache_and_image_set():
    a = D.load_arrays(syn_cfg(), progress=False)
    assert a.images.shape == (18, 16, 16, 3) and a.class_names == ["nv", "mel", "bcc"]
    s = a.image_set()
    assert len(s) == 18 and s.groups is not None


# ---- splits ---------------------------------------------------------------------------------


def fake_arrays(groups, labels, names=("nv", "mel", "bcc")):
    n = len(groups)
    meta = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "group": groups, "label": [names[l] for l in labels],
                         "source": [""] * n})
    return D.LesionArrays(np.zeros((n, 4, 4, 3), np.uint8), np.array(labels), list(names), meta)


def test_splits_are_grouped_stratified_and_deterministic():
    rng = np.random.default_rng(0)
    groups, labels = [], []
    for k, n_lesions in enumerate((300, 80, 30)):
        for g in range(n_lesions):
            for _ in range(rng.integers(1, 4)):
                groups.append(f"L{k}_{g}")
                labels.append(k)
    a = fake_arrays(groups, labels)
    s = D.make_splits(a, 0.1, 0.2, seed=3)
    assert sorted(np.concatenate(list(s.values()))) == list(range(len(a)))
    g = {k: set(np.array(groups)[v]) for k, v in s.items()}
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    lab = np.array(labels)
    for k in range(3):  # every class close to its share in each split
        n_k = (lab == k).sum()
        assert abs((lab[s["test"]] == k).sum() - 0.2 * n_k) <= 3
        assert abs((lab[s["val"]] == k).sum() - 0.1 * n_k) <= 3
    again = D.make_splits(a, 0.1, 0.2, seed=3)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = D.make_splits(a, 0.1, 0.2, seed=4)
    assert not np.array_equal(s["test"], other["test"])


def test_bad_fractions_fail():
    with pytest.raises(ConfigError, match="sum below 1"):
        D.make_splits(fake_arrays(["a", "b"], [0, 1]), 0.6, 0.5, 0)


def test_load_splits_writes_csv(tmp_path):
    arrays, splits = D.load_splits(syn_cfg(), out_dir=tmp_path / "run", progress=False)
    df = pd.read_csv(tmp_path / "run" / "splits.csv")
    assert list(df.columns) == ["image_id", "label", "group", "split", "source"]
    assert len(df) == len(arrays) and set(df["split"]) <= {"train", "val", "test"}
    assert df.groupby("group")["split"].nunique().max() == 1
    assert (tmp_path / "run" / "skipped.csv").exists()


# ---- sampling and augmentation ---------------------------------------------------------------


def test_balanced_sampler_evens_out_classes_and_is_seeded():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    assert D.make_sampler(labels, balance=False, seed=0) is None
    s = D.make_sampler(labels, balance=True, seed=0)
    draws = np.array(list(iter(s)))
    counts = np.bincount(labels[draws], minlength=3) / len(draws)
    assert len(draws) == 100 and counts.min() > 0.15
    assert list(iter(D.make_sampler(labels, True, 0))) == list(iter(D.make_sampler(labels, True, 0)))
    many = np.concatenate([list(iter(D.make_sampler(labels, True, k))) for k in range(20)])
    assert np.allclose(np.bincount(labels[many]) / len(many), 1 / 3, atol=0.05)


@pytest.mark.parametrize("name", list(D.AUGMENTATIONS))
def test_augmentations_by_name_keep_shape_and_dtype(name):
    a = D.load_arrays(syn_cfg(), progress=False)
    ds = D.TorchImages(a, augment=name, seed=0)
    x, y = ds[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1 and isinstance(y, int)


def test_dermoscopy_augmentation_changes_images_and_unknown_name_fails():
    a = D.load_arrays(syn_cfg(), progress=False)
    plain = D.TorchImages(a)[0][0]
    aug = D.TorchImages(a, augment="dermoscopy", seed=1)
    assert any(not torch.equal(aug[0][0], plain) for _ in range(4))
    with pytest.raises(ConfigError, match="available: none, flip, dermoscopy"):
        D.TorchImages(a, augment="rotate-all")


# ---- filters --------------------------------------------------------------------------------


def framed(img: np.ndarray, darkness=5) -> np.ndarray:
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    out = img.copy()
    out[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 > (0.55 * w) ** 2] = darkness
    return out


def skin(h=120, w=160):
    rng = np.random.default_rng(0)
    return np.clip(np.full((h, w, 3), (200, 150, 130), np.float32) + rng.normal(0, 5, (h, w, 3)), 0, 255).astype(np.uint8)


def test_framed_filter_flags_dark_circular_vignette_only():
    plain = skin()
    assert not filters.is_framed(plain)
    assert filters.is_framed(framed(plain))
    one_dark_corner = plain.copy()
    one_dark_corner[:20, :20] = 0  # hair or shadow in one corner is not a frame
    assert not filters.is_framed(one_dark_corner)


def test_marks_filter_flags_violet_ink_beside_the_lesion_not_a_central_blue_lesion():
    plain = skin()
    assert not filters.has_marks(plain)
    inked = plain.copy()
    inked[10:14, 5:60] = (90, 40, 190)  # a marker line near the border
    assert filters.has_marks(inked)
    blue = plain.copy()
    blue[45:75, 60:100] = (60, 40, 170)  # a vivid blue blob in the centre
    assert not filters.has_marks(blue)


def test_drop_framed_and_marks_at_load_time_are_counted_with_reasons(tmp_path):
    root = tmp_path / "flds"
    for i in range(3):
        write_image(root / "nv" / f"a{i}.png", size=(60, 45), seed=i)
    img = skin(45, 60)
    from PIL import Image

    Image.fromarray(framed(img)).save(root / "nv" / "framed.png")
    inked = img.copy()
    inked[2:5, 2:30] = (90, 40, 190)
    Image.fromarray(inked).save(root / "nv" / "inked.png")
    base = {"data.name": "folder", "dataset.root": str(root), "data.image_size": "16"}
    assert len(D.load_arrays(cfg_for(**base), progress=False)) == 5
    a = D.load_arrays(cfg_for(**base, **{"data.drop_framed": "true", "data.drop_marks": "true"}), progress=False)
    assert len(a) == 3 and len(a.meta) == 3 and len(a.labels) == 3
    reasons = sorted(a.skipped["reason"])
    assert reasons[0].startswith("dropped: ink mark") and reasons[1].startswith("dropped: round microscope frame")
    assert set(a.skipped["label"]) == {"nv"}
    # only one cache: filter flags select from cached scores, no re-decode
    assert len(list((tmp_path / "cache").iterdir())) == 1
