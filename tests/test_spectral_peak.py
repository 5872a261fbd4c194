"""The `spectral-peak` evaluator: finds a periodic texture, its period and direction, and stays
near its real-half baseline for images without one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from augforge.interfaces import ImageSet


def blobs(n: int, seed: int) -> np.ndarray:
    """Smooth random colour fields in uint8 [n, 64, 64, 3]: no periodic structure."""
    x = gaussian_filter(np.random.default_rng(seed).normal(size=(n, 64, 64, 3)), (0, 3, 3, 0))
    return ((x - x.min()) / (x.max() - x.min()) * 200 + 20).astype(np.uint8)


def with_grating(images: np.ndarray, period_x: float, period_y: float | None = None, amplitude: float = 6.0) -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:64]
    phase = xx / period_x + (yy / period_y if period_y else 0.0)
    return np.clip(images + amplitude * np.sin(2 * np.pi * phase)[None, :, :, None], 0, 255).astype(np.uint8)


def test_spectral_peak_finds_a_grating_its_period_and_direction():
    from augforge_plugins.artefacts import spectral_peak

    real, gen = blobs(200, 0), blobs(200, 1)
    clean, _, _ = spectral_peak(gen, real)
    peak, period, angle = spectral_peak(with_grating(gen, 5.0), real)
    assert peak > 100 * clean  # a 6-grey-level stripe pattern stands far above sampling noise
    assert period == pytest.approx(5.0, abs=0.2) and angle == pytest.approx(0.0)  # 64/13 px: the nearest bin
    peak45, period45, angle45 = spectral_peak(with_grating(gen, 6.0, 6.0), real)
    assert peak45 > 100 * clean and angle45 == pytest.approx(45.0) and period45 == pytest.approx(6 / np.sqrt(2), abs=0.2)
    with pytest.raises(ValueError, match="differ in size"):
        spectral_peak(gen, real[:, :32, :32])


def test_spectral_peak_evaluator_reports_a_real_half_baseline():
    from augforge_plugins.artefacts import SpectralPeak

    real = ImageSet(blobs(200, 0), np.zeros(200, int), ["nv"])
    clean = SpectralPeak().evaluate(real, ImageSet(blobs(200, 1), np.zeros(200, int), ["nv"]), real, None).metrics
    meshed = SpectralPeak().evaluate(real, ImageSet(with_grating(blobs(200, 1), 4.0), np.zeros(200, int), ["nv"]), real,
                                     None).metrics
    assert clean["spectral_peak"] < 3 * clean["spectral_peak_real_baseline"]  # noise-level, like two real halves
    assert meshed["spectral_peak"] > 100 * meshed["spectral_peak_real_baseline"]
    assert meshed["spectral_peak_period_px"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="needs real held-out images"):
        SpectralPeak().evaluate(real, real, ImageSet(blobs(1, 2), np.zeros(1, int), ["nv"]), None)
