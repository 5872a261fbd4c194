"""Pixel-space artefact tests, cheap enough for every in-training evaluation.

`template-share` — how much of a class's images is one shared picture. The mean image of a
class holds what every sample has in common; its spatial variance over the samples' own
variance is the share of the picture that does not change with z. Real lesions share a
centred blob (measured on the shared 64-px HAM10000 sample: 0.39 for nv, 0.13 for bcc);
a mode-seeking generator that paints one template per class — the diamond lattice of the
`modern-cpu` race winner scored 0.61 / 0.42 — scores higher. Reported with the real held-out
baseline and their ratio (1 = as varied as real lesions).

`blockiness` — the block (chequerboard) artefacts of upsampling GANs.

A generator that doubles its maps with nearest-neighbour upsampling can tile its images with
constant blocks of 2**k pixels. The test: the mean absolute horizontal step between
neighbouring pixels where a block border of side ``block`` falls (columns 8k-1 -> 8k for
8 px), divided by the same mean everywhere else. Natural images score about 1 (measured on
the shared 64-px HAM10000 sample: 1.01 / 1.03 / 1.05 at 4 / 8 / 16 px); block artefacts push
it up (the first ``modern-cpu`` generator: ~1.8 at 8 px), a grid of smoothed seams pulls it
below 1. The same ratio is computed for the real held-out images, the baseline a perfect
generator would score. Needs no detector, so it is cheap enough to run every evaluation.

`spectral-peak` — periodic textures (meshes, herringbones) that the eye finds in sample grids
and the block test misses, because they are not aligned to a block grid. The mean 2-D power
spectrum of the grey images (Hann-windowed, each image's mean removed, normalised to total
power 1) of the generated set is divided bin by bin by that of the real held-out set; the
largest ratio away from the lowest frequencies is the peak, reported with its period in px and
direction. Two random halves of the real set give the baseline a set without a periodic
artefact scores (sampling noise alone).
"""

from __future__ import annotations

import numpy as np

from augforge.interfaces import EvalResult, Evaluator
from augforge.plugins import hookimpl


def block_step_ratio(images: np.ndarray, block: int) -> float:
    """Mean |horizontal step| at borders of ``block``-px blocks / mean elsewhere (uint8[N,H,W,3])."""
    if images.ndim != 4 or images.shape[2] < 2 * block:
        raise ValueError(f"blockiness: need images [N, H, W, 3] at least {2 * block} px wide, got {list(images.shape)}")
    steps = np.zeros(images.shape[2] - 1)
    for start in range(0, len(images), 256):  # float32 copies of 256 images at a time bound the memory
        chunk = images[start : start + 256].astype(np.float32)
        steps += np.abs(np.diff(chunk, axis=2)).sum(axis=(0, 1, 3))
    border = (np.arange(len(steps)) + 1) % block == 0  # the step from column block*k-1 to block*k
    return float(steps[border].mean() / max(steps[~border].mean(), 1e-12))


class Blockiness(Evaluator):
    name = "blockiness"
    description = "block-border / in-block pixel-step ratio at 4, 8, 16 px (1 = no block artefact); real held-out baseline"
    objective = "blockiness_8"
    direction = "minimize"

    def __init__(self, *, blocks: tuple[int, ...] = (4, 8, 16)):
        self.blocks = tuple(int(b) for b in blocks)

    def evaluate(self, real_train, generated, real_test, context):
        width = generated.images.shape[2]
        metrics = {}
        for b in self.blocks:
            if width < 2 * b:  # no border inside the image at this block size (16-px images, 16-px blocks)
                metrics[f"blockiness_{b}"] = float("nan")
                continue
            metrics[f"blockiness_{b}"] = block_step_ratio(generated.images, b)
            if len(real_test):
                metrics[f"blockiness_{b}_real_baseline"] = block_step_ratio(real_test.images, b)
        return EvalResult(metrics)


