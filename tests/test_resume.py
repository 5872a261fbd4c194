"""`augforge train` killed with SIGKILL mid-run and resumed ends bitwise equal to an unbroken run (CPU)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from augforge.checkpoint import load_checkpoint

#: runs the real CLI with augforge.testing's fake components registered
LAUNCHER = """
import sys
from augforge import plugins, testing
plugins.register(testing, name="augforge.testing")
from augforge.cli import main
main(sys.argv[1:])
"""

ARGS = [
    "train", "--dataset", "fake-blobs", "--model", "fake", "--image-size", "16", "--no-track",
    "--set", "model.latent_dim=8", "--set", "train.batch_size=8", "--set", "train.log_every=5",
    "--set", "train.ema_decay=0.95", "--set", "train.diffaug=color,translation,cutout",
    "--set", "data.balance=true", "--set", "train.r1_gamma=0.5", "--set", "train.checkpoint_every=5",
]


def launcher(tmp_path: Path) -> Path:
    path = tmp_path / "launch_fakes.py"
    path.write_text(LAUNCHER)
    return path


def augforge(tmp_path, *args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(launcher(tmp_path)), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def tensors(state):
    keys = ("generator", "discriminator", "g_ema", "opt_g", "opt_d")
    out = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            out[path] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    for k in keys:
        walk(state[k], k)
    return out


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    steps = 60
    common = [*ARGS, "--steps", str(steps), "--out-dir", str(tmp_path / "runs")]

    # 1. uninterrupted reference run
    ref = augforge(tmp_path, *common, "--run-name", "ref")
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out

    # 2. the same run, SIGKILLed as soon as a checkpoint exists (well before the end)
    ckpt = tmp_path / "runs" / "victim" / "checkpoints" / "last.pt"
    victim = augforge(tmp_path, *common, "--run-name", "victim")
    deadline = time.monotonic() + 300
    while not ckpt.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    out, _ = victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL, out
    killed_at = load_checkpoint(ckpt)["step"]
    assert 0 < killed_at < steps, f"the kill did not land mid-run (checkpoint at step {killed_at})"

    # 3. resume from the run folder and finish
    res = augforge(tmp_path, "train", "--resume", str(tmp_path / "runs" / "victim"), "--no-track")
    out, _ = res.communicate(timeout=600)
    assert res.returncode == 0, out
    assert f"resumed {tmp_path / 'runs' / 'victim'} at step {killed_at}" in out

    a = load_checkpoint(tmp_path / "runs" / "ref" / "checkpoints" / "last.pt")
    b = load_checkpoint(ckpt)
    assert a["step"] == b["step"] == steps
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys() and len(ta) > 10
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"
