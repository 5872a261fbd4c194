"""The class vocabulary: canonical names (HAM10000 dx codes + ISIC 2019's scc, unk) and the synonyms that map to them."""

from __future__ import annotations

import re


from augforge.errors import ConfigError


#: canonical class vocabulary (HAM10000 dx codes, plus ISIC 2019's scc and unk)
CLASS_NAMES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df", "scc", "unk"]

CLASS_DESCRIPTIONS = {
    "nv": "melanocytic nevus",
    "mel": "melanoma (in situ and invasive)",
    "bkl": "benign keratosis-like (seborrheic keratosis, solar lentigo, lichen-planus-like keratosis)",
    "bcc": "basal-cell carcinoma",
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "vasc": "vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
    "df": "dermatofibroma",
    "scc": "squamous-cell carcinoma (invasive)",
    "unk": "none of the others / unknown (ISIC 2019 UNK; ISIC 2020 'unknown')",
}

#: synonym -> canonical name. Matching ignores case, '_', '-', "'" and repeated spaces.
#: Only what is listed here maps; anything else is an error naming the value (or, with
#: skip_bad, a counted skip), never a guess.
SYNONYMS: dict[str, str] = {
    # nv
    "nevus": "nv", "naevus": "nv", "nevi": "nv", "melanocytic nevus": "nv", "melanocytic nevi": "nv",
    "melanocytic naevus": "nv", "melanocytic naevi": "nv",
    # mel
    "melanoma": "mel", "malignant melanoma": "mel", "melanoma in situ": "mel", "melanoma invasive": "mel",
    "melanoma, invasive": "mel", "invasive melanoma": "mel",
    # bkl
    "benign keratosis": "bkl", "benign keratosis like": "bkl", "benign keratosis like lesions": "bkl",
    "pigmented benign keratosis": "bkl", "seborrheic keratosis": "bkl", "seborrhoeic keratosis": "bkl",
    "solar lentigo": "bkl", "lichenoid keratosis": "bkl", "lichen planus like keratosis": "bkl", "lplk": "bkl",
    # bcc
    "basal cell carcinoma": "bcc",
    # akiec
    "ak": "akiec", "actinic keratosis": "akiec", "actinic keratoses": "akiec", "solar keratosis": "akiec",
    "intraepithelial carcinoma": "akiec", "bowens disease": "akiec", "bowen disease": "akiec",
    "squamous cell carcinoma in situ": "akiec",
    "actinic keratoses and intraepithelial carcinoma": "akiec",
    # vasc
    "vascular lesion": "vasc", "vascular lesions": "vasc", "vascular": "vasc", "angioma": "vasc",
    "angiokeratoma": "vasc", "hemangioma": "vasc", "haemangioma": "vasc", "pyogenic granuloma": "vasc",
    "hemorrhage": "vasc", "haemorrhage": "vasc",
    # df
    "dermatofibroma": "df",
    # scc
    "squamous cell carcinoma": "scc", "squamous cell carcinoma, invasive": "scc", "invasive squamous cell carcinoma": "scc",
    # unk
    "unknown": "unk", "other": "unk", "none of the others": "unk",
    "cafe au lait macule": "unk", "atypical melanocytic proliferation": "unk",
}


def normalize_label(value: object) -> str:
    """Lower-case, drop apostrophes, turn '_'/'-' into spaces, collapse whitespace."""
    s = str(value).strip().lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", s)).strip()


_LOOKUP = {normalize_label(k): v for k, v in SYNONYMS.items()} | {c: c for c in CLASS_NAMES}


def canonical_class(value: object) -> str | None:
    """The canonical class name for ``value`` (a name or documented synonym), else None."""
    return _LOOKUP.get(normalize_label(value))


def valid_labels_hint() -> str:
    return f"valid: {', '.join(CLASS_NAMES)} (or a synonym listed in augforge.data.SYNONYMS / docs/data.md)"


def records_labels_hint(labels) -> str:
    """The fix for a dataset plugin whose ``records()`` labels are not canonical class names."""
    mapped = {v: canonical_class(v) for v in labels if canonical_class(v)}
    how = f" (e.g. {', '.join(f'{k!r} -> {v!r}' for k, v in mapped.items())})" if mapped else ""
    return (f"records() must return canonical names: {', '.join(CLASS_NAMES)}; map synonyms with "
            f"augforge.data.canonical_class{how}")


def parse_classes(classes: list[str] | str | None) -> list[str] | None:
    """``"mel,bcc"`` or ``["melanoma", "BCC"]`` -> canonical names; None/""/[] -> None (all)."""
    if classes is None:
        return None
    items = [c for c in (classes.split(",") if isinstance(classes, str) else classes)]
    items = [str(c).strip() for c in items if str(c).strip()]
    if not items:
        return None
    out = []
    for c in items:
        name = canonical_class(c)
        if name is None:
            raise ConfigError(f"unknown class {c!r}; {valid_labels_hint()}")
        if name not in out:
            out.append(name)
    return out
