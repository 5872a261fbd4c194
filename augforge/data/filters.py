"""Paper A's image filters, as scores on decoded RGB pixels.

Paper A excluded round-framed microscope images (a dark circular vignette around the field
of view) and images with ink marks or rulers on the skin. Each filter here is a score in
[0, 1] with a fixed threshold; ``augforge.data`` computes both scores once per image while
decoding (they are cached with the pixels) and drops images at or above the threshold when
``data.drop_framed`` / ``data.drop_marks`` are set, listing each one with its score.

The thresholds were chosen on hand-labelled HAM10000 images (../shared/data) and measured on
a second, held-out labelled set; benchmarks/README.md ("Filters") gives precision/recall and
how the labels were made (``benchmarks/filter_labels.csv``; ``benchmarks/bench_filters.py``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: bump when a score changes, so cached scores are recomputed
VERSION = 1

#: mean dark fraction of the four corner tips at which an image counts as round-framed
FRAMED_THRESHOLD = 0.5
#: share of vivid blue/violet (marker-ink) pixels at which an image counts as marked
MARKS_THRESHOLD = 0.001

# A corner tip is the triangle u + v < CORNER (u, v in [0, 1] from that corner): about 0.5 %
# of the image each, where a round field of view shows its black surround.
_CORNER = 0.1
# "Dark" is relative to the centre of the image (exposure varies between devices), with an
# absolute ceiling so a dim but unframed photo is not flagged.
_DARK_REL, _DARK_ABS = 0.45, 70.0
# Surgical marker and gentian violet are far bluer than any skin or lesion colour: blue minus
# green above 70 (0..255) with blue at least red-10. Only the outer part of the image counts
# (normalised elliptic radius > 0.6): marks sit beside the lesion, blue lesion areas (blue
# nevi, blue-white veil) sit in the middle.
_INK_BLUE_MINUS_GREEN = 70.0
_INK_OUTER = 0.6


#: longest side (pixels) the scores look at; larger images are reduced by an integer factor
SCORE_SIDE = 128


def _small(rgb: np.ndarray) -> np.ndarray:
    """Reduce by an integer factor (box filter) to about ``SCORE_SIDE`` pixels: scores are size-free."""
    k = max(rgb.shape[:2]) // SCORE_SIDE
    if k <= 1:
        return rgb.astype(np.float32)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).reduce(k), dtype=np.float32)


def scores(rgb: np.ndarray) -> tuple[float, float]:
    """``(framed_score, marks_score)`` from one reduced copy of the image."""
    a = _small(rgb)
    return framed_score(a, reduced=True), marks_score(a, reduced=True)


def framed_score(rgb: np.ndarray, reduced: bool = False) -> float:
    """Share of the four corner tips that are dark relative to the centre (0..1).

    Round-framed microscope images have black corners around a bright circular field; a
    score >= ``FRAMED_THRESHOLD`` flags one. Dark backgrounds beside a limb or dense dark
    hair in the corners can score high too (see the measured precision).
    """
    a = rgb if reduced else _small(rgb)
    lum = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
    h, w = lum.shape
    u = (np.arange(w) + 0.5)[None, :] / w
    v = (np.arange(h) + 0.5)[:, None] / h
    centre = (np.abs(u - 0.5) < 0.25) & (np.abs(v - 0.5) < 0.25)
    dark = lum < min(_DARK_ABS, _DARK_REL * float(np.median(lum[centre])))
    fracs = []
    for cu, cv in ((u, v), (1 - u, v), (u, 1 - v), (1 - u, 1 - v)):
        tip = (cu + cv) < _CORNER
        fracs.append(dark[tip].mean() if tip.any() else 0.0)
    return float(np.mean(fracs))


def marks_score(rgb: np.ndarray, reduced: bool = False) -> float:
    """Share of vivid blue/violet pixels (surgical-marker ink, coloured rulers) (0..1).

    A score >= ``MARKS_THRESHOLD`` flags an image. Black ruler ticks and black pen are not
    detected (they look like hair); see the measured recall.
    """
    a = rgb if reduced else _small(rgb)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    h, w = r.shape
    u = ((np.arange(w) + 0.5)[None, :] / w - 0.5) / 0.5
    v = ((np.arange(h) + 0.5)[:, None] / h - 0.5) / 0.5
    outer = (u**2 + v**2) > _INK_OUTER**2
    ink = ((b - g) > _INK_BLUE_MINUS_GREEN) & (b > r - 10) & outer
    return float(ink.mean())


def is_framed(rgb: np.ndarray) -> bool:
    return framed_score(rgb) >= FRAMED_THRESHOLD


def has_marks(rgb: np.ndarray) -> bool:
    return marks_score(rgb) >= MARKS_THRESHOLD
