"""Every kind of bad input: a clear DataError naming the file/row and the fix, or with
skip_bad a counted skip listed in skipped.csv. Never a silent wrong label."""

import shutil

import numpy as np
import pandas as pd
import pytest
from _datagen import make_folder, make_ham, make_isic2019, make_isic2020, make_isic_archive, write_image
from PIL import Image

from augforge import config, registry
from augforge import data as D
from augforge.errors import DataError
from augforge.imageio import read_rgb

# ---- image files ------------------------------------------------------------------------------


def truncated_jpeg(path):
    write_image(path, size=(64, 48))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_jpeg(tmp_path):
    p = truncated_jpeg(tmp_path / "t.jpg")
    with pytest.raises(DataError, match=r"t\.jpg: truncated image data \(.*\); replace the file or pass --skip-bad"):
        read_rgb(p)


def test_corrupt_file_with_image_extension(tmp_path):
    p = tmp_path / "c.jpg"
    p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"c\.jpg: .*(cannot decode|not an image)"):
        read_rgb(p)


def test_empty_file(tmp_path):
    p = tmp_path / "e.png"
    p.write_bytes(b"")
    with pytest.raises(DataError, match=r"e\.png: empty file \(0 bytes\); replace it or pass --skip-bad"):
        read_rgb(p)


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("lesion notes, not pixels")
    with pytest.raises(DataError, match=r"notes\.png: not an image file Pillow can read"):
        read_rgb(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_rgb(tmp_path / "nope.jpg")


def test_cmyk_jpeg_converts_to_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("RGB", (32, 24), (200, 100, 50)).convert("CMYK").save(p, quality=95)
    assert Image.open(p).mode == "CMYK"
    rgb = read_rgb(p)
    assert rgb.shape == (24, 32, 3) and np.abs(rgb.reshape(-1, 3).mean(0) - (200, 100, 50)).max() < 8


def test_greyscale_becomes_three_equal_channels(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (5, 1)), "L").save(p)
    rgb = read_rgb(p)
    assert rgb.shape == (5, 25, 3) and (rgb[..., 0] == rgb[..., 2]).all() and rgb[0, 3, 1] == 30


def test_rgba_is_composited_over_white_not_leaking_hidden_colour(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255  # hidden red everywhere
    a[:2, :, 3] = 255  # top half opaque red
    a[2:, :, 3] = 0  # bottom half fully transparent
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    rgb = read_rgb(p)
    assert (rgb[:2] == (255, 0, 0)).all() and (rgb[2:] == 255).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.putpixel((0, 0), 1)
    p = tmp_path / "p.png"
    im.save(p, transparency=0)
    rgb = read_rgb(p)
    assert tuple(rgb[0, 0]) == (0, 0, 255) and tuple(rgb[3, 3]) == (255, 255, 255)


def test_16bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(values).save(p)
    assert Image.open(p).mode.startswith("I")
    rgb = read_rgb(p)
    assert list(rgb[0, :, 0]) == [0, 4, 128, 255]  # Pillow's convert("RGB") would give 0, 255, 255, 255


def test_16bit_rgb_png_is_scaled(tmp_path):
    cv2 = pytest.importorskip("cv2")
    bgr = np.zeros((2, 2, 3), np.uint16)
    bgr[..., 2] = 60000  # red, 16-bit
    bgr[..., 1] = 1000
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), bgr)
    rgb = read_rgb(p)
    assert tuple(rgb[0, 0]) in {(234, 3, 0), (233, 3, 0), (234, 4, 0)}  # 60000/257, 1000/257


def test_decompression_bomb_is_refused_with_the_fix(tmp_path, monkeypatch):
    p = write_image(tmp_path / "big.png", size=(60, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=r"big\.png: 2,400 pixels exceeds the limit of 1,000 pixels .*decompression bomb.*AUGFORGE_MAX_IMAGE_PIXELS"):
        read_rgb(p)
    monkeypatch.setenv("AUGFORGE_MAX_IMAGE_PIXELS", "5000")
    assert read_rgb(p).shape == (40, 60, 3)


def test_real_decompression_bomb_png(tmp_path, monkeypatch):
    # a 1-bit 8000x8000 PNG is a few kB on disk but 64 MP decoded
    p = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000), 0).save(p, optimize=True)
    assert p.stat().st_size < 20_000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
    with pytest.raises(DataError, match="bomb.png: 64,000,000 pixels exceeds the limit of 10,000,000 pixels"):
        read_rgb(p)


