"""Regenerate the Turing-test screenshots in docs/ (needs Debian's chromium and playwright).

    .venv/bin/python docs/turing_screenshots.py

Builds an example study from procedurally drawn lesions (``augforge.turing.sample``; no patient
images end up in the repository), adds answers from 14 simulated raters, then photographs the
rating page (desktop and phone) and the admin results page (desktop and phone).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from augforge.turing import sample
from augforge.turing import study as st
from augforge.turing.harness import CHROMIUM, CHROMIUM_ARGS, PHONE, ThreadServer

DOCS = Path(__file__).resolve().parent


def simulated_raters(study: st.Study, n: int = 14, seed: int = 0) -> None:
    """Raters who call a generated image real about 55% of the time (and real ones 75%)."""
    rng = np.random.default_rng(seed)
    key = dict(study.con.execute("SELECT id, origin FROM images").fetchall())
    specialties = ["dermatologist", "dermatology resident", "general practitioner", "medical student"]
    for r in range(n):
        rater = f"rater{r:02d}"
        study.sign_in(rater, specialties[r % len(specialties)], float(rng.integers(1, 25)), True)
        skill = rng.normal(0, 0.1)
        for image in st.rater_order(key, rater, study.seed)[: len(key) if r < n - 2 else len(key) // 2]:
            p_real = (0.75 if key[image] == "real" else 0.55) - skill * (1 if key[image] == "generated" else -1)
            said = "real" if rng.random() < p_real else "generated"
            study.answer(rater, image, said, int(rng.integers(1, 6)), int(rng.integers(1500, 9000)))


def main() -> None:
    from playwright.sync_api import sync_playwright

    from augforge.turing.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = sample.write_real_folder(tmp / "real", ("mel", "bcc", "nv"), 8, seed=3)
        gen = sample.write_generated_folder(tmp / "gen", ("mel", "bcc", "nv"), 8, seed=3, size=128)
        made = st.create_study(
            tmp / "study", st.folder_items(real), st.folder_items(gen), per_class=6, seed=3, size=128,
            real_desc="folder real/ (procedurally drawn example lesions)", generated_desc="folder gen/ (procedurally drawn example lesions)",
        )
        simulated_raters(st.Study(made.path))
        app = create_app(made.path)
        with ThreadServer(app) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, viewport, scale in (("turing-rating.png", {"width": 1100, "height": 900}, 1),
                                          ("turing-rating-phone.png", PHONE, 2)):
                page = browser.new_page(viewport=viewport, device_scale_factor=scale, is_mobile=scale > 1, has_touch=scale > 1)
                page.goto(url + "/")
                page.check("#consent")
                page.click("#continue")
                page.fill("#rater", f"demo-{scale}")
                page.select_option("#specialty", "dermatologist")
                page.fill("#years", "8")
                page.click("#start")
                page.wait_for_url(url + "/rate")
                for i, keys in enumerate((("r", "4"), ("g", "2"), ("g", "5"))):
                    for key in (*keys, "Enter"):
                        page.keyboard.press(key)
                    page.wait_for_function(f"document.getElementById('pos').textContent === '{i + 2}'")
                    page.wait_for_function("document.getElementById('next').disabled === false")
                page.keyboard.press("r")
                page.keyboard.press("3")
                page.screenshot(path=DOCS / name)
                page.close()
            for name, viewport, scale in (("turing-results.png", {"width": 1280, "height": 900}, 1),
                                          ("turing-results-phone.png", PHONE, 2)):
                page = browser.new_page(viewport=viewport, device_scale_factor=scale)
                page.goto(url + "/admin")
                page.fill("#token", made.admin_token)
                page.click("#login")
                page.wait_for_selector("#ranking")
                page.evaluate("document.querySelectorAll('#ranking img').forEach(i => { i.loading = 'eager'; })")
                page.wait_for_function("[...document.querySelectorAll('#ranking img')].every(i => i.naturalWidth > 0)")
                page.screenshot(path=DOCS / name, full_page=scale == 1)
                page.close()
            browser.close()
    for name in ("turing-rating.png", "turing-rating-phone.png", "turing-results.png", "turing-results-phone.png"):
        print(DOCS / name, (DOCS / name).stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
