"""Generating the images an evaluation scores: N per class, optionally JPEG round-tripped like the real data; the optional local Inception."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from augforge.evaluation.classify import resolve_device
from augforge.errors import ConfigError, EvaluationError
from augforge.interfaces import ImageSet


def jpeg_roundtrip(images: np.ndarray, quality: int, side: int | None = None) -> np.ndarray:
    """Pass ``uint8[N, H, W, 3]`` through JPEG at ``quality`` (1-100) the way the real images went:
    compressed at their stored resolution ``side`` (upscaled to it first), then resized back
    with the data pipeline's Lanczos filter. ``side`` None: compress at the images' own size."""
    from PIL import Image

    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"--jpeg-quality {quality}: expected 1-100 (the shared HAM10000 copy is about 75)")
    size = images.shape[1]
    out = np.empty_like(images)
    for i, img in enumerate(images):
        im = Image.fromarray(img)
        if side and side != size:
            im = im.resize((side, side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out[i] = np.asarray(im)
    return out


def stored_side(arrays, n: int = 25) -> int | None:
    """Median shorter side of the real source files (their stored resolution, read from the
    headers of a few), the scale at which their JPEG artefacts were made; None without files."""
    from PIL import Image

    if "source" not in arrays.meta:
        return None
    sides = []
    for src in arrays.meta["source"].head(n):
        try:
            with Image.open(src) as im:
                sides.append(min(im.size))
        except (OSError, ValueError):
            continue
    return int(np.median(sides)) if sides else None


@torch.no_grad()
def sample_images(
    generator,
    counts,
    class_names: list[str],
    *,
    seed: int = 0,
    device=None,
    batch_size: int = 256,
    jpeg_quality: int | None = None,
    jpeg_side: int | None = None,
    label_fn: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ImageSet:
    """``counts[c]`` images of class ``c`` from ``generator`` as an ``ImageSet`` (uint8).

    The noise comes from a CPU generator seeded with ``seed``, so the same call gives the
    same images on any device. An unconditional generator makes ``sum(counts)`` images;
    with one class they all get label 0, otherwise ``label_fn(images)`` (the detector's
    prediction) labels them.
    """
    from augforge.grid import to_uint8

    device = resolve_device(device) if device is not None else next(generator.parameters()).device
    counts = np.asarray(counts, int)
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    rng = torch.Generator().manual_seed(int(seed))
    was_training = generator.training
    generator.eval()
    chunks = []
    try:
        for i in range(0, n, batch_size):
            y = torch.from_numpy(labels[i : i + batch_size])
            z = torch.randn(len(y), generator.latent_dim, generator=rng)
            x = generator(z.to(device), y.to(device) if generator.conditional else None)
            chunks.append(to_uint8(x))
    finally:
        generator.train(was_training)
    size = getattr(generator, "image_size", None) or 0
    images = np.concatenate(chunks) if chunks else np.zeros((0, size, size, 3), np.uint8)
    if jpeg_quality:
        images = jpeg_roundtrip(images, jpeg_quality, jpeg_side)
    if not generator.conditional and len(class_names) > 1:
        if label_fn is None:
            raise EvaluationError("an unconditional generator over several classes needs label_fn (the detector) to label its images")
        labels = np.asarray(label_fn(images), np.int64) if n else labels
    return ImageSet(images, labels.astype(np.int64), list(class_names))


def load_inception(path, device=None, batch_size: int = 64) -> Callable[[np.ndarray], np.ndarray]:
    """Feature function of a local TorchScript Inception-v3: ``uint8[N, H, W, 3] -> float64[N, F]``.

    The file format is NVIDIA's ``inception-2015-12-05.pt`` (the network behind the FID
    numbers of StyleGAN2-ADA/3 and clean-fid): ``net(x, return_features=True)`` with ``x``
    uint8 ``[N, 3, H, W]`` in 0..255, resized to 299 px inside the network, returning the
    2,048-d pool features. Only a file the user points to is read; nothing is downloaded.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"--inception-weights {path}: no such file. Point it to a local TorchScript Inception-v3 "
                              f"(e.g. NVIDIA's inception-2015-12-05.pt); augforge never downloads weights")
    device = resolve_device(device)
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.13, but it is the format the file comes in
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # any unreadable file: say what was expected
        raise EvaluationError(f"{path}: not a TorchScript file ({type(exc).__name__}: {exc}); expected a module saved with "
                              f"torch.jit.save whose forward(x_uint8_nchw, return_features=True) returns features") from None

    def features(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(0, 3, 1, 2).to(device)
                try:
                    f = net(x, return_features=True)
                except Exception as exc:
                    raise EvaluationError(f"{path}: calling it as net(uint8 [N,3,H,W], return_features=True) failed: "
                                          f"{type(exc).__name__}: {exc}") from None
                out.append(f.reshape(len(x), -1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    return features