# ---- metadata -------------------------------------------------------------------------------


def ham(tmp_path, **kw):
    return registry.build("dataset", "ham10000", root=str(tmp_path), **kw)


def test_unknown_label_names_row_and_value(tmp_path):
    meta = make_ham(tmp_path, "images")
    meta.loc[3, "dx"] = "melanomma"
    meta.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"HAM10000_metadata.csv line 5 \(image ISIC_0000003\): unknown dx 'melanomma'; valid: nv, mel"):
        ham(tmp_path).records()
    ds = ham(tmp_path, skip_bad=True)
    assert len(ds.records()) == len(meta) - 1 and "ISIC_0000003" not in set(ds.records()["image_id"])
    assert ds.skipped == [{"file": str(tmp_path / "HAM10000_metadata.csv"), "row": "line 5",
                           "reason": "HAM10000_metadata.csv line 5 (image ISIC_0000003): unknown dx 'melanomma'", "label": ""}]


def test_empty_label(tmp_path):
    meta = make_ham(tmp_path, "images")
    meta.loc[0, "dx"] = ""
    meta.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"line 2 \(image ISIC_0000000\): empty"):
        ham(tmp_path).records()


def test_missing_columns_name_missing_and_found(tmp_path):
    meta = make_ham(tmp_path, "images")
    meta.drop(columns=["dx"]).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) dx; found: lesion_id, image_id, dx_type, age, sex, localization"):
        ham(tmp_path).records()


def test_missing_csv_and_empty_csv(tmp_path):
    with pytest.raises(DataError, match="HAM10000_metadata.csv: not found"):
        ham(tmp_path).records()
    (tmp_path / "HAM10000_metadata.csv").write_text("")
    with pytest.raises(DataError, match="empty CSV file"):
        ham(tmp_path).records()


def test_duplicate_ids(tmp_path):
    meta = make_ham(tmp_path, "images")
    dup = pd.concat([meta, meta.iloc[[2]]], ignore_index=True)
    dup.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.raises(DataError, match=r"image id 'ISIC_0000002' appears on line 4, line 16; keep one row per image"):
        ham(tmp_path).records()
    ds = ham(tmp_path, skip_bad=True)  # same label: the repeat is skipped, one row kept
    assert list(ds.records()["image_id"]).count("ISIC_0000002") == 1 and len(ds.skipped) == 1
    dup.loc[len(dup) - 1, "dx"] = "mel"  # conflicting labels: neither row is trusted
    dup.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    ds = ham(tmp_path, skip_bad=True)
    assert "ISIC_0000002" not in set(ds.records()["image_id"]) and "different labels" in ds.skipped[0]["reason"]


def test_row_whose_image_is_missing(tmp_path):
    make_ham(tmp_path, "parts")
    (tmp_path / "HAM10000_images_part_2" / "ISIC_0000001.jpg").unlink()
    with pytest.raises(DataError, match=r"line 3: no image file for 'ISIC_0000001' .*HAM10000_images_part_1/, HAM10000_images_part_2/"):
        ham(tmp_path).records()
    ds = ham(tmp_path, skip_bad=True)
    assert len(ds.records()) == 13 and ds.skipped[0]["label"] == "nv"


