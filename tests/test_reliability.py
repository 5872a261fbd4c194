"""Runs that meet each other and the disk (issue 14): atomic run folders, a locked tracking
store, verified checkpoints with a previous good one, honest resume, bounded inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from augforge import config
from augforge.checkpoint import load_checkpoint, load_latest, previous_path, save_checkpoint
from augforge.errors import AugforgeError, ConfigError
from augforge.tracking import NullTracker

FAKE = {
    "data.name": "fake-blobs", "model.generator": "fake", "data.image_size": 16, "model.latent_dim": 8,
    "train.batch_size": 8, "train.steps": 4, "train.checkpoint_every": 2, "train.log_every": 2,
}


def fake_cfg(tmp_path, **over):
    return config.resolve("", {**FAKE, "train.out_dir": str(tmp_path / "runs"), **{k.replace("__", "."): v for k, v in over.items()}})


def run(cfg, **kw):
    from augforge.training import train

    kw.setdefault("tracker", NullTracker())
    return train(cfg, **kw)


# ---- 1. run folders and the tracking store ------------------------------------------------------


def test_concurrent_run_folders_are_distinct_and_exist(tmp_path):
    from augforge.runs import create_run_dir as _unique_dir

    base, n = tmp_path / "runs" / "same-name", 8
    gate, got = threading.Barrier(n), []

    def worker():
        gate.wait()
        got.append(_unique_dir(base))

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({str(p) for p in got}) == n and all(p.is_dir() for p in got)
    tokens = {json.loads((p / "run.json").read_text())["token"] for p in got}
    assert len(tokens) == n


STORE_PROBE = """
import sys, time
from pathlib import Path
import mlflow, sqlalchemy, alembic  # imported before the start line, so the four really start together
from augforge.tracking import MlflowTracker
go = Path(sys.argv[2])
(go.parent / f"ready-{sys.argv[3]}").touch()
while not go.exists():
    time.sleep(0.005)
