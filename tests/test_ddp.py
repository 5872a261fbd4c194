"""torchrun with 2 CPU processes (gloo): DDP training finishes, rank 0 alone writes, weights agree."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import torch

from augforge.checkpoint import load_checkpoint

LAUNCHER = """
import sys
from augforge import plugins, testing
plugins.register(testing, name="augforge.testing")
from augforge.cli import main
main(sys.argv[1:])
"""


def test_torchrun_two_cpu_processes(tmp_path):
    launcher = tmp_path / "launch_fakes.py"
    launcher.write_text(LAUNCHER)
    out_dir = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher),
        "train", "--dataset", "fake-blobs", "--model", "fake", "--image-size", "16", "--steps", "6",
        "--device", "cpu", "--out-dir", str(out_dir), "--run-name", "ddp",
        "--set", "model.latent_dim=8", "--set", "train.batch_size=4", "--set", "train.checkpoint_every=3",
        "--set", "train.log_every=2", "--set", "train.ema_decay=0.9", "--set", "train.r1_gamma=1",
        "--set", "train.diffaug=translation",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    # one run folder, one checkpoint (rank 0 writes alone)
    assert [p.name for p in out_dir.iterdir()] == ["ddp"]
    # rank 0 alone: last.pt and the previous one it rotated to last.prev.pt, nothing from rank 1
    assert sorted(p.name for p in (out_dir / "ddp" / "checkpoints").iterdir()) == ["last.prev.pt", "last.pt"]
    state = load_checkpoint(out_dir / "ddp" / "checkpoints" / "last.pt")
    assert state["step"] == 6 and state["extra"]["world_size"] == 2
    assert len(state["extra"]["rng_per_rank"]) == 2
    # every rank ends with the same weights (gradients were all-reduced)
    digests = dict(re.findall(r"\[rank (\d)\] final weights digest (\w+)", log))
    assert set(digests) == {"0", "1"}, log
    assert digests["0"] == digests["1"]
    # the two ranks drew different noise: their RNG states differ
    r0, r1 = state["extra"]["rng_per_rank"]
    assert not torch.equal(r0["torch"], r1["torch"])
