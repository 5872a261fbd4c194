"""ONNX export of a trained generator, with a parity check.

The exported file is the hand-off format: one self-contained ``.onnx`` file (weights inside),
read by ``augforge generate`` and by the torch-free ``augforge.runtime``::

    inputs   z      float32 [batch, latent_dim]
             label  int64   [batch]            (conditional generators only)
    output   image  float32 [batch, 3, H, W] in [-1, 1]   (default)
                    uint8   [batch, H, W, 3] in [0, 255]  (--uint8)

Everything a consumer needs to know travels in the model's ``metadata_props`` (``METADATA_KEYS``).
A file is only written after ``onnx.checker`` and an onnxruntime-vs-PyTorch parity check on
fresh random inputs at batch 1 and a larger batch pass; otherwise nothing is left behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from augforge import __version__
from augforge.errors import AugforgeError
from augforge.runtime import FORMAT, LATENT_DISTRIBUTION  # the files' contract; the torch-free runtime checks it


METADATA_KEYS = (
    "format", "class_names", "num_classes", "conditional", "latent_dim", "latent_distribution", "inputs",
    "image_size", "value_range", "output_layout", "training_run_id", "dataset", "dataset_config", "generator",
    "step", "ema", "checkpoint_sha256", "config", "augforge_version", "exporter",
    "discriminator_file", "discriminator_sha256",  # only with `augforge export --with-discriminator`
)
#: config entries that only describe the exporting machine (folders); left out of the file
MACHINE_LOCAL = {"train": ("out_dir",), "data": ("cache_dir",)}
PARITY_ATOL = 1e-4  # max abs difference on the [-1, 1] float output
PARITY_BATCHES = (1, 16)  # batch 1 and a larger batch: proves the dynamic batch axis works
DEFAULT_ALIAS = "champion"


class ExportError(AugforgeError):
    """Export refused: the exporter failed, or the ONNX file disagrees with PyTorch."""


# --------------------------------------------------------------------------------------------
# The exported module


def bake(generator):
    """A deep copy in eval mode with spectral-norm reparametrisations folded into plain weights.

    In eval mode spectral norm divides by a fixed sigma (no power iteration), so folding it is
    exact; the graph gets simpler and the legacy exporter (no ``aten::vdot``) can handle it.
    """
    import torch
    from torch.nn.utils import parametrize

    g = copy.deepcopy(generator).eval()
    with torch.no_grad():
        for module in g.modules():
            if parametrize.is_parametrized(module):
                # a deep copy shares the injected Parametrized* class with the original, and
                # removing a parametrisation deletes a property from that class: give the copy
                # its own class first, or the caller's generator loses its `weight`
                cls = module.__class__
                module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
                for name in list(module.parametrizations.keys()):
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
            for key, hook in list(getattr(module, "_forward_pre_hooks", {}).items()):
                if type(hook).__name__ == "SpectralNorm":  # old-style torch.nn.utils.spectral_norm
                    torch.nn.utils.remove_spectral_norm(module, hook.name)
    for p in g.parameters():
        p.requires_grad_(False)
    return g


def framed(net, pre, post):
    """``post(net(pre(x)[, label]))`` as an exportable module around the baked ``net``.

    ``pre`` and ``post`` convert between the file's layout and the network's [-1, 1] NCHW one;
    ``label`` is an input only where ``net`` is conditional, so the graph's inputs match it.
    """
    from torch import nn

    baked = bake(net)
    conditional = bool(getattr(net, "conditional", False))

    class Framed(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = baked

        if conditional:
            def forward(self, x, label):
                return post(self.net(pre(x), label))
        else:
            def forward(self, x):
                return post(self.net(pre(x), None))

    return Framed().eval()


def export_module(generator, uint8: bool = False):
    """The ``torch.nn.Module`` that is exported: ``(z[, label]) -> image`` in the file's layout."""
    import torch

    def to_uint8_nhwc(x):  # range checked by check_output before export; the clamp only guards rounding
        return ((x.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)

    return framed(generator, lambda z: z, to_uint8_nhwc if uint8 else (lambda x: x))


def _example(generator, batch: int, rng: np.random.Generator):
    import torch

    z = torch.from_numpy(rng.standard_normal((batch, generator.latent_dim)).astype(np.float32))
    if getattr(generator, "conditional", False):
        return z, torch.from_numpy(rng.integers(0, generator.num_classes, batch).astype(np.int64))
    return (z,)


def _torch_export(module, args, path: Path, dynamo: bool, inputs=("z", "label"), output: str = "image") -> None:
    """Export ``module(*args)`` with a dynamic batch axis on every input and the output."""
    import torch

    names = list(inputs)[: len(args)]
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=65536)
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=[output], dynamo=True,
                dynamic_shapes=tuple({0: batch} for _ in names),  # by position: forward's own argument names do not matter
                external_data=False, verbose=False, optimize=True,
            )
        else:
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=[output], dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in [*names, output]}, opset_version=18,
            )


