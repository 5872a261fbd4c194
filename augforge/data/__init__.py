"""The data pipeline: decode once, crop+resize, cache as uint8 arrays, lesion-grouped splits.

    classes.py      the class vocabulary and its synonyms
    cache.py        ``load_arrays(cfg)``: decode once, Lanczos resize, paper-A filter scores, uint8 cache
    splits.py       ``make_splits`` / ``load_splits``: lesion-grouped, class-stratified, seeded
    torch_data.py   ``make_sampler`` (class balance), ``AUGMENTATIONS`` (albumentations), ``TorchImages``
    filters.py      paper A's framed-image and ink-mark scores
    cli.py          ``augforge data``

The names below are the public API (``from augforge.data import load_splits``).
"""

from augforge.data.cache import (PIPELINE_VERSION, LesionArrays, build_dataset, cache_dir_for, cache_root,
                                 conflicting_lesions, load_arrays, square_resize)
from augforge.data.classes import (CLASS_DESCRIPTIONS, CLASS_NAMES, SYNONYMS, canonical_class, normalize_label,
                                   parse_classes, records_labels_hint, valid_labels_hint)
from augforge.data.splits import load_splits, make_splits, splits_frame
from augforge.data.torch_data import AUGMENTATIONS, TorchImages, make_augmentation, make_sampler

__all__ = [
    "AUGMENTATIONS", "CLASS_DESCRIPTIONS", "CLASS_NAMES", "PIPELINE_VERSION", "SYNONYMS", "LesionArrays", "TorchImages",
    "build_dataset", "cache_dir_for", "cache_root", "canonical_class", "conflicting_lesions", "load_arrays", "load_splits",
    "make_augmentation", "make_sampler", "make_splits", "normalize_label", "parse_classes", "records_labels_hint",
    "splits_frame", "square_resize", "valid_labels_hint",
]
