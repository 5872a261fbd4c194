"""Dataset plugins on every real layout (tiny trees made here), the vocabulary, conformance."""

import numpy as np
import pandas as pd
import pytest
from _datagen import make_folder, make_ham, make_isic2019, make_isic2020, make_isic_archive, write_image

from augforge import registry, testing
from augforge.data import CLASS_NAMES, SYNONYMS, canonical_class, parse_classes
from augforge.errors import ConfigError, DataError


# ---- vocabulary ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, name",
    [("melanoma", "mel"), ("AK", "akiec"), ("basal cell carcinoma", "bcc"), ("Basal-Cell Carcinoma", "bcc"), ("nevus", "nv"),
     ("seborrheic keratosis", "bkl"), ("solar lentigo", "bkl"), ("lichenoid keratosis", "bkl"), ("Bowen's disease", "akiec"),
     ("vascular lesion", "vasc"), ("squamous cell carcinoma", "scc"), ("UNK", "unk"), (" MEL ", "mel"), ("dermatofibroma", "df")],
)
def test_synonyms_map_to_canonical_names(value, name):
    assert canonical_class(value) == name


def test_every_synonym_targets_a_class_and_unknown_values_do_not_map():
    assert set(SYNONYMS.values()) <= set(CLASS_NAMES)
    for value in ("lentigo NOS", "benign", "malignant", "", "melanom"):
        assert canonical_class(value) is None


def test_parse_classes_accepts_lists_strings_synonyms_and_fails_listing_valid():
    assert parse_classes("mel,bcc") == ["mel", "bcc"]
    assert parse_classes(["Melanoma", "BCC", "mel"]) == ["mel", "bcc"]
    assert parse_classes("") is None and parse_classes(None) is None
    with pytest.raises(ConfigError, match="unknown class 'melanomma'; valid: nv, mel, bkl"):
        parse_classes("mel,melanomma")


# ---- ham10000 -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["parts", "images", "flat"])
def test_ham10000_reads_every_layout(tmp_path, layout):
    meta = make_ham(tmp_path, layout)
    ds = registry.build("dataset", "ham10000", root=str(tmp_path))
    rec = ds.records()
    assert list(rec["image_id"]) == list(meta["image_id"])
    assert list(rec["label"]) == list(meta["dx"])
    assert list(rec["group"]) == list(meta["lesion_id"])
    assert all(pd.Series(rec["source"]).map(lambda s: s.endswith(".jpg")))
    assert {"age", "sex", "localization", "dx_type"} <= set(rec.columns)
    img = ds.load_image(rec.iloc[0])
    assert img.dtype == np.uint8 and img.shape == (30, 40, 3)


def test_ham10000_root_may_be_the_csv_and_classes_and_cap_select(tmp_path):
    make_ham(tmp_path, "images", {"nv": 10, "mel": 4, "bcc": 3})
    ds = registry.build("dataset", "ham10000", root=str(tmp_path / "HAM10000_metadata.csv"), classes="melanoma,nv", max_per_class=5, seed=1)
    counts = ds.records()["label"].value_counts().to_dict()
    assert counts == {"nv": 5, "mel": 4}
    again = registry.build("dataset", "ham10000", root=str(tmp_path), classes=["nv", "mel"], max_per_class=5, seed=1).records()
    assert list(again["image_id"]) == list(ds.records()["image_id"])  # seed-deterministic cap


def test_ham10000_synonym_labels_in_dx(tmp_path):
    meta = make_ham(tmp_path, "images", {"akiec": 2})
    meta["dx"] = ["AK", "actinic keratosis"]
    meta.to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    assert set(registry.build("dataset", "ham10000", root=str(tmp_path)).records()["label"]) == {"akiec"}


# ---- isic -----------------------------------------------------------------------------------


def test_isic_archive_metadata_with_diagnosis_and_patient_groups(tmp_path):
    meta = make_isic_archive(tmp_path)
    rec = registry.build("dataset", "isic", root=str(tmp_path)).records()
    expected = [canonical_class(d) for d in meta["diagnosis"]]
    assert list(rec["label"]) == expected
    assert list(rec["group"]) == list(meta["patient_id"])  # patient beats lesion: stricter grouping


