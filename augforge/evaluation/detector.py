"""The real data of an evaluation and the detector: trained once per dataset + split + classifier config, cached on disk."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from augforge import registry
from augforge.checkpoint import save_checkpoint
from augforge.evaluation.classify import classification_metrics, fit_classifier, predict_proba, resolve_device
from augforge.data import cache_root, load_splits
from augforge.interfaces import Classifier, ImageSet


#: bump when the detector's training changes, so cached detectors are retrained
DETECTOR_VERSION = 2  # 2: initial weights seeded too (1 drew them from whatever the process had used)
DEFAULT_CLASSIFIER = "paper-b-cnn"
DETECTOR_SEED = 0  # one detector per data+split, whatever seed the GAN used


# --------------------------------------------------------------------------------------------
# Data


def load_data(cfg):
    """The arrays and lesion-grouped split training used for ``cfg``."""
    return load_splits(cfg, progress=False)


def split_sets(arrays, splits, names=("train", "val", "test")) -> dict[str, ImageSet]:
    """``{"train": ImageSet, "val": ..., "test": ...}`` with lesion ids as groups (loaded into
    memory; ``names`` picks which, so callers needing one split do not load the others)."""
    return {name: arrays.subset(np.asarray(splits[name])).image_set() for name in names}


def data_fingerprint(arrays, splits) -> str:
    """A hash of the pixels, labels, class names and split indices: the detector cache key."""
    h = hashlib.sha256()
    h.update(json.dumps(list(arrays.class_names)).encode())
    h.update(np.ascontiguousarray(arrays.labels, dtype=np.int64).tobytes())
    images = arrays.images
    for i in range(0, len(images), 1024):
        h.update(np.ascontiguousarray(images[i : i + 1024]).tobytes())
    for name in ("train", "val", "test"):
        h.update(name.encode())
        h.update(np.ascontiguousarray(splits[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# The detector


def detector_key(cfg, arrays, splits, classifier: str, options: dict) -> str:
    model_cfg = registry.bind("classifier", classifier, image_size=int(cfg.data.image_size), num_classes=len(arrays.class_names), **options)
    recipe = dict(getattr(registry.get("classifier", classifier), "recipe", {}))
    blob = json.dumps(
        {"data": data_fingerprint(arrays, splits), "classifier": classifier, "config": model_cfg,
         "recipe": recipe, "seed": DETECTOR_SEED, "version": DETECTOR_VERSION},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def get_detector(cfg, arrays, splits, *, classifier: str = DEFAULT_CLASSIFIER, device=None, progress=None, **options) -> Classifier:
    """The detector for this data + split + classifier config, trained once and cached.

    Trained on the real train split with the classifier's ``recipe`` (class oversampling,
    flips/rotations), best epoch chosen on the lesion-grouped val split, scored on the test
    split. The file lives in ``<cache>/detectors/`` (``AUGFORGE_CACHE_DIR`` overrides
    ``cfg.data.cache_dir``). The returned model is in eval mode and carries
    ``detector_info`` (test metrics, confusion matrix, training history).
    """
    device = resolve_device(device)
    key = detector_key(cfg, arrays, splits, classifier, options)
    path = cache_root(cfg) / "detectors" / f"{classifier}-{cfg.data.image_size}px-{key}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = registry.build("classifier", classifier, **state["config"])
        model.load_state_dict(state["state"])
    else:
        sets = split_sets(arrays, splits)
        # the initial weights come from DETECTOR_SEED, not from the global RNG: before this, two
        # evaluations of the same data trained detectors 0.03 balanced accuracy apart, because
        # loading a checkpoint or building a generator had consumed a different number of draws
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(DETECTOR_SEED)
            model = registry.build(
                "classifier", classifier, image_size=int(cfg.data.image_size), num_classes=len(arrays.class_names), **options
            )
        fit = fit_classifier(model, sets["train"], sets["val"], seed=DETECTOR_SEED, device=device, progress=progress)
        probs = predict_proba(fit.model, sets["test"].images, device)
        metrics, confusion = classification_metrics(probs, sets["test"].labels, list(arrays.class_names))
        state = {
            "kind": "detector", "classifier": classifier, "config": dict(model.config),
            "state": {k: v.detach().cpu() for k, v in fit.model.state_dict().items()},
            "class_names": list(arrays.class_names), "metrics": metrics, "confusion": confusion.tolist(),
            "history": fit.history, "best_epoch": fit.best_epoch, "best_val_balanced_accuracy": fit.best_score,
            "recipe": fit.recipe, "split_sizes": {k: int(len(v)) for k, v in splits.items()}, "key": key,
        }
        save_checkpoint(path, state)  # atomic: a crash never leaves half a detector behind
        model = fit.model
    model = model.to(device).eval()
    model.detector_info = {k: v for k, v in state.items() if k != "state"} | {"path": str(path)}
    return model
