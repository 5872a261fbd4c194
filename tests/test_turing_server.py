"""The Turing app as a real server process (uvicorn on loopback): restarts and load."""

import signal
import sqlite3
from collections import Counter

import httpx
import pytest

from augforge.turing import sample
from augforge.turing import study as st
from augforge.turing.harness import ServerProcess, planned_answer, run_load


@pytest.fixture
def made(tmp_path):
    return sample.make_study(tmp_path / "study", tmp_path / "src", per_class=3, classes=("mel", "bcc"), seed=4)


def test_nothing_is_lost_when_the_server_process_dies(made):
    """Answers acknowledged with 201 survive SIGKILL (no clean shutdown) and a restart."""
    server = ServerProcess(made.path).start()
    try:
        c = httpx.Client(base_url=server.url, timeout=10)
        assert c.post("/api/raters", json={"rater": "R1", "specialty": "nurse", "years": 3, "consent": True}).status_code == 201
        p = c.get("/api/raters/R1/next").json()
        given = []
        for i in range(7):
            given.append(p["image"])
            r = c.post("/api/answers", json={"rater": "R1", "image": p["image"], "answer": "real", "confidence": 1 + i % 5})
            assert r.status_code == 201
            p = r.json()
        c.close()
    finally:
        server.stop(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL

    server.start()  # the same process command, the same study folder
    try:
        c = httpx.Client(base_url=server.url, timeout=10)
        p = c.get("/api/raters/R1/next").json()
        assert p["answered"] == 7 and p["image"] == st.rater_order(st.Study(made.path).image_ids, "R1", 4)[7]
        r = c.post("/api/answers", json={"rater": "R1", "image": given[0], "answer": "generated", "confidence": 5})
        assert r.status_code == 409 and "already answered" in r.json()["detail"]
        res = c.get("/api/admin/results", headers={"Authorization": f"Bearer {made.admin_token}"}).json()
        assert res["n_answers"] == 7 and res["raters"][0]["rater"] == "R1"
        c.close()
    finally:
        out = server.stop()
    assert server.proc.returncode in (0, -signal.SIGTERM) and "Finished server process" in out, out  # graceful
    con = sqlite3.connect(made.path / st.DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in con.execute("SELECT image FROM answers ORDER BY id")] == given


def test_load_50_raters_answer_100_images_each(tmp_path):
    """50 concurrent raters x 100 images through the HTTP API: every answer stored exactly once."""
    made = sample.make_study(tmp_path / "study", tmp_path / "src", per_class=25, classes=("mel", "bcc"), seed=1, size=32, extra=0)
    assert made.n_images == 100
    server = ServerProcess(made.path).start()
    try:
        report = run_load("127.0.0.1", server.port, raters=50, budget_s=120)
    finally:
        out = server.stop()
    summary = report.summary()
    print("turing load:", summary)
    assert report.errors == [], report.errors[:5]
    assert report.answers == 5000 and report.seconds < 120, summary
    con = sqlite3.connect(made.path / st.DB_NAME)
    rows = con.execute("SELECT rater, image, answer, confidence FROM answers").fetchall()
    assert len(rows) == 5000
    assert len({(r, i) for r, i, _, _ in rows}) == 5000
    assert Counter(r for r, _, _, _ in rows) == {f"load{i:03d}": 100 for i in range(50)}
    assert all((a, c) == planned_answer(r, i) for r, i, a, c in rows)
    assert "Finished server process" in out, out
