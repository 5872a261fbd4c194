"""docs/plugin-guide.md: its code runs as written, it lists every hook, and the README links it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from augforge import hookspecs, plugins

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "plugin-guide.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_guide_code_examples_run_in_order(tmp_path, monkeypatch):
    blocks = python_blocks(GUIDE.read_text())
    assert len(blocks) >= 6, "the guide lost its examples"
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "plugin_guide"}
    try:
        for i, block in enumerate(blocks):
            exec(compile(block, f"{GUIDE.name}[python block {i + 1}]", "exec"), namespace)
        assert callable(namespace["test_augforge_conformance"])
        from augforge import registry

        assert registry.entry("generator", "tiny-gan").plugin == "my_plugin"
        assert "my_plugin" not in plugins.get_plugin_manager().failures
        # the observer example reads the metric keys the loop really passes (an untracked run)
        from augforge.config import RunConfig
        from augforge.training import RunInfo

        run = RunInfo(config=RunConfig(), run_dir=tmp_path, run_id=None, class_names=["nv"])
        namespace["augforge_epoch_end"](run=run, epoch=1, metrics={"epoch_loss_d": 1.0, "epoch_loss_g": 0.5,
                                                                    "epoch_d_real": 0.0, "epoch_d_fake": 0.0})
    finally:
        plugins.reset()


def test_guide_lists_every_hook_and_the_readme_links_it_on_its_first_screen():
    text = GUIDE.read_text()
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("augforge_"):
            args = ", ".join(inspect.signature(fn).parameters)
            assert f"`{name}({args})`" in text, name
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:12])
    assert "(docs/plugin-guide.md)" in first_screen
