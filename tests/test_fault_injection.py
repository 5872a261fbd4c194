"""Fault injection (issue 14): SIGKILL at every point of checkpoint writing, a full disk (a real
tmpfs, mounted when running as root), random damage to checkpoints. Every case must end in a
clean state: nothing lost that had been reported as saved, every error one line with the fix.

The counts tried here are the figures in docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from augforge import config
from augforge.checkpoint import load_checkpoint, payload_digest, save_checkpoint
from augforge.errors import AugforgeError
from augforge.tracking import NullTracker

#: the real CLI with the fake components, killing itself (SIGKILL) at one point of one checkpoint save
KILLER = r"""
import os, signal, sys, types
from augforge import checkpoint, plugins, testing
plugins.register(testing, name="augforge.testing")
point, nth = sys.argv[1], int(sys.argv[2])
seen = {"save": 0}

def hit(name):
    if name == point and seen["save"] == nth:
        os.kill(os.getpid(), signal.SIGKILL)

real_save = checkpoint.save_checkpoint
def save(path, state, **kw):
    seen["save"] += 1
    out = real_save(path, state, **kw)
    hit("after-save")
    return out
checkpoint.save_checkpoint = save

real_write = checkpoint._write_all
def write_all(f, data):
    if point == "mid-write" and seen["save"] == nth:
        f.write(data[: len(data) // 2])
        f.flush()
        hit("mid-write")
    real_write(f, data)
checkpoint._write_all = write_all

shim = types.SimpleNamespace(**vars(os))
def fsync(fd):
    import stat
    hit("before-fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "before-fsync-file")
    os.fsync(fd)
def link(src, dst):
    hit("before-link-prev")
    os.link(src, dst)
def replace(src, dst):
    hit("before-rename-prev" if str(dst).endswith(".prev.pt") else "before-rename-last")
    os.replace(src, dst)
shim.fsync, shim.link, shim.replace = fsync, link, replace
checkpoint.os = shim

from augforge.cli import main
main(sys.argv[3:])
"""

ARGS = [
    "train", "--dataset", "fake-blobs", "--model", "fake", "--image-size", "16", "--no-track",
    "--set", "model.latent_dim=8", "--set", "train.batch_size=8", "--set", "train.log_every=5",
    "--set", "train.ema_decay=0.95", "--set", "train.checkpoint_every=5", "--set", "train.steps=20",
]
#: every step of save_checkpoint, in order; the 3rd save (step 15) is the one killed
KILL_POINTS = ["mid-write", "before-fsync-file", "before-link-prev", "before-rename-prev", "before-rename-last",
               "before-fsync-dir", "after-save"]


def _cli(tmp_path, *args) -> subprocess.Popen:
    script = tmp_path / "killer.py"
    if not script.exists():  # written once: rewriting it while another process starts would hand that one an empty script
        script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs: dict) -> dict:
    return {k: (p, p.communicate(timeout=1500)[1]) for k, p in procs.items()}


def _weights(path):
    state = load_checkpoint(path)
    return {k: state[k] for k in ("generator", "discriminator", "g_ema", "opt_g", "opt_d")}, state


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return set(a) == set(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 15 short CLI runs; minutes on a loaded 2-core machine
def test_sigkill_at_every_point_of_checkpoint_writing_then_resume(tmp_path):
    # the unbroken reference and one run killed at each point, side by side
    procs = {"ref": _cli(tmp_path, "none", "0", *ARGS, "--out-dir", str(tmp_path / "ref"), "--run-name", "r")}
    procs |= {point: _cli(tmp_path, point, "3", *ARGS, "--out-dir", str(tmp_path / point), "--run-name", "r")
              for point in KILL_POINTS}
    done = _wait(procs)
    assert done["ref"][0].returncode == 0, done["ref"][1][-1500:]
    want, _ = _weights(tmp_path / "ref" / "r" / "checkpoints" / "last.pt")
    for point in KILL_POINTS:
        assert done[point][0].returncode == -9, (point, done[point][1][-800:])
    resumed = _wait({point: _cli(tmp_path, "none", "0", "train", "--resume", str(tmp_path / point / "r"), "--no-track")
                     for point in KILL_POINTS})
    for point, (proc, err) in resumed.items():
        run_dir = tmp_path / point / "r"
        assert proc.returncode == 0, (point, err[-1500:])
        at = int(err.split(f"resumed {run_dir} at step ")[1].split()[0])
        assert at >= 10, (point, at)  # step 10 had been saved (save 2 returned) before the kill: it survives
        got, state = _weights(run_dir / "checkpoints" / "last.pt")
        assert state["step"] == 20 and _equal(got, want), point  # bitwise the unbroken run
        leftovers = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name not in ("last.pt", "last.prev.pt")]
        assert all(n.startswith(".") for n in leftovers), leftovers  # only hidden temp files of the killed write


# ---- a full disk: a real tmpfs ------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs mounted at tmp_path/disk (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(disk: Path) -> Path:
    """Write a filler file until the disk is full (ENOSPC); returns it."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:  # unbuffered: the ENOSPC comes from write(), not close()
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def _one_line(msg: str) -> bool:
    return msg.strip() != "" and "\n" not in msg.strip()


FAKE = {
    "data.name": "fake-blobs", "model.generator": "fake", "data.image_size": 16, "model.latent_dim": 8,
    "train.batch_size": 8, "train.steps": 10, "train.checkpoint_every": 5, "train.log_every": 5, "train.sample_every": 1000,
}


@pytest.mark.slow  # ~60 s on an idle 2-core machine (two short trainings, an ONNX export)
def test_full_disk_during_cache_checkpoint_and_generation(small_disk, tmp_path, fakes, monkeypatch):
    from augforge import checkpoint as C
    from augforge import data as D
    from augforge import envvars
    from augforge.export import generate as G
    from augforge.training import train

    monkeypatch.setenv("AUGFORGE_MIN_FREE_MB", "0")
    tried = 0
    # 1. the decode cache: 64 images at 256 px = 12 MiB, on a disk holding 4 MiB more than the filler leaves
    monkeypatch.setenv("AUGFORGE_CACHE_DIR", str(small_disk / "cache"))
    big = config.resolve("", {**FAKE, "data.image_size": 256, "dataset.n_per_class": 32})
    filler = small_disk / "pad"
    filler.write_bytes(b"\0" * 12 * 2**20)
    with pytest.raises(AugforgeError) as exc:
        D.load_arrays(big, progress=False)
    assert "not enough disk space for the decode cache" in str(exc.value) and _one_line(str(exc.value))
    assert list((small_disk / "cache").iterdir()) == []
    filler.unlink()
    tried += 1

    # 2. checkpointing: the disk fills after the first checkpoint (step 5) was reported saved
    real_save, saves = C.save_checkpoint, []

    def save_then_fill(path, state, **kw):
        out = real_save(path, state, **kw)
        saves.append(state["step"])
        if len(saves) == 1:
            _fill(small_disk)
        return out

    monkeypatch.setattr(C, "save_checkpoint", save_then_fill)
    cfg = config.resolve("", {**FAKE, "train.out_dir": str(small_disk / "runs"), "tracking.run_name": "full"})
    monkeypatch.setenv("AUGFORGE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(AugforgeError) as exc:
        train(cfg, tracker=NullTracker())
    msg = str(exc.value)
    assert "no space left on the device writing checkpoint" in msg and "--resume" in msg and _one_line(msg)
    last = small_disk / "runs" / "full" / "checkpoints" / "last.pt"
    assert saves == [5] and load_checkpoint(last)["step"] == 5  # what was reported saved is intact
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]  # no temp file left on the full disk
    from augforge.grid import save_png

    with pytest.raises(AugforgeError) as exc:  # side work (a sample grid) on the full disk
        save_png(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8), small_disk / "runs" / "grid.png")
    assert "no space left on the device writing a sample grid" in str(exc.value) and _one_line(str(exc.value))
    assert not list((small_disk / "runs").glob("*grid*"))
    tried += 2

    # 3. generation on the full disk: refused before writing a batch, and (check bypassed) a real ENOSPC
    from augforge import registry
    from augforge.export import export_onnx

    torch.manual_seed(0)
    g = registry.build("generator", "fake", image_size=16, num_classes=2, latent_dim=8)
    meta = {"class_names": ["nv", "mel"], "dataset": "fake-blobs",
            "config": {k: v for k, v in cfg.to_dict().items() if k != "tracking"}}
    onnx = export_onnx(g, tmp_path / "g.onnx", meta, exporter="torchscript")
    with pytest.raises(AugforgeError) as exc:
        G.generate_images(onnx, small_disk / "synth", per_class=50, progress=False)
    assert "not enough disk space for 50 images" in str(exc.value) and _one_line(str(exc.value))
    monkeypatch.setattr(envvars, "check_free_space", lambda *a, **k: None)
    with pytest.raises(OSError):
        G.generate_images(onnx, small_disk / "synth", per_class=50, progress=False)
    assert [p.name for p in small_disk.iterdir() if "synth" in p.name] == []  # no half output, no temp folder
    tried += 2

    # after freeing space the run resumes from step 5 and finishes
    (small_disk / "filler").unlink()
    monkeypatch.setattr(C, "save_checkpoint", real_save)
    result = train(cfg, tracker=NullTracker(), resume=small_disk / "runs" / "full")
    assert result.status == "FINISHED" and result.step == 10
    assert tried == 5


# ---- damaged checkpoints: random flips, cuts, zero bytes ----------------------------------------------


def test_random_damage_is_detected_or_harmless(tmp_path):
    """200 seeded damages of a real-sized checkpoint: each load raises a one-line error or returns the
    original content (a flip in zip padding changes no data). Never garbage."""
    path = tmp_path / "last.pt"
    state = {"step": 3, "w": torch.randn(64, 64), "opt": {"exp_avg": torch.randn(4096)}, "history": [0.25] * 50}
    save_checkpoint(path, state)
    good = path.read_bytes()
    want = payload_digest(load_checkpoint(path))
    rng = random.Random(14)
    detected = harmless = 0
    for i in range(200):
        data = bytearray(good)
        kind = i % 4
        if kind == 0:  # one flipped byte
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 1:  # a run of garbage
            at = rng.randrange(len(data) - 64)
            data[at : at + rng.randrange(1, 64)] = bytes(rng.randrange(256) for _ in range(64))[: len(data[at : at + 64])]
        elif kind == 2:  # cut short
            data = data[: rng.randrange(len(data))]
        else:  # zeroed tail (a crash after the size was extended)
            at = rng.randrange(len(data))
            data[at:] = bytes(len(data) - at)
        path.write_bytes(bytes(data))
        try:
            loaded = load_checkpoint(path)
        except AugforgeError as exc:
            assert _one_line(str(exc)) and not str(exc).rstrip().endswith(":"), str(exc)
            detected += 1
            continue
        assert payload_digest(loaded) == want, f"damage {i} (kind {kind}) loaded different content"
        harmless += 1
    assert detected + harmless == 200 and detected >= 150
