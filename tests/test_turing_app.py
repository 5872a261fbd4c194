"""The Turing-test app in-process: API, pages without JavaScript, bad input, admin, results."""

import json
import re

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from augforge.cli import cli
from augforge.turing import results as rs
from augforge.turing import sample
from augforge.turing import study as st
from augforge.turing.app import ADMIN_COOKIE, RATER_COOKIE, create_app

PROFILE = {"specialty": "dermatologist", "years": 7, "consent": True}


@pytest.fixture
def made(tmp_path):
    return sample.make_study(tmp_path / "study", tmp_path / "src", per_class=3, classes=("mel", "bcc"), seed=2)


@pytest.fixture
def client(made):
    with TestClient(create_app(made.path)) as c:
        yield c


def sign_in(client, rater, **kw):
    return client.post("/api/raters", json={"rater": rater, **PROFILE, **kw})


def answer(client, rater, image, ans="real", confidence=3, **kw):
    return client.post("/api/answers", json={"rater": rater, "image": image, "answer": ans, "confidence": confidence, **kw})


def test_api_rating_flow_and_resume(client, made):
    r = sign_in(client, "R1")
    assert r.status_code == 201 and r.json()["resumed"] is False
    p = r.json()
    assert (p["answered"], p["total"], p["done"]) == (0, 12, False)
    order = st.rater_order(client.app.state.study.image_ids, "R1", 2)
    assert [p["image"], p["preload"]] == order[:2]
    for i in range(5):
        r = answer(client, "R1", p["image"], "real" if i % 2 else "generated", 1 + i % 5, elapsed_ms=1200)
        assert r.status_code == 201, r.text
        p = r.json()
        assert p["answered"] == i + 1
    # resume: signing in again (any device) continues at image 6 of the same order
    r = sign_in(client, "R1", specialty="nurse")
    assert r.status_code == 200 and r.json()["resumed"] is True and r.json()["image"] == order[5]
    assert client.app.state.study.rater("R1")["specialty"] == "dermatologist"  # first sign-in wins
    assert client.get("/api/raters/R1/next").json()["image"] == order[5]
    # another rater gets another order
    assert sign_in(client, "R2").json()["image"] != order[0] or st.rater_order(order, "R2", 2) != order
    while not p["done"]:
        p = answer(client, "R1", p["image"]).json()
    assert p == {"rater": "R1", "answered": 12, "total": 12, "done": True, "image": None, "preload": None}


def test_bad_input_gets_clear_4xx(client):
    sign_in(client, "R1")
    image = client.get("/api/raters/R1/next").json()["image"]
    cases = [
        (answer(client, "R1", "0123456789abcdef"), 404, "unknown image id '0123456789abcdef'"),
        (answer(client, "nobody", image), 404, "unknown rater 'nobody': sign in first"),
        (client.post("/api/answers", json={"image": image, "answer": "real", "confidence": 3}), 422, "rater: Field required"),
        (answer(client, "R1", image, "maybe"), 422, "answer: Input should be 'real' or 'generated'"),
        (answer(client, "R1", image, confidence=9), 422, "confidence: Input should be less than or equal to 5"),
        (answer(client, "R1", image, extra=1), 422, "extra: Extra inputs are not permitted"),
        (client.post("/api/answers", content=b"{not json", headers={"content-type": "application/json"}), 422, "JSON decode error"),
        (client.get("/api/raters/ghost/next"), 404, "unknown rater 'ghost'"),
        (sign_in(client, "R 2"), 422, "rater id must be 1-64 characters"),
        (sign_in(client, "R2", consent=False), 422, "consent is required"),
        (sign_in(client, "R2", specialty="astronaut"), 422, "specialty must be one of"),
        (sign_in(client, "R2", years=-1), 422, "years of experience must be a number from 0 to 70"),
        (client.get("/img/0123456789abcdef"), 404, "unknown image id"),
        (client.get("/api/admin/results"), 401, "admin token required"),
        (client.get("/api/admin/results", headers={"Authorization": "Bearer wrong"}), 403, "wrong admin token"),
        (client.get("/api/admin/answers.csv", headers={"Authorization": "Bearer wrong"}), 403, "wrong admin token"),
    ]
    assert answer(client, "R1", image).status_code == 201
    cases.append((answer(client, "R1", image, "generated"), 409, "has already answered image"))
    for resp, status, message in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        assert message in resp.json()["detail"], resp.text
    # nothing of the failed calls was written: one rater, one answer
    con = client.app.state.study.con
    assert con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM raters").fetchone()[0] == 1


