"""examples/train_with_policy.py: a downstream trainer mixing by a named policy (toy size)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from augforge.export.generate import generate_images
from augforge_runtime.policies import parse_policy


@pytest.fixture
def onnx_file(fakes, tmp_path):
    import torch

    from augforge import registry
    from augforge.export import export_onnx

    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    return export_onnx(g, tmp_path / "g.onnx", {"class_names": ["nv", "mel"], "dataset": "fake-blobs"}, exporter="torchscript")


def _example():
    path = Path(__file__).resolve().parents[1] / "examples" / "train_with_policy.py"
    spec = importlib.util.spec_from_file_location("train_with_policy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _real(onnx_file, tmp_path):
    """A HAM10000-layout folder standing in for real data: 30 nv, 8 mel lesions."""
    real = tmp_path / "real"
    generate_images(onnx_file, real, counts={"nv": 30, "mel": 8}, seed=9, progress=False)
    return real


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["balanced", "pretrain-synthetic:ratio:1:weight=0.5", "none"])
def test_trains_with_the_policys_counts(onnx_file, tmp_path, policy):
    real = _real(onnx_file, tmp_path)
    out = _example().main(["--onnx", str(onnx_file), "--real", str(real), "--policy", policy, "--epochs", "1",
                           "--fine-tune-epochs", "1", "--batch-size", "8"])
    # the example's own lesion split: count its real training labels the same way
    meta = pd.read_csv(real / "metadata.csv")
    rng = np.random.default_rng(0)
    lesions = meta["lesion_id"].unique()
    test = set(rng.choice(lesions, max(1, len(lesions) // 5), replace=False))
    train = meta[~meta.lesion_id.isin(test)]
    counts = np.array([(train.dx == c).sum() for c in sorted(meta.dx.unique())])
    assert out["n_real"] == len(train)
    assert out["n_synthetic"] == parse_policy(policy).synthetic_counts(counts).sum()
    assert (out["n_synthetic"] > 0) == (policy != "none")  # none: what the study recommends when nothing helped
    assert out["policy"] == str(parse_policy(policy)) and 0 <= out["balanced_accuracy"] <= 1


@pytest.mark.slow
def test_filtered_policy_reads_generate_scores(onnx_file, tmp_path):
    real = _real(onnx_file, tmp_path)
    syn = tmp_path / "syn"
    generate_images(onnx_file, syn, per_class=40, seed=1, filters=("novelty",), keep=0.5, progress=False)
    out = _example().main(["--synthetic", str(syn), "--size", "16", "--real", str(real), "--policy", "balanced:filtered",
                           "--epochs", "1", "--batch-size", "8"])
    assert out["n_synthetic"] > 0
    with pytest.raises(SystemExit, match="scored images"):
        _example().main(["--onnx", str(onnx_file), "--real", str(real), "--policy", "balanced:filtered"])
