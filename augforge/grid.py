"""Pictures of a run: sample grids (one row per class) and the loss-curve PNG.

Pure functions of arrays; the training loop decides when to call them and what to log.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images) -> np.ndarray:
    """``float[N, 3, H, W]`` tensor/array in [-1, 1] -> ``uint8[N, H, W, 3]`` (uint8 passes through)."""
    if hasattr(images, "detach"):
        images = images.detach().float().cpu().numpy()
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(
    images,
    nrow: int,
    *,
    padding: int = 2,
    pad_value: int = 255,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Tile images into a grid with ``nrow`` images per row; returns ``uint8[H, W, 3]``.

    ``images`` is ``uint8[N, H, W, 3]`` or a ``[-1, 1]`` float batch ``[N, 3, H, W]``.
    ``row_labels`` (e.g. class names) are written in a left margin, one per row.
    """
    imgs = to_uint8(images)
    if imgs.ndim != 4 or imgs.shape[-1] != 3:
        raise ValueError(f"make_grid wants uint8[N, H, W, 3] or float[N, 3, H, W], got {imgs.shape}")
    n, h, w, _ = imgs.shape
    ncol = max(1, int(nrow))
    rows = (n + ncol - 1) // ncol
    margin = 0
    if row_labels:
        margin = 8 + 7 * max(len(s) for s in row_labels)  # default bitmap font: ~6-7 px a character
    gh = rows * (h + padding) + padding
    gw = margin + ncol * (w + padding) + padding
    grid = np.full((gh, gw, 3), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        y, x = padding + r * (h + padding), margin + padding + c * (w + padding)
        grid[y : y + h, x : x + w] = imgs[i]
    if row_labels:
        pil = Image.fromarray(grid)
        draw = ImageDraw.Draw(pil)
        font = ImageFont.load_default()
        for r, label in enumerate(row_labels[:rows]):
            y = padding + r * (h + padding) + h // 2 - 5
            draw.text((4, y), str(label), fill=(0, 0, 0), font=font)
        grid = np.asarray(pil)
    return grid


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``uint8[H, W, 3]`` as PNG (temp file + rename so readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(np.asarray(array, np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            from augforge.envvars import no_space

            raise no_space(path, "a sample grid") from None
        raise
    return path


def loss_curve_png(history: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> Path | None:
    """Plot the logged training curves (``history["step"]`` against each series) to a PNG.

    Top panel: ``loss_d`` and ``loss_g``; bottom panel: ``d_real`` and ``d_fake`` (mean raw
    discriminator logits). Series that are missing are skipped. Without matplotlib (a bare
    GPU machine, scripts/device-check.sh) nothing is drawn and None is returned: the curve
    is a picture of numbers the checkpoint keeps (``extra.history``), not worth a failed run.
    """
    try:
        import matplotlib
    except ImportError:
        warnings.warn(f"matplotlib is not installed: no loss curve at {path} (pip install matplotlib)", stacklevel=2)
        return None

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = history.get("step", [])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, keys, ylabel in (
        (ax1, ("loss_d", "loss_g"), "loss"),
        (ax2, ("d_real", "d_fake"), "mean D logit"),
    ):
        for key in keys:
            values = history.get(key)
            if values and len(values) == len(steps):
                ax.plot(steps, values, label=key, linewidth=1)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    ax2.set_xlabel("step")
    if title:
        ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
