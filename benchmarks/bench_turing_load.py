"""Turing app under load on loopback: N concurrent raters answer every image of a 100-image study.

    .venv/bin/python benchmarks/bench_turing_load.py [--raters 50] [--images-per-class 25]

The server is the real ``turing serve`` (uvicorn, one process) in a child process; the raters
are threads with keep-alive connections in this process. Writes benchmarks/out/turing_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import tempfile
import time
from pathlib import Path

from augforge.turing import sample
from augforge.turing import study as st
from augforge.turing.harness import ServerProcess, run_load

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raters", type=int, default=50)
    ap.add_argument("--images-per-class", type=int, default=25, help="real and generated per class; 2 classes")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = sample.make_study(Path(tmp) / "study", Path(tmp) / "src", per_class=args.images_per_class,
                                 classes=("mel", "bcc"), size=32, extra=0)
        server = ServerProcess(made.path).start()
        try:
            report = run_load("127.0.0.1", server.port, raters=args.raters, budget_s=600)
        finally:
            server.stop()
        con = sqlite3.connect(made.path / st.DB_NAME)
        rows, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT rater || '/' || image) FROM answers").fetchone()
    result = {
        "benchmark": "turing_load",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "images": made.n_images,
        **report.summary(),
        "rows_in_db": rows,
        "distinct_rater_image_in_db": distinct,
        "first_errors": report.errors[:5],
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "turing_load.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if report.errors or rows != args.raters * made.n_images or distinct != rows:
        raise SystemExit("FAILED: errors or missing/duplicate answers")


if __name__ == "__main__":
    main()