def test_isic_2019_one_hot_with_metadata_lesion_ids(tmp_path):
    gt = make_isic2019(tmp_path)
    rec = registry.build("dataset", "isic", root=str(tmp_path)).records()
    hot = gt[["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]].astype(float).idxmax(axis=1)
    assert list(rec["label"]) == [{"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc",
                                   "SCC": "scc", "UNK": "unk"}[h] for h in hot]
    # lesion ids merged from ISIC_2019_Training_Metadata.csv; rows without one are their own group
    assert rec.loc[1, "group"] == "BCN_0000000" and rec.loc[0, "group"] == "ISIC_0000000"


def test_isic_2018_akiec_one_hot(tmp_path):
    make_isic2019(tmp_path, akiec_column="AKIEC")
    rec = registry.build("dataset", "isic", root=str(tmp_path)).records()
    assert set(rec["label"]) == {"mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"}


def test_isic_2020_diagnosis_and_target(tmp_path):
    gt = make_isic2020(tmp_path)
    rec = registry.build("dataset", "isic", root=str(tmp_path)).records()
    assert list(rec["label"]) == [canonical_class(d) for d in gt["diagnosis"]]
    assert list(rec["group"]) == list(gt["patient_id"])


def test_isic_images_folder_option_resolves_duplicate_copies(tmp_path):
    make_isic2020(tmp_path)
    write_image(tmp_path / "jpeg" / "resized" / "ISIC_0000000.jpg")
    with pytest.raises(DataError, match="found more than once"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()
    rec = registry.build("dataset", "isic", root=str(tmp_path), images="jpeg/train").records()
    assert len(rec) == 12 and all("/jpeg/train/" in s for s in rec["source"])


def test_isic_2020_target_only_is_mel_or_unk(tmp_path):
    gt = make_isic2020(tmp_path, with_diagnosis=False)
    rec = registry.build("dataset", "isic", root=str(tmp_path)).records()
    assert list(rec["label"]) == ["mel" if t == "1" else "unk" for t in gt["target"]]


def test_isic_label_map_adds_values(tmp_path):
    meta = make_isic_archive(tmp_path)
    meta.loc[0, "diagnosis"] = "lentigo NOS"
    meta.to_csv(tmp_path / "metadata.csv", index=False)
    with pytest.raises(DataError, match="unknown diagnosis 'lentigo NOS'"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()
    rec = registry.build("dataset", "isic", root=str(tmp_path), label_map={"lentigo NOS": "bkl"}).records()
    assert rec.loc[0, "label"] == "bkl"


def test_isic_several_label_csvs_ask_for_csv(tmp_path):
    make_isic_archive(tmp_path)
    pd.read_csv(tmp_path / "metadata.csv").to_csv(tmp_path / "metadata_copy.csv", index=False)
    with pytest.raises(DataError, match="several label CSV.*csv=FILE"):
        registry.build("dataset", "isic", root=str(tmp_path)).records()
    assert len(registry.build("dataset", "isic", root=str(tmp_path), csv="metadata.csv").records()) == 12


# ---- folder ---------------------------------------------------------------------------------


def test_folder_maps_folder_names_through_synonyms(tmp_path):
    make_folder(tmp_path)
    rec = registry.build("dataset", "folder", root=str(tmp_path)).records()
    assert rec["label"].value_counts().to_dict() == {"nv": 5, "mel": 4, "bcc": 3}
    assert rec["image_id"].is_unique and (rec["group"] == rec["image_id"]).all()
    mel = registry.build("dataset", "folder", root=str(tmp_path), classes="mel").records()
    assert set(mel["label"]) == {"mel"} and len(mel) == 4


# ---- synthetic ------------------------------------------------------------------------------


def test_synthetic_lesions_deterministic_grouped_and_class_dependent():
    ds = registry.build("dataset", "synthetic-lesions", n_per_class=4, image_size=32, classes="mel,nv,bcc")
    rec = ds.records()
    assert rec["label"].value_counts().to_dict() == {"mel": 4, "nv": 4, "bcc": 4}
    assert rec["group"].nunique() == 6 and (rec["source"] == "").all()  # two views per lesion
    a = ds.load_image(rec.iloc[0])
    b = registry.build("dataset", "synthetic-lesions", n_per_class=4, image_size=32, classes="mel,nv,bcc").load_image(rec.iloc[0])
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, ds.load_image(rec.iloc[1]))  # second view differs
    other = registry.build("dataset", "synthetic-lesions", n_per_class=4, image_size=32, classes="mel,nv,bcc", seed=1)
    assert not np.array_equal(a, other.load_image(rec.iloc[0]))
    # class-dependent colour: melanoma is darker than nevus on average
    mean = {c: np.mean([ds.load_image(r).mean() for _, r in rec[rec["label"] == c].iterrows()]) for c in ("mel", "bcc")}
    assert mean["mel"] < mean["bcc"]


# ---- conformance over every registered dataset ---------------------------------------------

TREES = {
    "ham10000": lambda p: (make_ham(p), {"root": str(p)})[1],
    "isic": lambda p: (make_isic_archive(p), {"root": str(p)})[1],
    "folder": lambda p: (make_folder(p), {"root": str(p)})[1],
    "synthetic-lesions": lambda p: {"n_per_class": 2, "image_size": 32},
    "fake-blobs": lambda p: {},
}


@pytest.mark.parametrize("name", registry.names("dataset"))
def test_every_registered_dataset_passes_conformance(name, tmp_path):
    assert name in TREES, f"add a tiny tree for dataset {name!r} to TREES"
    testing.check_dataset(name, **TREES[name](tmp_path))


def test_builtin_datasets_are_listed():
    assert {"ham10000", "isic", "folder", "synthetic-lesions"} <= set(registry.names("dataset"))


def test_unknown_dataset_option_lists_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="valid: root, classes, max_per_class, seed, skip_bad"):
        registry.build("dataset", "ham10000", root=str(tmp_path), clases="mel")


def test_docs_data_page_documents_every_class_and_synonym():
    from pathlib import Path

    data = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()
    for name in CLASS_NAMES:
        assert f"| `{name}` |" in data, name
    for synonym in SYNONYMS:
        assert synonym in data, f"docs/data.md does not list the synonym {synonym!r}"
