"""Running the Turing app for tests, the load benchmark and the docs screenshots.

* ``ThreadServer``: uvicorn serving an app object in a background thread.
* ``ServerProcess``: ``turing serve`` in a child process (restarts, SIGKILL, load).
* ``CHROMIUM``, ``CHROMIUM_ARGS``: how the browser test and the screenshots start Chromium.
* ``run_load``: many raters answering at once through the JSON API. Each rater is a thread
  with its own keep-alive connection that signs in, then posts one answer after another, each
  to the image the previous reply named, as the rating page does.

Standard library only (plus uvicorn for ``ThreadServer``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

#: Debian's Chromium and the flags the browser test and the screenshots launch it with
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}  # CSS px of a common phone screen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        con.request("GET", "/healthz")
        ok = con.getresponse().status == 200
        con.close()
        return ok
    except OSError:
        return False


class ThreadServer:
    """``with ThreadServer(app) as url:`` serves ``app`` on a free loopback port."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServerProcess:
    """``turing serve STUDY`` in a child process on a free loopback port.

    Runs the click command through ``python -m augforge.turing.cli``, which skips loading every
    plugin (and so torch) that the full ``augforge`` entry point does at start-up.
    """

    def __init__(self, study):
        self.study, self.port, self.proc = study, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "augforge.turing.cli", "serve", str(self.study), "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while not _healthy(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"server did not answer on {self.url} within {timeout} s")
            time.sleep(0.1)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Send ``sig`` and return everything the server printed."""
        if self.proc is None or self.proc.poll() is not None:
            return ""
        self.proc.send_signal(sig)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


@dataclass
class LoadReport:
    raters: int
    answers: int
    requests: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)
        q = lambda f: round(lat[min(len(lat) - 1, int(f * len(lat)))], 2) if lat else None  # noqa: E731
        return {
            "raters": self.raters, "answers": self.answers, "requests": self.requests,
            "seconds": round(self.seconds, 2), "requests_per_s": round(self.requests / self.seconds, 1),
            "answers_per_s": round(self.answers / self.seconds, 1),
            "latency_ms_p50": q(0.5), "latency_ms_p95": q(0.95), "latency_ms_p99": q(0.99),
            "latency_ms_max": q(1.0), "errors": len(self.errors),
        }


def planned_answer(rater: str, image: str) -> tuple[str, int]:
    """What the load test answers: deterministic, so the stored rows can be checked after."""
    h = int(hashlib.sha256(f"{rater}/{image}".encode()).hexdigest()[:8], 16)
    return ("real" if h % 2 else "generated"), 1 + (h >> 1) % 5


def _rater(host: str, port: int, rater: str, timeout: float, deadline: float, report: LoadReport, lock: threading.Lock):
    con = http.client.HTTPConnection(host, port, timeout=timeout)
    lat, n_req, n_ans = [], 0, 0

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        nonlocal n_req
        if time.monotonic() > deadline:
            raise TimeoutError(f"{rater}: load test deadline passed")
        t0 = time.perf_counter()
        con.request(method, path, body=None if body is None else json.dumps(body),
                    headers={"Content-Type": "application/json"})
        resp = con.getresponse()
        data = resp.read()
        lat.append(1000 * (time.perf_counter() - t0))
        n_req += 1
        return resp.status, json.loads(data) if data else {}

    errors = []
    try:
        status, p = call("POST", "/api/raters", {"rater": rater, "specialty": "other", "years": 1, "consent": True})
        if status not in (200, 201):
            raise RuntimeError(f"{rater}: sign-in answered {status} {p}")
        while not p["done"]:  # like the rating page: each answer's reply names the next image
            answer, confidence = planned_answer(rater, p["image"])
            status, p = call("POST", "/api/answers", {"rater": rater, "image": p["image"], "answer": answer,
                                                      "confidence": confidence})
            if status != 201:
                raise RuntimeError(f"{rater}: answer answered {status} {p}")
            n_ans += 1
    except Exception as exc:  # recorded, not raised: the report lists every failing rater
        errors.append(f"{rater}: {type(exc).__name__}: {exc}")
    finally:
        con.close()
    with lock:
        report.latencies_ms += lat
        report.requests += n_req
        report.answers += n_ans
        report.errors += errors


def run_load(host: str, port: int, raters: int = 50, prefix: str = "load", timeout: float = 30.0, budget_s: float = 300.0) -> LoadReport:
    """``raters`` concurrent raters each answer every image; stops at ``budget_s`` seconds."""
    report = LoadReport(raters=raters, answers=0, requests=0, seconds=0.0)
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = t0 + budget_s
    with ThreadPoolExecutor(max_workers=raters) as pool:
        for i in range(raters):
            pool.submit(_rater, host, port, f"{prefix}{i:03d}", timeout, deadline, report, lock)
    report.seconds = time.monotonic() - t0
    return report