def parity_check(module, onnx_path: str | os.PathLike, batches=PARITY_BATCHES, seed: int | None = None,
                 expect_size: int | None = None) -> float:
    """Max abs difference between PyTorch and onnxruntime outputs on fresh random inputs.

    The float layout is compared on the [-1, 1] scale; the uint8 layout in grey levels (a value
    sitting on a rounding boundary may flip by one level, so its bound is 1).
    """
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(seed)  # None: fresh entropy, as the contract asks
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    gen = module.net
    worst = 0.0
    for b in batches:
        args = _example(gen, b, rng)
        with torch.no_grad():
            ref = module(*args).numpy()
        out = sess.run(["image"], {n: a.numpy() for n, a in zip(["z", "label"], args)})[0]
        if expect_size is not None:
            want = (b, expect_size, expect_size, 3) if out.dtype == np.uint8 else (b, 3, expect_size, expect_size)
            if out.shape != want:
                raise ExportError(f"onnxruntime output shape {list(out.shape)} disagrees with the metadata "
                                  f"image_size={expect_size} (expected {list(want)}) at batch {b}")
        if out.shape != ref.shape or out.dtype != ref.dtype:
            raise ExportError(f"onnxruntime output {out.dtype}{list(out.shape)} != PyTorch {ref.dtype}{list(ref.shape)} at batch {b}")
        worst = max(worst, float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()))
    return worst


def export_onnx(generator, path: str | os.PathLike, metadata: dict[str, Any], uint8: bool = False,
                *, exporter: str = "auto", atol: float | None = None) -> Path:
    """Export ``generator`` to one ONNX file at ``path``; returns the path.

    ``metadata`` fills ``metadata_props`` (``class_names`` as a list, ``training_run_id``,
    ``dataset``, ...); ``latent_dim``, ``image_size``, layout and value range come from the
    generator. ``exporter``: ``auto`` (torch.export/dynamo, falling back to the TorchScript
    exporter), ``dynamo`` or ``torchscript``. Raises ``ExportError`` and leaves no file behind
    when export, ``onnx.checker`` or the parity check fails.
    """
    path = Path(path)
    props = _metadata_props(generator, metadata, uint8)
    check_output(generator, int(props["image_size"]))
    module = export_module(generator, uint8=uint8)
    bound = (1.0 if uint8 else PARITY_ATOL) if atol is None else atol
    return write_checked(module, _example(generator, 2, np.random.default_rng(0)), path, props, _generator_doc(props),
                         lambda f: parity_check(module, f, expect_size=int(props["image_size"])), bound, exporter=exporter)


def write_checked(module, example: tuple, path: Path, props: dict[str, str], doc: str, parity, bound: float, *,
                  exporter: str = "auto", inputs=("z", "label"), output: str = "image") -> Path:
    """Export ``module`` (example inputs ``example``) to ``path`` with ``props`` as metadata.

    The file is written only after ``onnx.checker`` passes and ``parity(tmp_file)`` (the max
    abs difference to PyTorch) is at most ``bound``; each exporter of ``exporter`` (``auto``:
    dynamo, then TorchScript) is tried in turn. Raises ``ExportError``, leaving no file behind.
    """
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tried: list[str] = []
    try:
        order = {"auto": [True, False], "dynamo": [True], "torchscript": [False]}[exporter]
        for dynamo in order:
            label = "dynamo" if dynamo else "torchscript"
            try:
                _torch_export(module, example, tmp, dynamo, inputs, output)
                model = onnx.load(str(tmp))
                onnx.checker.check_model(model, full_check=True)
                props["exporter"] = f"torch.onnx ({label}) torch {_torch_version()}"
                _set_metadata(model, props, doc)
                onnx.save_model(model, str(tmp), save_as_external_data=False)
                diff = parity(tmp)
            except ExportError as exc:
                tried.append(f"{label}: {exc}")
                continue
            except Exception as exc:  # exporter/checker/runtime failures: try the next exporter
                tried.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
                continue
            if not np.isfinite(diff) or diff > bound:
                tried.append(f"{label}: parity check failed, max abs diff {diff:.3g} > {bound:g}")
                continue
            os.replace(tmp, path)
            return path
        raise ExportError(f"ONNX export of {path.name} refused, no file written: " + "; ".join(tried))
    finally:
        tmp.unlink(missing_ok=True)


