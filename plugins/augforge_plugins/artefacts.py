"""`blockiness`: a pixel-space test for the block (chequerboard) artefacts of upsampling GANs.

A generator that doubles its maps with nearest-neighbour upsampling can tile its images with
constant blocks of 2**k pixels. The test: the mean absolute horizontal step between
neighbouring pixels where a block border of side ``block`` falls (columns 8k-1 -> 8k for
8 px), divided by the same mean everywhere else. Natural images score about 1 (measured on
the shared 64-px HAM10000 sample: 1.01 / 1.03 / 1.05 at 4 / 8 / 16 px); block artefacts push
it up (the first ``modern-cpu`` generator: ~1.8 at 8 px), a grid of smoothed seams pulls it
below 1. The same ratio is computed for the real held-out images, the baseline a perfect
generator would score. Needs no detector, so it is cheap enough to run every evaluation.
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


@hookimpl
def augforge_register_evaluators():
    return [Blockiness]
