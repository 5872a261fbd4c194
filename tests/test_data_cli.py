"""``augforge data inspect``: table, splits.csv, skipped.csv, contact sheet; real HAM10000 counts."""

import pandas as pd
import pytest
from _datagen import make_ham
from PIL import Image

from augforge.cli import main


def run(capsys, *args):
    try:
        main(["data", "inspect", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_synthetic_writes_table_splits_and_contact_sheet(tmp_path, capsys):
    code, out, err = run(capsys, "--dataset", "synthetic-lesions", "--classes", "mel,nv,bcc", "--max-per-class", "10",
                         "--image-size", "16", "--set", "dataset.image_size=32", "--out", str(tmp_path / "o"))
    assert code == 0, err
    for word in ("mel", "nv", "bcc", "train", "val", "test", "lesions", "skipped/dropped", "shared across splits: 0"):
        assert word in out
    splits = pd.read_csv(tmp_path / "o" / "splits.csv")
    assert len(splits) == 30 and splits.groupby("group")["split"].nunique().max() == 1
    sheet = Image.open(tmp_path / "o" / "contact_sheet.png")
    assert sheet.size[1] == 3 * 48  # one row per class (16 px images shown at 48 px)
    assert str(tmp_path / "o" / "contact_sheet.png") in out.replace("\n", "")


def test_inspect_ham_layout_with_skips_and_filters(tmp_path, capsys):
    meta = make_ham(tmp_path / "ham", "parts")
    meta.loc[0, "dx"] = "freckle"
    meta.to_csv(tmp_path / "ham" / "HAM10000_metadata.csv", index=False)
    code, out, err = run(capsys, "--dataset", "ham10000", "--root", str(tmp_path / "ham"), "--image-size", "16")
    assert code == 2 and "unknown dx 'freckle'" in err and "--skip-bad" in err
    code, out, err = run(capsys, "--dataset", "ham10000", "--root", str(tmp_path / "ham"), "--image-size", "16", "--skip-bad",
                         "--drop-framed", "--drop-marks", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "skipped or dropped: 1" in out and "unknown label" in out
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv")
    assert len(skipped) == 1 and skipped.loc[0, "row"] == "line 2"


def test_inspect_bad_option_fails_listing_valid(tmp_path, capsys):
    code, out, err = run(capsys, "--dataset", "synthetic-lesions", "--root", str(tmp_path))
    assert code == 2 and "has no option(s) root; valid: classes, n_per_class" in err
    code, out, err = run(capsys, "--dataset", "no-such-data")
    assert code == 2 and "available: " in err and "ham10000" in err


@pytest.mark.realdata
def test_inspect_real_ham10000_counts_match_metadata_and_no_lesion_leaks(shared_ham, tmp_path, capsys):
    # 32 px lets JPEG decoding use DCT scaling: the 7,511 images decode about twice as fast
    code, out, err = run(capsys, "--dataset", "ham10000", "--root", str(shared_ham), "--image-size", "32", "--out", str(tmp_path / "o"))
    assert code == 0, err
    meta = pd.read_csv(shared_ham / "HAM10000_metadata.csv")
    splits = pd.read_csv(tmp_path / "o" / "splits.csv")
    expected = {"nv": 5029, "mel": 835, "bkl": 824, "bcc": 385, "akiec": 245, "vasc": 107, "df": 86}
    assert meta["dx"].value_counts().to_dict() == expected
    assert splits["label"].value_counts().to_dict() == expected
    for name, n in expected.items():
        row = next(line for line in out.splitlines() if line.strip("│ ").startswith(name + " "))
        assert f" {n} " in row, row
    assert splits.groupby("group")["split"].nunique().max() == 1
    assert "shared across splits: 0" in out
    merged = splits.merge(meta, on="image_id")
    assert (merged["group"] == merged["lesion_id"]).all() and (merged["label"] == merged["dx"]).all()
    share = splits["split"].value_counts(normalize=True)
    assert abs(share["test"] - 0.1) < 0.01 and abs(share["val"] - 0.1) < 0.01
    # the pixel-identical pair named in the data README is one lesion, so it never straddles splits
    pair = splits.set_index("image_id").loc[["ISIC_0024366", "ISIC_0029861"], "split"]
    assert pair.nunique() == 1