def _who(generator) -> str:
    from augforge import registry
    from augforge.errors import ConfigError

    name = getattr(type(generator), "name", type(generator).__qualname__)
    try:
        return registry.describe("generator", name)
    except ConfigError:
        return f"generator {name!r} ({type(generator).__module__}.{type(generator).__qualname__})"


def check_output(generator, image_size: int) -> None:
    """Refuse a generator whose output is not ``float[B, 3, S, S]`` in [-1, 1] with S the metadata's size.

    The file promises that layout and range to every consumer; nothing is clamped to make it so.
    """
    import torch

    g = copy.deepcopy(generator).eval()
    rng = np.random.default_rng(0)
    want = (PARITY_BATCHES[-1], 3, image_size, image_size)
    with torch.no_grad():
        for scale in (1.0, 8.0):  # "for any z": a far-out z exposes a last layer without tanh
            z, *label = _example(g, want[0], rng)
            x = g(z * scale, *(label or [None]))
            if tuple(x.shape) != want:
                raise ExportError(f"{_who(generator)} returns images of shape {tuple(x.shape)}, but the metadata says "
                                  f"image_size={image_size} (expected {want}); fix the generator's output size or "
                                  f"export the checkpoint of a run at that size")
            lo, hi = float(x.min()), float(x.max())
            if not (-1.0 <= lo and hi <= 1.0):
                raise ExportError(f"{_who(generator)} returns values in [{lo:.3g}, {hi:.3g}]; the file promises [-1, 1] "
                                  f"and export does not clamp; end the generator's forward() with torch.tanh and retrain")


def _torch_version() -> str:
    import torch

    return torch.__version__


def class_props(model, metadata: dict[str, Any], fmt: str, what: str = "generator") -> dict[str, str]:
    """The properties every augforge ONNX file starts with: its ``format`` and the classes the
    ``model`` (``what``: generator or discriminator) was trained on, checked against ``metadata``."""
    class_names = list(metadata.get("class_names") or [])
    k = int(getattr(model, "num_classes", 0))
    if k and len(class_names) != k:
        raise ExportError(f"{what} has {k} classes but metadata names {len(class_names)}: {class_names}")
    return {"format": fmt, "class_names": json.dumps(class_names), "num_classes": str(k),
            "conditional": json.dumps(bool(getattr(model, "conditional", False)))}


def _metadata_props(generator, metadata: dict[str, Any], uint8: bool) -> dict[str, str]:
    props = class_props(generator, metadata, FORMAT)
    k, conditional = int(props["num_classes"]), json.loads(props["conditional"])
    latent = int(generator.latent_dim)
    inputs = {"z": f"float32 [batch, {latent}], each entry drawn independently from N(0, 1)"}
    if conditional:
        inputs["label"] = f"int64 [batch] in 0..{k - 1}, the index into class_names (the graph does not check it)"
    props |= {
        "latent_dim": str(latent),
        "latent_distribution": LATENT_DISTRIBUTION,  # z ~ N(0, 1): what the generator was trained on
        "inputs": json.dumps(inputs),
        "image_size": str(int(metadata.get("image_size") or getattr(generator, "image_size", 0))),
        "value_range": "[0, 255]" if uint8 else "[-1, 1]",
        "output_layout": "NHWC uint8" if uint8 else "NCHW float32",
        "augforge_version": __version__,
    }
    for key, value in metadata.items():
        if key not in props and key != "class_names" and value is not None:
            props[key] = value if isinstance(value, str) else json.dumps(value)
    return props


def _generator_doc(props: dict[str, str]) -> str:
    return (
        f"augforge generator: z ~ N(0, 1) float32 [batch, {props['latent_dim']}]"
        + (" + label int64 [batch] (index into class_names)" if json.loads(props["conditional"]) else "")
        + f" -> image {props['output_layout']} in {props['value_range']}; see metadata_props"
    )


def _set_metadata(model, props: dict[str, str], doc: str) -> None:
    import onnx

    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    model.producer_name = "augforge"
    model.producer_version = __version__
    model.model_version = int(props.get("step") or 0)  # the training step of the exported weights
    model.doc_string = doc


def read_metadata(onnx_path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (no weights are loaded)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