def test_answer_key_never_reaches_raters(client, made):
    """Rater-facing responses carry no origin or class, and every image response looks the same."""
    sign_in(client, "R1")
    client.cookies.set(RATER_COOKIE, "R1")
    texts = [client.get(u).text for u in ("/", "/signin?consent=yes", "/rate", "/done", "/api/study", "/static/rate.js")]
    p = client.get("/api/raters/R1/next").json()
    texts.append(json.dumps(p))
    texts.append(answer(client, "R1", p["image"]).text)
    for t in texts:
        assert not re.search(r"\b(mel|bcc|origin|class_?name)\b", t), t[:300]
    assert set(p) == {"rater", "answered", "total", "done", "image", "preload"}
    headers = []
    for image in client.app.state.study.image_ids:
        r = client.get(f"/img/{image}")
        assert r.status_code == 200
        headers.append(tuple(sorted((k, v) for k, v in r.headers.items() if k != "date")))
    assert len(set(headers)) == 1, set(headers)
    assert "etag" not in dict(headers[0]) and "last-modified" not in dict(headers[0])


def test_pages_work_without_javascript(client):
    r = client.get("/signin", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"  # consent first
    form = {"rater": "Dr.X", "specialty": "nurse", "years": "2.5", "consent": "yes"}
    assert client.post("/signin", data={**form, "years": "lots"}).status_code == 422
    r = client.post("/signin", data={**form, "years": "lots"})
    assert "years of experience must be a number" in r.text
    assert client.post("/signin", data={**form, "consent": ""}).status_code == 422
    r = client.post("/signin", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/rate" and r.cookies[RATER_COOKIE] == "Dr.X"
    client.cookies.set(RATER_COOKIE, "Dr.X")
    page = client.get("/rate").text
    image = re.search(r'name="image" id="image-id" value="([0-9a-f]{16})"', page).group(1)
    assert 'Image <strong id="pos">1</strong> of <strong id="total">12</strong>' in page
    r = client.post("/rate", data={"image": image, "answer": "real"}, follow_redirects=False)
    assert r.status_code == 422 and "choose a confidence" in r.text
    r = client.post("/rate", data={"image": image, "answer": "real", "confidence": "4"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/rate"
    assert 'id="pos">2<' in client.get("/rate").text
    assert client.post("/rate", data={"image": image, "answer": "real", "confidence": "4"}).status_code == 409
    client.cookies.clear()
    r = client.post("/rate", data={"image": image, "answer": "real", "confidence": "4"})
    assert r.status_code == 401 and "sign in first" in r.text
    assert client.get("/rate", follow_redirects=False).headers["location"] == "/"


def test_admin_page_behind_token(client, made):
    r = client.get("/admin")
    assert r.status_code == 200 and 'name="token"' in r.text
    r = client.post("/admin", data={"token": "nope"})
    assert r.status_code == 403 and "wrong admin token" in r.text
    client.cookies.set(ADMIN_COOKIE, "nope")
    assert client.get("/admin").status_code == 403
    client.cookies.clear()
    r = client.post("/admin", data={"token": made.admin_token}, follow_redirects=False)
    assert r.status_code == 303
    client.cookies.set(ADMIN_COOKIE, made.admin_token)
    page = client.get("/admin")
    assert page.status_code == 200 and "Realness ranking" in page.text and 'id="n-answers">0<' in page.text
    csv = client.get("/api/admin/answers.csv")
    assert csv.status_code == 200 and csv.text.startswith("rater,specialty,years,image,origin,class")


def test_results_reflect_answers(client, made):
    """Two raters with known behaviour; every headline number checked by hand."""
    study = client.app.state.study
    k = {r["id"]: r["origin"] for r in study.con.execute("SELECT id, origin FROM images")}
    sign_in(client, "fooled")  # calls everything real
    sign_in(client, "expert", specialty="nurse")  # always right
    for image in sorted(k):
        assert answer(client, "fooled", image, "real", 2).status_code == 201
        assert answer(client, "expert", image, k[image], 5).status_code == 201
    res = client.get("/api/admin/results", headers={"Authorization": f"Bearer {made.admin_token}"}).json()
    g = res["overall"]["generated_judged_real"]
    assert (g["k"], g["n"], g["share"]) == (6, 12, 0.5)
    assert g["wilson"] == pytest.approx(list(rs.stats.wilson_interval(6, 12)))
    assert res["overall"]["accuracy"] == 0.75
    assert res["overall"]["sensitivity"] == 0.5 and res["overall"]["specificity"] == 1.0
    raters = {r["rater"]: r for r in res["raters"]}
    assert raters["fooled"]["accuracy"] == 0.5 and raters["expert"]["accuracy"] == 1.0
    assert raters["fooled"]["generated_judged_real"] == 1.0 and raters["expert"]["mean_confidence"] == 5.0
    assert res["rater_accuracy"]["mean"] == 0.75
    assert {s["specialty"]: s["accuracy"] for s in res["per_specialty"]} == {"dermatologist": 0.5, "nurse": 1.0}
    assert [c["class"] for c in res["per_class"]] == ["mel", "bcc"] and all(c["n"] == 12 for c in res["per_class"])
    # real images: both say real (agree); generated: they split -> kappa = (P - Pe) / (1 - Pe)
    p_bar, p_e = 0.5, 0.75**2 + 0.25**2
    assert res["fleiss_kappa"]["kappa"] == pytest.approx((p_bar - p_e) / (1 - p_e))
    top = res["images"][0]
    assert top["realness"] == 1.0 and top["origin"] == "real" and res["images"][-1]["realness"] == 0.5
    assert {b["confidence"]: b["accuracy"] for b in res["by_confidence"]} == {2: 0.5, 5: 1.0}
    assert res["n_raters_complete"] == 2 and res["n_answers"] == 24


def answer_all_real(made):
    study = st.Study(made.path)
    study.sign_in("R1", "other", 1, True)
    for image in sorted(study.image_ids):
        study.answer("R1", image, "real", 3)


def test_results_cli_exports(made, tmp_path):
    answer_all_real(made)
    out_csv, out_json = tmp_path / "a.csv", tmp_path / "r.json"
    res = CliRunner().invoke(cli, ["turing", "results", str(made.path), "--csv", str(out_csv), "--json", str(out_json), "--no-track"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "100.0% of answers on generated images said 'real' (6/6;" in res.output
    assert "logged to MLflow" not in res.output
    assert len(out_csv.read_text().splitlines()) == 13
    assert json.loads(out_json.read_text())["n_answers"] == 12


@pytest.mark.slow  # creating a fresh MLflow SQLite store takes ~10 s
def test_results_cli_logs_to_mlflow(made, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the cwd
    answer_all_real(made)
    uri = f"sqlite:///{tmp_path / 'turing-mlflow.db'}"
    res = CliRunner().invoke(cli, ["turing", "results", str(made.path), "--tracking-uri", uri])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "logged to MLflow" in res.output

    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("augforge-turing").experiment_id])
    assert len(runs) == 1
    m = runs[0].data.metrics
    assert m["generated_judged_real"] == 1.0 and m["n_answers"] == 12 and "class.mel.accuracy" in m
    arts = {a.path for a in client.list_artifacts(runs[0].info.run_id, "turing")}
    assert arts == {"turing/turing_results.json", "turing/turing_answers.csv"}
