"""ONNX export of a training run's discriminator, the realism scorer that travels beside its generator.

``augforge export --with-discriminator --out G.onnx`` writes ``G.discriminator.onnx`` next to
``G.onnx`` and names it in the generator's metadata (``discriminator_file`` and its
``discriminator_sha256``), so the torch-free runtime can score and filter what it draws
(``augforge_runtime.realism``: discriminator rejection sampling, Azadi et al. 2019)::

    inputs   image  uint8  [batch, H, W, 3]   what the generator's images are after rounding
             label  int64  [batch]            (conditional discriminators only)
    output   realism float32 [batch]          the discriminator's logit, higher = judged more real

The graph converts the uint8 image to D's [-1, 1] float input itself, so a consumer feeds it
the images it already has. The weights are those of the checkpoint's discriminator at the same
step as the generator (D has no EMA copy); spectral norm is folded exactly as for G.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from augforge_runtime.realism import DISCRIMINATOR_FORMAT, discriminator_path_for
from augforge.export.onnx import PARITY_BATCHES, ExportError, class_props, framed, write_checked

PARITY_ATOL = 1e-3  # logits are unbounded (|logit| ~ 1-20); 1e-3 is far below a filtering decision's scale


def export_module(discriminator):
    """``(image uint8 NHWC[, label]) -> realism float[batch]``: D behind the runtime's image layout."""
    def scale(image):  # same as augforge.evaluation.classify.to_tensor
        return image.permute(0, 3, 1, 2).float() / 127.5 - 1.0

    return framed(discriminator, scale, lambda logit: logit.float().reshape(-1))


def _example(discriminator, image_size: int, batch: int, rng: np.random.Generator):
    import torch

    image = torch.from_numpy(rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8))
    if getattr(discriminator, "conditional", False):
        return image, torch.from_numpy(rng.integers(0, discriminator.num_classes, batch).astype(np.int64))
    return (image,)


def parity_check(module, onnx_path: str | os.PathLike, image_size: int, batches=PARITY_BATCHES, seed: int | None = None) -> float:
    """Max abs difference of PyTorch and onnxruntime logits on fresh random images."""
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for b in batches:
        args = _example(module.net, image_size, b, rng)
        with torch.no_grad():
            ref = module(*args).numpy()
        out = sess.run(["realism"], {n: a.numpy() for n, a in zip(["image", "label"], args)})[0]
        if out.shape != (b,):
            raise ExportError(f"onnxruntime realism output has shape {list(out.shape)}, expected [{b}]")
        worst = max(worst, float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()))
    return worst


def export_discriminator(discriminator, generator_path: str | os.PathLike, metadata: dict[str, Any], *,
                         exporter: str = "auto") -> Path:
    """Write the discriminator beside ``generator_path`` (``NAME.discriminator.onnx``); returns its path.

    ``metadata`` is the generator's (class names, image size, run, step, checkpoint digest); the
    file gets its own ``format`` and input/output description. Nothing is written when the export
    or the parity check fails.
    """
    import json

    size = int(metadata["image_size"])
    props = class_props(discriminator, metadata, DISCRIMINATOR_FORMAT, what="discriminator")
    k, conditional = int(props["num_classes"]), json.loads(props["conditional"])
    inputs = {"image": f"uint8 [batch, {size}, {size}, 3], RGB"}
    if conditional:
        inputs["label"] = f"int64 [batch] in 0..{k - 1}, the index into class_names"
    props |= {
        "image_size": str(size),
        "inputs": json.dumps(inputs),
        "output": "realism float32 [batch]: the discriminator's logit, higher = judged more real",
        "discriminator": type(discriminator).name if hasattr(type(discriminator), "name") else type(discriminator).__name__,
    }
    for key in ("training_run_id", "dataset", "step", "checkpoint_sha256", "augforge_version"):
        if metadata.get(key) not in (None, ""):
            props[key] = str(metadata[key])
    module = export_module(discriminator)
    doc = (f"augforge discriminator: image uint8 [batch, {size}, {size}, 3]"
           + (" + label int64 [batch]" if conditional else "") + " -> realism float32 [batch] (logit); see metadata_props")
    return write_checked(module, _example(discriminator, size, 2, np.random.default_rng(0)),
                         discriminator_path_for(generator_path), props, doc,
                         lambda f: parity_check(module, f, size), PARITY_ATOL, exporter=exporter,
                         inputs=("image", "label"), output="realism")
