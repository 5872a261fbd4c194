"""The MLflow UI as a researcher sees it, in Debian's headless Chromium (Playwright).

A finished `augforge demo --quick` run, its generator registered with the alias `champion`,
served by `mlflow server` on the run's own store: the run page lists the datasets and the
description, the artifacts hold the sample grids and the loss curve, the model version shows
its alias, evaluation metrics and recommended policy. With ``AUGFORGE_SCREENSHOTS=DIR`` the
pages are saved as PNGs (docs/tracking.md shows them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from augforge.turing.harness import CHROMIUM, CHROMIUM_ARGS, free_port

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # a demo run, an export and an MLflow server: a minute or two on 2 cores
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: run `make system-deps` (apt-get install chromium)"),
]
NAME = "augforge-ui-test"


@pytest.fixture
def served_demo(tmp_path, monkeypatch, capsys):
    """(base url, experiment id, run id, model version) of a registered demo run behind `mlflow server`."""
    import mlflow

    from augforge.cli import main
    from augforge.export import register_onnx

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    main(["demo", "--quick", "--out", "demo"])
    run_id = capsys.readouterr().out.split("MLflow run ")[1].split(",")[0]
    client = mlflow.MlflowClient(store)
    run = client.get_run(run_id)
    client.set_tag(run_id, "augforge.eval.recommended_policy", "ratio:0.5")  # as the policy study tags it
    mv = register_onnx(tmp_path / "demo" / "generator.onnx", NAME, run_id=run.info.run_id, tracking_uri=store)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # the server needs a few seconds (longer on a loaded machine)
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError("mlflow server exited") from None
                time.sleep(0.5)
        yield url, run.info.experiment_id, run.info.run_id, mv
    finally:
        server.terminate()
        server.wait(30)


def test_mlflow_ui_shows_datasets_samples_loss_curve_and_the_registered_version(served_demo):
    from playwright.sync_api import expect, sync_playwright

    url, exp_id, run_id, mv = served_demo
    shots = os.environ.get("AUGFORGE_SCREENSHOTS")

    def shot(page, name):
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(shots) / f"mlflow-{name}.png"))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        timeout = 60_000
        # the run: its datasets (mlflow.log_input) and its description
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}")
        expect(page.get_by_text("synthetic-lesions-train").first).to_be_visible(timeout=timeout)
        expect(page.get_by_text("synthetic-lesions", exact=False).first).to_be_visible(timeout=timeout)
        shot(page, "run")
        # its artifacts: the loss curve and the sample grids
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run_id}/artifacts")
        expect(page.get_by_text("loss_curve.png").first).to_be_visible(timeout=timeout)
        expect(page.get_by_text("samples").first).to_be_visible(timeout=timeout)
        page.get_by_text("loss_curve.png").first.click()
        expect(page.locator("img").first).to_be_visible(timeout=timeout)
        shot(page, "artifacts")
        # the experiment's runs, side by side
        page.goto(f"{url}/#/experiments/{exp_id}")
        expect(page.get_by_text(NAME).or_(page.get_by_text("augforge")).first).to_be_visible(timeout=timeout)
        shot(page, "experiment")
        # the registered version: alias, evaluation metrics in its description, the recommended policy
        page.goto(f"{url}/#/models/{NAME}/versions/{mv.version}")
        expect(page.get_by_text("champion").first).to_be_visible(timeout=timeout)
        expect(page.get_by_text("augforge.recommended_policy").first).to_be_visible(timeout=timeout)
        expect(page.get_by_text("ratio:0.5").first).to_be_visible(timeout=timeout)
        expect(page.get_by_text("Evaluation:", exact=False).first).to_be_visible(timeout=timeout)
        shot(page, "model-version")
        browser.close()
