"""scripts/device-check.sh, the one GPU command, at toy size on the CPU, as the GPU machine has
it: no mlflow, optuna, albumentations, matplotlib or onnxscript, and no pip install (no entry
points: the plugin manager registers augforge_plugins from PYTHONPATH itself)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ABSENT = ("mlflow", "optuna", "albumentations", "matplotlib", "onnxscript")

#: run at start-up of every Python the check launches (PYTHONPATH): hide the installed
#: distributions' entry points, as on a machine where nothing was pip-installed
SITECUSTOMIZE = """
import importlib.metadata as md

_distributions = md.distributions


def distributions(**kwargs):
    return [d for d in _distributions(**kwargs) if (d.metadata["Name"] or "").lower() not in ("augforge", "augforge-plugins")]


md.distributions = distributions
"""


def _bare_machine(tmp_path: Path) -> Path:
    stubs = tmp_path / "bare"
    stubs.mkdir()
    for name in ABSENT:
        (stubs / f"{name}.py").write_text(f"raise ImportError('{name} is absent on the GPU machine (test stub)')\n")
    (stubs / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return stubs


def test_plugins_fall_back_to_the_builtin_modules_without_entry_points(monkeypatch):
    from augforge import plugins, registry

    monkeypatch.setattr(importlib.metadata, "distributions", lambda **kw: [])
    plugins.reset()
    try:
        pm = plugins.make_plugin_manager(autoload=True)
        assert not pm.list_plugin_distinfo()
        names = {name for name, _ in pm.list_name_plugin()}
        assert {"sngan", "cdcgan", "dcgan", "datasets", "metrics"} <= names
        plugins._pm = pm
        assert {"sngan", "cdcgan", "dcgan"} <= set(registry.names("generator"))
        monkeypatch.setenv("AUGFORGE_DISABLE_PLUGINS", "dcgan")
        blocked = plugins.make_plugin_manager(autoload=True)
        assert "dcgan" not in {name for name, p in blocked.list_name_plugin() if p is not None}
    finally:
        plugins.reset()


def test_large_files_come_back_in_parts_that_join_to_the_original(tmp_path, monkeypatch):
    from augforge.device import check as device_check
    monkeypatch.setattr(device_check, "MAX_FILE_BYTES", 1000)
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    check = device_check.Check(out, work, cpu=True, tiny=True, data=None, budget_s=60)
    blob = np.random.default_rng(0).integers(0, 256, 2500, dtype=np.uint8).tobytes()
    (work / "big").write_bytes(blob)
    assert check.keep(work / "big", "last.pt", parts=3)
    parts = sorted(out.glob("last.pt.part-*"))
    assert [p.name for p in parts] == ["last.pt.part-0", "last.pt.part-1", "last.pt.part-2"]
    assert all(p.stat().st_size <= 1000 for p in parts)
    assert b"".join(p.read_bytes() for p in parts) == blob
    assert not check.keep(work / "big", "best.pt")  # one file allowed: refused and recorded
    assert check.report["files"]["best.pt"].startswith("not returned") and not (out / "best.pt").exists()


def test_report_markdown_tabulates_throughput_per_mode():
    from augforge.device.report import markdown

    cells = [
        {"model": "sngan", "image_size": 64, "mode": "fp32", "img_per_s": 1234.0, "data_wait_share": 0.021},
        {"model": "sngan", "image_size": 64, "mode": "bf16", "error": "RuntimeError: no bf16"},
        {"model": "dcgan", "image_size": 64, "mode": "fp32", "skipped": "stage budget spent (75 s)"},
    ]
    md = markdown({"throughput": cells, "stages": {"throughput": {"status": "partial", "seconds": 80, "cap_s": 110}}})
    assert "| model | px | fp32 | bf16 |" in md
    assert "| sngan | 64 | 1,234 (2.1 %) | error: RuntimeError: no bf16 |" in md
    assert "| dcgan | 64 | stage budget spent (75 s) | - |" in md
    assert "| throughput | partial | 80 | 110 |" in md


@pytest.mark.slow
@pytest.mark.timeout(2400)  # every stage's tiny cap together is 1,500 s; ~8 min on 2 idle cores (estimate)
def test_device_check_cpu_tiny_on_a_bare_machine(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(_bare_machine(tmp_path)), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device-check.sh"), str(out), "--cpu", "--tiny", "--work", str(work)],
                          env=env, capture_output=True, text=True, timeout=1800)
    log = (work / "log.txt").read_text(errors="replace")[-6000:] if (work / "log.txt").exists() else ""
    assert (out / "report.json").is_file(), proc.stderr[-3000:] + log
    report = json.loads((out / "report.json").read_text())

    env_r = report["env"]
    assert set(env_r["missing"]) == set(ABSENT)
    assert env_r["plugins"]["source"].startswith("augforge_plugins on PYTHONPATH")
    stages = {name: s["status"] for name, s in report["stages"].items()}
    # without onnxscript the TorchScript exporter refuses sngan: the export fails, as it would on
    # the GPU machine without the carried wheels, and the slim best checkpoint comes back instead
    assert stages == {"env": "ok", "train": "ok", "export": "failed", "throughput": "ok", "resume": "ok", "ddp": "ok",
                      "sweep": "skipped"}, log
    assert proc.returncode == 1  # a failed stage
    assert "optuna" in report["stages"]["sweep"]["reason"]

    # what comes back: at most 8 files of at most 16 MiB
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best-generator.pt", "best.pt", "last.pt", "log.txt", "report.json", "report.md", "samples.png"]
    assert all((out / f).stat().st_size <= 16 * 2**20 for f in files)

    train = report["stages"]["train"]
    assert train["step"] == 16 and train["best"]["metric"] == "kid" and train["best"]["step"] in (8, 16)
    from augforge.checkpoint import load_checkpoint

    assert load_checkpoint(out / "last.pt")["step"] == 16
    assert load_checkpoint(out / "best.pt")["step"] == train["best"]["step"]

    import onnxruntime as ort

    from augforge.export import export_checkpoint

    slim = load_checkpoint(out / "best-generator.pt")
    assert slim["step"] == train["best"]["step"] and "discriminator" not in slim and "opt_g" not in slim
    onnx = export_checkpoint(out / "best-generator.pt", tmp_path / "generator.onnx")  # here, with onnxscript
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    image = sess.run(["image"], {"z": z, "label": np.array([0, 1, 2], dtype=np.int64)})[0]
    assert image.shape == (3, 3, 32, 32) and np.abs(image).max() <= 1.0

    cells = report["throughput"]
    measured = {(c["model"], c["mode"]) for c in cells if c.get("img_per_s", 0) > 0}
    for model in ("sngan", "cdcgan", "dcgan"):
        assert {(model, "fp32"), (model, "bf16"), (model, "bf16+channels_last")} <= measured
    assert all(0.0 <= c["data_wait_share"] < 1.0 for c in cells if "img_per_s" in c)
    assert any(c["mode"].endswith("compile") for c in cells)

    resume = report["stages"]["resume"]
    assert resume["bitwise_equal"] is True and resume["max_abs_diff"] == 0.0
    ddp = report["stages"]["ddp"]
    assert ddp["probe"]["backend"] == "gloo" and ddp["probe"]["world_size"] == 1
    md = (out / "report.md").read_text()
    assert "## Throughput" in md and "## modern run" in md
