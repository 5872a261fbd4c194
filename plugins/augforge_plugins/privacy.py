"""Memorisation: how close generated lesions come to training lesions, against real new lesions' distances."""

from __future__ import annotations

import numpy as np
import pandas as pd

from augforge.interfaces import EvalResult, Evaluator
from augforge_plugins.measures import nearest_neighbours, pixel_vectors


def copy_threshold(baseline_distances: np.ndarray, quantile: float = 0.01) -> float:
    """The distance below which a generated image counts as a near-copy: the ``quantile`` of
    real held-out images' nearest-training-image distances."""
    d = np.asarray(baseline_distances)
    return float(np.quantile(d[np.isfinite(d)], quantile))


def near_copy_mask(
    generated: np.ndarray,
    train: np.ndarray,
    threshold: float | None = None,
    *,
    baseline: np.ndarray | None = None,
    baseline_groups=None,
    train_groups=None,
    quantile: float = 0.01,
    size: int = 32,
) -> np.ndarray:
    """True for each generated image (``uint8[N, H, W, 3]``) that is a near-copy of a training
    image in pixel space.

    The threshold is either given (an RMS pixel distance in [0, 1]) or taken from real
    held-out images (``baseline``): the ``quantile`` of their nearest-training-image
    distances, so a generated image is flagged when it is closer to the training set than
    99% (by default) of genuinely new lesions are. ``augforge generate --drop-near-copies``
    uses this.
    """
    d, threshold = near_copy_distances(generated, train, threshold, baseline=baseline, baseline_groups=baseline_groups,
                                       train_groups=train_groups, quantile=quantile, size=size)
    return d < threshold


def near_copy_distances(generated, train, threshold=None, *, baseline=None, baseline_groups=None, train_groups=None,
                        quantile: float = 0.01, size: int = 32) -> tuple[np.ndarray, float]:
    """``(distance float[N], threshold)``: each generated image's RMS pixel distance to its
    nearest training image, and the near-copy threshold (given, or from ``baseline`` as
    ``near_copy_mask`` explains). ``near_copy_mask`` and the novelty filter share it."""
    tr = pixel_vectors(train, size)
    if threshold is None:
        if baseline is None:
            raise ValueError("a near-copy check needs a threshold or real held-out baseline images")
        base_d, _ = nearest_neighbours(pixel_vectors(baseline, size), tr, query_groups=baseline_groups, ref_groups=train_groups)
        threshold = copy_threshold(base_d, quantile)
    d, _ = nearest_neighbours(pixel_vectors(generated, size), tr)
    return d, float(threshold)


def _pairs_sheet(gen_images, train_images, order, gen_idx_nn, dists, n_pairs: int = 24) -> np.ndarray:
    """A sheet of (generated | nearest training image) pairs, closest first, two pairs per row;
    captions give the distance and both indices (``tables/nearest_training_images.csv``)."""
    from PIL import Image, ImageDraw

    order = order[:n_pairs]
    h = max(96, 2 * gen_images.shape[1])  # upscaled (nearest) so small images stay inspectable
    cell_w, cell_h = 2 * h + 12, h + 14
    cols = 2
    rows = max(1, int(np.ceil(len(order) / cols)))
    sheet = Image.new("RGB", (cols * cell_w + 8, rows * cell_h + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, i in enumerate(order):
        x0, y0 = 4 + (n % cols) * cell_w, 2 + (n // cols) * cell_h
        g = Image.fromarray(gen_images[i]).resize((h, h), Image.Resampling.NEAREST)
        t = Image.fromarray(train_images[gen_idx_nn[i]]).resize((h, h), Image.Resampling.NEAREST)
        sheet.paste(g, (x0, y0))
        sheet.paste(t, (x0 + h + 2, y0))
        draw.text((x0, y0 + h), f"d={dists[i]:.3f} g{i} t{gen_idx_nn[i]}", fill=(0, 0, 0))
    return np.asarray(sheet)


class Memorization(Evaluator):
    name = "memorization"
    description = "share of generated images closer to a training image than real held-out lesions are"
    objective = "memorization"
    direction = "minimize"

    def __init__(self, *, quantile: float = 0.01, pixel_size: int = 32, pairs: int = 24):
        self.quantile, self.pixel_size, self.pairs = quantile, pixel_size, pairs

    def evaluate(self, real_train, generated, real_test, context):
        spaces = {
            "feature": (context.features(generated), context.features(real_train), context.features(real_test)),
            "pixel": tuple(pixel_vectors(s.images, self.pixel_size) for s in (generated, real_train, real_test)),
        }
        metrics, nn = {}, {}
        rows = {"generated_index": np.arange(len(generated)), "label": [generated.class_names[i] for i in generated.labels]}
        for space, (g, tr, te) in spaces.items():
            gd, gi = nearest_neighbours(g, tr)
            # held-out real lesions: never matched with another photo of themselves
            bd, _ = nearest_neighbours(te, tr, query_groups=real_test.groups, ref_groups=real_train.groups)
            thr = copy_threshold(bd, self.quantile)
            metrics[f"memorization_{space}"] = float(np.mean(gd < thr))
            metrics[f"nn_distance_ratio_{space}"] = float(np.median(gd) / np.median(bd[np.isfinite(bd)]))
            metrics[f"copy_threshold_{space}"] = thr
            nn[space] = (gd, gi)
            rows[f"{space}_distance"], rows[f"{space}_train_index"] = gd, gi
            if real_train.groups is not None:
                rows[f"{space}_train_group"] = np.asarray(real_train.groups)[gi]
        metrics["memorization"] = max(metrics["memorization_feature"], metrics["memorization_pixel"])
        figures = {}
        for space in spaces:
            gd, gi = nn[space]
            figures[f"closest_pairs_{space}"] = _pairs_sheet(generated.images, real_train.images, np.argsort(gd), gi, gd, self.pairs)
        table = pd.DataFrame(rows).sort_values("pixel_distance")
        return EvalResult(metrics, figures, {"nearest_training_images": table})