def test_isic_one_hot_must_hold_exactly_one(tmp_path):
    gt = make_isic2019(tmp_path)
    gt.loc[0, "NV"] = "1.0"
    gt.loc[1, "MEL"] = "yes"
    gt.to_csv(tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match=r"line 2 \(image ISIC_0000000\): one-hot columns must hold exactly one 1.*MEL=1.0, NV=1.0"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()
    ds = registry.build("dataset", "isic", root=str(tmp_path), skip_bad=True)
    assert len(ds.records()) == len(gt) - 2 and len(ds.skipped) == 2


def test_isic_contradicting_target_or_benign_malignant(tmp_path):
    gt = make_isic2020(tmp_path)
    gt.loc[1, "target"] = "1"  # nevus with target 1
    gt.to_csv(tmp_path / "ISIC_2020_Training_GroundTruth.csv", index=False)
    with pytest.raises(DataError, match=r"line 3 \(image ISIC_0000001\): target=1 contradicts diagnosis 'nevus'"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()
    arch = tmp_path / "arch"
    meta = make_isic_archive(arch)
    meta.loc[1, "benign_malignant"] = "benign"  # melanoma marked benign
    meta.to_csv(arch / "metadata.csv", index=False)
    with pytest.raises(DataError, match="benign_malignant='benign' contradicts diagnosis 'melanoma'"):
        registry.build("dataset", "isic", root=str(arch)).records()


def test_isic_benign_malignant_alone_is_refused(tmp_path):
    meta = make_isic_archive(tmp_path)
    meta.drop(columns=["diagnosis"]).to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match="only benign_malignant labels; benign/malignant names no lesion class"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()


def test_isic_csv_without_labels_names_columns(tmp_path):
    pd.DataFrame({"isic_id": ["ISIC_1"], "age": ["3"]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(DataError, match="x.csv: no label columns; found: isic_id, age"):
        registry.build("dataset", "isic", root=str(tmp_path / "x.csv")).records()


def test_folder_unknown_class_folder_and_conflicting_names(tmp_path):
    make_folder(tmp_path)
    write_image(tmp_path / "freckles" / "f.jpg")
    with pytest.raises(DataError, match=r"folder name 'freckles' is not a class; rename it; valid: nv, mel"):
        registry.build("dataset", "folder", root=str(tmp_path)).records()
    ds = registry.build("dataset", "folder", root=str(tmp_path), skip_bad=True)
    assert len(ds.records()) == 12 and len(ds.skipped) == 1
    shutil.rmtree(tmp_path / "freckles")
    write_image(tmp_path / "nevus" / "img_000.jpg")  # img_000 is also under melanoma/
    with pytest.raises(DataError, match="'img_000' appears under several classes"):
        registry.build("dataset", "folder", root=str(tmp_path), classes="mel,nv").records()


def test_folder_non_image_file(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "nevus" / "notes.txt").write_text("x")
    (tmp_path / "nevus" / ".DS_Store").write_text("x")  # hidden files are ignored
    with pytest.raises(DataError, match=r"notes.txt: not an image file \(extension .txt\)"):
        registry.build("dataset", "folder", root=str(tmp_path)).records()


# ---- end to end: skip_bad through the pipeline, report files ---------------------------------


def test_skip_bad_end_to_end_counts_and_reports(tmp_path):
    root = tmp_path / "ham"
    meta = make_ham(root, "parts")
    truncated_jpeg(root / "HAM10000_images_part_1" / "ISIC_0000000.jpg")
    (root / "HAM10000_images_part_2" / "ISIC_0000001.jpg").write_bytes(b"")
    (root / "HAM10000_images_part_1" / "ISIC_0000002.jpg").write_text("not a jpeg")
    (root / "HAM10000_images_part_2" / "ISIC_0000003.jpg").unlink()
    meta.loc[5, "dx"] = "freckle"
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    base = {"data.name": "ham10000", "dataset.root": str(root), "data.image_size": "16"}

    with pytest.raises(DataError):
        D.load_arrays(config.resolve("", base), progress=False)
    cfg = config.resolve("", {**base, "data.skip_bad": "true"})
    arrays, splits = D.load_splits(cfg, out_dir=tmp_path / "run", progress=False)
    assert len(arrays) == len(meta) - 5 and len(arrays.skipped) == 5
    report = pd.read_csv(tmp_path / "run" / "skipped.csv", dtype=str, keep_default_na=False)
    assert list(report.columns[:3]) == ["file", "row", "reason"] and len(report) == 5
    text = " | ".join(report["reason"])
    for needle in ("truncated", "empty file", "not an image file", "no image file for 'ISIC_0000003'", "unknown dx 'freckle'"):
        assert needle in text, needle
    cache_report = next((tmp_path / "cache").glob("ham10000-*/skipped.csv"))
    assert len(pd.read_csv(cache_report)) == 3  # the decode failures; the row-level ones come from the plugin
