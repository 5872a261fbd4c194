"""End to end in a real browser: Debian's headless Chromium driven by Playwright.

Signs in, answers with the keyboard and the mouse, reloads and resumes, finishes, then checks
that the admin results page shows exactly these answers; also on a phone-sized screen.
"""

import os
import re

import pytest

from augforge.turing import sample
from augforge.turing import study as st
from augforge.turing.harness import CHROMIUM, CHROMIUM_ARGS, PHONE, ThreadServer

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: run `make system-deps` (apt-get install chromium)"),
]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_rate_resume_and_results_in_chromium(tmp_path, browser):
    from playwright.sync_api import expect

    from augforge.turing.app import create_app

    made = sample.make_study(tmp_path / "study", tmp_path / "src", per_class=2, classes=("mel", "bcc"), seed=9)
    app = create_app(made.path)
    key = {r["id"]: r["origin"] for r in app.state.study.con.execute("SELECT id, origin FROM images")}
    order = st.rater_order(key, "dr-who", 9)
    given: dict[str, str] = {}
    errors: list[str] = []

    with ThreadServer(app) as url:
        page = browser.new_page(viewport=PHONE)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.click("#continue")  # consent not ticked: the browser refuses to go on
        assert page.url == url + "/"
        page.check("#consent")
        page.click("#continue")
        page.fill("#rater", "dr-who")
        page.select_option("#specialty", "dermatologist")
        page.fill("#years", "5")
        page.click("#start")
        page.wait_for_url(url + "/rate")
        assert no_horizontal_scroll(page)

        def shown() -> str:
            expect(page.locator("#next")).to_be_enabled()  # enabled once the image has loaded
            assert page.evaluate("document.getElementById('lesion').naturalWidth") == made.size
            return page.input_value("#image-id")

        def expect_position(n: int):
            expect(page.locator("#pos")).to_have_text(str(n))

        expect_position(1)
        assert shown() == order[0]
        # 1: keyboard only
        page.keyboard.press("r")
        page.keyboard.press("4")
        page.keyboard.press("Enter")
        given[order[0]] = "real"
        expect_position(2)
        # 2: touch/mouse
        assert shown() == order[1]
        page.click("label.choice:has-text('Generated')")
        page.click("fieldset.confidence label.choice:has-text('2')")
        page.click("#next")
        given[order[1]] = "generated"
        expect_position(3)
        # an incomplete answer is refused in the page, nothing is sent
        assert shown() == order[2]
        page.keyboard.press("g")
        page.keyboard.press("Enter")
        expect(page.locator("#msg")).to_contain_text("confidence from 1 to 5")
        expect_position(3)
        page.keyboard.press("5")
        page.keyboard.press("Enter")
        given[order[2]] = "generated"
        expect_position(4)
        assert app.state.study.con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 3

        # reload: the same rater resumes at image 4 of the same order
        page.reload()
        expect_position(4)
        assert shown() == order[3]
        expect(page.locator("#total")).to_have_text(str(len(order)))
        for i in range(3, len(order)):
            assert shown() == order[i]
            ans = "real" if i % 2 else "generated"
            page.keyboard.press(ans[0])
            page.keyboard.press("3")
            page.keyboard.press("Enter")
            given[order[i]] = ans
            if i + 1 < len(order):
                expect_position(i + 2)
        page.wait_for_url(url + "/done")
        expect(page.locator("#thanks")).to_contain_text(f"answered {len(order)} of {len(order)}")

        # results: a fresh browser context (no cookies) must log in with the token
        admin = browser.new_page(viewport={"width": 1280, "height": 900})
        resp = admin.goto(url + "/admin")
        assert resp.status == 200
        admin.fill("#token", "not-the-token")
        admin.click("#login")
        expect(admin.locator("#error")).to_have_text("wrong admin token")
        admin.fill("#token", made.admin_token)
        admin.click("#login")
        expect(admin.locator("#n-answers")).to_have_text(str(len(order)))
        gen = [i for i in given if key[i] == "generated"]
        fooled = sum(given[i] == "real" for i in gen)
        expect(admin.locator("#headline-share")).to_have_text(f"{100 * fooled / len(gen):.1f}%")
        expect(admin.locator("#headline")).to_contain_text(f"{fooled}/{len(gen)} answers;")
        correct = sum(given[i] == key[i] for i in given)
        expect(admin.locator("#raters")).to_contain_text("dr-who")
        expect(admin.locator("#raters")).to_contain_text(f"{100 * correct / len(given):.1f}%")
        assert admin.locator("#ranking li").count() == len(order)
        admin.evaluate("document.querySelectorAll('#ranking img').forEach(i => { i.loading = 'eager'; })")  # lazy thumbnails
        admin.wait_for_function("[...document.querySelectorAll('#ranking img')].every(i => i.naturalWidth > 0)")
        admin.set_viewport_size(PHONE)
        assert no_horizontal_scroll(admin)  # wide tables scroll inside their own box
    assert errors == []
    assert re.fullmatch(r"[0-9a-f]{16}", order[0])