def power_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean power spectrum of the grey, mean-removed, Hann-windowed images (uint8[N,H,W,3]),
    DC at the centre, normalised to sum 1 (so overall contrast does not count, only its spread)."""
    h, w = images.shape[1:3]
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    total = np.zeros((h, w), np.float64)
    for start in range(0, len(images), 256):  # float32 copies of 256 images at a time bound the memory
        grey = images[start : start + 256].astype(np.float32).mean(axis=3)
        grey -= grey.mean(axis=(1, 2), keepdims=True)
        total += (np.abs(np.fft.fft2(grey * window)) ** 2).sum(axis=0)
    total = np.fft.fftshift(total)
    return total / max(total.sum(), 1e-12)


def spectral_peak(generated: np.ndarray, real: np.ndarray, min_radius: int = 3) -> tuple[float, float, float]:
    """(max power ratio generated/real, its period in px, its direction in degrees; 0 = a
    pattern that repeats along x) over frequency bins at least ``min_radius`` bins from DC:
    the Hann window spreads DC and the lesion's own blob over the few lowest bins."""
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"spectral-peak: generated {list(generated.shape[1:])} and real {list(real.shape[1:])} images differ in size")
    ratio = power_spectrum(generated) / np.maximum(power_spectrum(real), 1e-12)
    h, w = ratio.shape
    fy, fx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    ratio[np.hypot(fy, fx) < min_radius] = 0.0
    iy, ix = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    cycles_per_px = np.hypot(fy[iy, ix] / h, fx[iy, ix] / w)
    return float(ratio[iy, ix]), float(1.0 / cycles_per_px), float(np.degrees(np.arctan2(fy[iy, ix], fx[iy, ix])) % 180)


class SpectralPeak(Evaluator):
    name = "spectral-peak"
    description = "largest generated/real power-spectrum ratio (periodic textures), its period in px; real-half baseline"
    objective = "spectral_peak"
    direction = "minimize"

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def evaluate(self, real_train, generated, real_test, context):
        if len(real_test) < 2:
            raise ValueError("spectral-peak needs real held-out images to compare with (got fewer than 2)")
        peak, period, angle = spectral_peak(generated.images, real_test.images)
        order = np.random.default_rng(self.seed).permutation(len(real_test))
        half = len(order) // 2
        baseline = spectral_peak(real_test.images[order[:half]], real_test.images[order[half:]])[0]
        return EvalResult({"spectral_peak": peak, "spectral_peak_period_px": period, "spectral_peak_angle_deg": angle,
                           "spectral_peak_real_baseline": baseline})


def template_share(images: np.ndarray, labels, min_per_class: int = 8) -> float:
    """Mean over classes of var(class-mean image) / mean var(image), spatial variances per channel."""
    shares = []
    for c in np.unique(labels):
        x = images[np.asarray(labels) == c].astype(np.float32)
        if len(x) < min_per_class:
            continue
        m = x.mean(0)
        shared = ((m - m.mean(axis=(0, 1))) ** 2).mean()
        own = ((x - x.mean(axis=(1, 2), keepdims=True)) ** 2).mean()
        shares.append(shared / max(own, 1e-12))
    return float(np.mean(shares)) if shares else float("nan")


class TemplateShare(Evaluator):
    name = "template-share"
    description = "share of a class's pixel variance that every sample has in common (1 / n of real = as varied as real)"
    objective = "template_share_ratio"
    direction = "minimize"

    def evaluate(self, real_train, generated, real_test, context):
        gen = template_share(generated.images, generated.labels)
        metrics = {"template_share": gen}
        if len(real_test):
            real = template_share(real_test.images, real_test.labels)
            metrics.update(template_share_real=real, template_share_ratio=gen / real if real > 0 else float("nan"))
        return EvalResult(metrics)


@hookimpl
def augforge_register_evaluators():
    return [Blockiness, TemplateShare, SpectralPeak]