t = MlflowTracker(sys.argv[1], "race")
t.start(run_name="r")
t.end()
print("ok", t.experiment_id)
"""


def test_fresh_sqlite_store_survives_concurrent_first_clients(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([sys.executable, "-c", STORE_PROBE, uri, str(go), str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("ready-*"))) < 4 and time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.05)
    go.touch()  # release all four at once on the fresh store
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(err[-600:] for _, err in outs)
    assert len({o.split()[-1] for o, _ in outs}) == 1  # one experiment, not four
    assert len(mlflow.MlflowClient(uri).search_runs([outs[0][0].split()[-1]])) == 4


@pytest.mark.slow
@pytest.mark.timeout(1800)  # four trainings at once: minutes on a loaded 2-core machine
def test_four_concurrent_smoke_trainings_on_a_fresh_store(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    args = ["train", "--preset", "smoke", "--set", "train.steps=2", "--set", "train.checkpoint_every=2",
            "--set", "train.sample_every=0", "--set", "train.eval_every=0", "--set", "dataset.n_per_class=8",
            "--out-dir", str(tmp_path / "runs"), "--run-name", "race"]
    cmd = [sys.executable, "-c", "from augforge.cli import main; main()", *args]
    procs = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n---\n".join(o[-800:] for o in outs)
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["race", "race-2", "race-3", "race-4"]
    run_ids = {json.loads((tmp_path / "runs" / f / "run.json").read_text())["run_id"] for f in folders}
    assert len(run_ids) == 4
    for f in folders:
        state = load_checkpoint(tmp_path / "runs" / f / "checkpoints" / "last.pt")
        assert state["step"] == 2 and state["run_id"] in run_ids and state["extra"]["run_dir"].endswith(f)


# ---- 2. checkpoints verified on load, previous one kept ---------------------------------------


def _state(step):
    return {"step": step, "w": torch.arange(4096, dtype=torch.float32) * step, "history": [0.5, float(step)]}


def test_checkpoint_rotation_and_fallback_for_every_kind_of_damage(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, _state(1))
    assert not previous_path(path).exists()
    save_checkpoint(path, _state(2))
    assert load_checkpoint(previous_path(path))["step"] == 1 and load_checkpoint(path)["step"] == 2
    good = path.read_bytes()
    damages = {
        "flipped": lambda b: b[:4000] + bytes(x ^ 0xFF for x in b[4000:6000]) + b[6000:],
        "truncated": lambda b: b[: len(b) // 2],
        "empty": lambda b: b"",
    }
    for name, damage in damages.items():
        path.write_bytes(damage(good))
        with pytest.raises(AugforgeError) as exc:
            load_checkpoint(path)
        msg = str(exc.value)
        assert str(path) in msg and not msg.rstrip().endswith(":"), name  # a reason, never an empty one
        said = []
        used, state = load_latest(path, say=said.append)
        assert used == previous_path(path) and state["step"] == 1, name
        assert len(said) == 1 and str(path) in said[0] and str(previous_path(path)) in said[0] and "\n" not in said[0]
    assert "0 bytes" in str(pytest.raises(AugforgeError, load_checkpoint, path).value)
    # a damaged latest one is not rotated over the good previous one
    save_checkpoint(path, _state(3))
    assert load_checkpoint(previous_path(path))["step"] == 1 and load_checkpoint(path)["step"] == 3


def test_digest_catches_a_payload_changed_behind_a_valid_zip(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(5))
    state = torch.load(path, weights_only=True)
    state["w"][7] += 1.0  # rewritten by something other than save_checkpoint: zip CRCs are fresh
    torch.save(state, path)
    with pytest.raises(AugforgeError, match="does not match its sha256 digest"):
        load_checkpoint(path)


def test_resume_falls_back_to_the_previous_checkpoint(tmp_path, fakes, capsys):
    part = run(fake_cfg(tmp_path, train__steps=4))
    last = part.run_dir / "checkpoints" / "last.pt"
    assert load_checkpoint(previous_path(last))["step"] == 2
    data = last.read_bytes()
    last.write_bytes(data[:1000] + bytes(x ^ 0x55 for x in data[1000:3000]) + data[3000:])
    resumed = run(fake_cfg(tmp_path, train__steps=6), resume=part.run_dir)
    assert resumed.status == "FINISHED" and resumed.step == 6
    err = capsys.readouterr().err
    assert f"using the previous checkpoint {previous_path(last)} (step 2)" in err
    assert f"resumed {part.run_dir} at step 2" in err


# ---- 3. resume: config.json, identity ---------------------------------------------------------


def test_resume_refuses_a_hand_edited_config_json(tmp_path, fakes):
    part = run(fake_cfg(tmp_path, train__steps=2))
    cfg_json = part.run_dir / "config.json"
    original = cfg_json.read_text()
    edited = json.loads(original)
    edited["model"]["latent_dim"] = 16
    cfg_json.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match=r"config.json was edited .*model.latent_dim: checkpoint 8, config.json 16"):
        run(fake_cfg(tmp_path, train__steps=4), resume=part.run_dir)
    assert json.loads(cfg_json.read_text())["model"]["latent_dim"] == 16  # not rewritten behind the user's back
    edited = json.loads(original)
    edited["train"]["steps"] = 40  # a resumable key: the message says how to change it
    cfg_json.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match=r"--set train.steps=40"):
        run(fake_cfg(tmp_path, train__steps=2), resume=part.run_dir)
    result = run(fake_cfg(tmp_path, train__steps=40), resume=part.run_dir)  # asked for: accepted
    assert result.step == 40


def test_resumed_copy_gets_its_own_tracked_run(tmp_path, fakes):
    import mlflow

    from augforge.tracking import MlflowTracker

    uri = os.environ["MLFLOW_TRACKING_URI"]
    src = run(fake_cfg(tmp_path, train__steps=2), tracker=MlflowTracker(uri))
    client = mlflow.MlflowClient(uri)
    before = client.get_run(src.run_id)
    copy = tmp_path / "copy-of-run"
    shutil.copytree(src.run_dir, copy)
    resumed = run(fake_cfg(tmp_path, train__steps=4), resume=copy, tracker=MlflowTracker(uri))
    assert resumed.run_id != src.run_id and resumed.step == 4
    new = client.get_run(resumed.run_id)
    assert new.data.tags["augforge.source_run_id"] == src.run_id
    assert new.data.tags["run_dir"] == str(copy.resolve())
    after = client.get_run(src.run_id)
    assert after.data.tags["run_dir"] == before.data.tags["run_dir"] == str(src.run_dir.resolve())
    assert max(m.step for m in client.get_metric_history(src.run_id, "train/loss_d")) == 2
    assert load_checkpoint(copy / "checkpoints" / "last.pt")["run_id"] == resumed.run_id
    assert load_checkpoint(src.run_dir / "checkpoints" / "last.pt")["step"] == 2
    # the original, resumed in place, continues its own run; the copy, resumed again, its own
    again = run(fake_cfg(tmp_path, train__steps=4), resume=src.run_dir, tracker=MlflowTracker(uri))
    assert again.run_id == src.run_id
    copy_again = run(fake_cfg(tmp_path, train__steps=6), resume=copy, tracker=MlflowTracker(uri))
    assert copy_again.run_id == resumed.run_id


# ---- 4. bounds ------------------------------------------------------------------------------------


def test_image_size_bounds(tmp_path, monkeypatch, fakes):
    from augforge import data as D
    from augforge.training.cli import build_config

    for size in (100000, 4096, 4):
        with pytest.raises(ConfigError, match=rf"data.image_size={size}: expected a whole number of pixels in 8\.\.1024"):
            build_config("", ("data.name=fake-blobs",), {"image_size": size})
    with pytest.raises(ConfigError, match="8..1024"):
        D.load_arrays(fake_cfg(tmp_path, data__image_size=2048), progress=False)
    monkeypatch.setenv("AUGFORGE_MAX_IMAGE_SIZE", "2048")
    assert build_config("", ("data.name=fake-blobs",), {"image_size": 2048}).data.image_size == 2048
    monkeypatch.setenv("AUGFORGE_MAX_IMAGE_SIZE", "lots")
    with pytest.raises(ConfigError, match=r"AUGFORGE_MAX_IMAGE_SIZE='lots' is not a whole number"):
        build_config("", ("data.name=fake-blobs",), {"image_size": 64})


@pytest.mark.parametrize("name,value,needle", [
    ("AUGFORGE_MAX_IMAGE_PIXELS", "abc", "AUGFORGE_MAX_IMAGE_PIXELS='abc' is not a whole number"),
    ("AUGFORGE_MAX_IMAGE_PIXELS", "0", "AUGFORGE_MAX_IMAGE_PIXELS=0 is out of range"),
    ("AUGFORGE_TRACE_HOOKS", "maybe", "AUGFORGE_TRACE_HOOKS='maybe' is not a flag"),
    ("AUGFORGE_MIN_FREE_MB", "-5", "AUGFORGE_MIN_FREE_MB=-5 is out of range"),
])
def test_every_augforge_variable_is_typed_with_a_one_line_error(monkeypatch, capsys, name, value, needle):
    from augforge.cli import main

    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exc:
        main(["plugins"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and needle in err and err.strip().count("\n") == 0, err


def test_every_variable_read_in_the_code_is_declared():
    import re

    from augforge.envvars import VARIABLES

    root = Path(__file__).resolve().parents[1]
    used = set()
    for folder in ("augforge", "plugins", "scripts", "docker"):
        for p in (root / folder).rglob("*"):
            if p.is_file() and p.suffix in (".py", ".sh", ".yaml", ".yml", "") and "__pycache__" not in p.parts:
                used |= set(re.findall(r"\bAUGFORGE_[A-Z0-9_]+", p.read_text(errors="ignore")))
    assert used - set(VARIABLES) == set()


def test_unknown_variable_is_a_warning_with_a_suggestion():
    from augforge.envvars import check_environment

    said = []
    check_environment({"AUGFORGE_CACHEDIR": "/x"}, warn=said.append)
    assert len(said) == 1 and "did you mean AUGFORGE_CACHE_DIR?" in said[0]


def _tiny_disk(monkeypatch, free_bytes):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=free_bytes))


def test_decode_cache_refuses_a_full_disk_before_writing(tmp_path, monkeypatch, fakes):
    from augforge import data as D

    _tiny_disk(monkeypatch, 300 * 2**20)  # 300 MiB free, 256 MiB kept free by default: 44 MiB usable
    cfg = fake_cfg(tmp_path, data__image_size=1024, dataset__n_per_class=8)  # 16 x 3 MiB = 48 MiB
    with pytest.raises(AugforgeError, match=r"not enough disk space for the decode cache of 16 images at 1024px .* 300 MiB free"):
        D.load_arrays(cfg, progress=False)
    assert not list((tmp_path / "cache").glob("*/images.npy")) and not list((tmp_path / "cache").glob(".*tmp*"))
    monkeypatch.setenv("AUGFORGE_MIN_FREE_MB", "0")
    assert len(D.load_arrays(fake_cfg(tmp_path, data__image_size=32, dataset__n_per_class=8), progress=False)) == 16


# ---- 5. generate: no half outputs, onnxruntime failures in one line ------------------------------


def test_generate_failure_leaves_no_half_output(onnx_file, tmp_path, monkeypatch):
    from augforge.export import generate as G
    calls = []

    def flaky(img, path):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        Image.fromarray(img).save(path, format="PNG")

    from PIL import Image

    monkeypatch.setattr(G, "_write_png", flaky)
    out = tmp_path / "synth"
    with pytest.raises(OSError):
        G.generate_images(onnx_file, out, per_class=4, progress=False)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if "synth" in p.name] == []
    monkeypatch.undo()
    result = G.generate_images(onnx_file, out, per_class=2, progress=False)  # nothing blocks the next run
    assert result.n_images == 4 and len(list((out / "images").iterdir())) == 4
    (out / "notes.txt").write_text("mine")
    G.generate_images(onnx_file, out, per_class=3, progress=False, overwrite=True)
    assert len(list((out / "images").iterdir())) == 6 and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["generation.json", "images", "metadata.csv", "notes.txt"]


def test_generate_refuses_a_full_disk_per_batch(onnx_file, tmp_path, monkeypatch):
    from augforge.export import generate as G
    _tiny_disk(monkeypatch, 10 * 2**20)
    with pytest.raises(AugforgeError, match=r"not enough disk space for 2 images in .*choose an --out folder on a bigger disk"):
        G.generate_images(onnx_file, tmp_path / "synth", per_class=2, progress=False)
    assert not (tmp_path / "synth").exists()


def test_onnx_graph_that_does_not_match_its_metadata_is_one_line(onnx_file, tmp_path, capsys):
    import onnx

    from augforge.cli import main

    model = onnx.load(onnx_file)
    for prop in model.metadata_props:
        if prop.key == "latent_dim":
            prop.value = "12"  # copied metadata, another graph: z[n, 12] does not fit
    bad = tmp_path / "other.onnx"
    onnx.save(model, bad)
    out = tmp_path / "synth"
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--onnx", str(bad), "--per-class", "2", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert exc.value.code == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert f"{bad}: onnxruntime cannot run the generator (" in err and "re-export it" in err
    assert not out.exists()


# ---- 6. lesions with conflicting diagnoses ---------------------------------------------------------


def test_conflicting_diagnoses_are_reported_and_skip_bad_drops_them(tmp_path, capsys):
    from _datagen import make_ham

    from augforge import data as D
    from augforge.cli import main

    root = tmp_path / "ham"
    meta = make_ham(root, "parts")
    a, b = meta.index[meta["dx"] == "nv"][0], meta.index[meta["dx"] == "mel"][0]
    meta.loc[b, "lesion_id"] = meta.loc[a, "lesion_id"]  # one lesion, two diagnoses, different images
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    lesion = meta.loc[a, "lesion_id"]
    base = {"data.name": "ham10000", "dataset.root": str(root), "data.image_size": "16"}

    arrays = D.load_arrays(config.resolve("", base), progress=False)
    assert D.conflicting_lesions(arrays.meta) == {lesion: ["mel", "nv"]}
    assert f"1 lesion(s) with conflicting diagnoses ({lesion}: mel/nv)" in capsys.readouterr().err
    n_lesion = int((meta["lesion_id"] == lesion).sum())
    arrays = D.load_arrays(config.resolve("", {**base, "data.skip_bad": "true"}), progress=False)
    assert len(arrays) == len(meta) - n_lesion and lesion not in set(arrays.meta["lesion_id"])
    assert (arrays.skipped["reason"].str.contains(f"lesion {lesion} has conflicting diagnoses \\(mel, nv\\)")).sum() == n_lesion

    main(["data", "inspect", "--dataset", "ham10000", "--root", str(root), "--image-size", "16", "--out", str(tmp_path / "i")])
    out = capsys.readouterr().out
    assert "lesions with conflicting diagnoses: 1 (kept; pass --skip-bad to drop them)" in out
    assert f"{lesion}: " in out and f"{meta.loc[b, 'image_id']}=mel" in out
