"""A throw-away PostgreSQL 15 cluster for tests (Optuna RDB storage, MLflow backend store).

Fixtures (registered in ``conftest.py`` via ``pytest_plugins``):

``postgres_cluster`` (session)
    The running cluster: ``.url(db)``, ``.create_database(name) -> url``, ``.admin_url``.
``postgres_url`` (session)
    ``postgresql://augforge:PASS@127.0.0.1:PORT/augforge_test`` — one database shared by the
    session (use a unique study/experiment name per test).
``fresh_postgres_url`` (function)
    Factory: ``fresh_postgres_url("mlflow")`` creates a new, empty database and returns its URL.

The cluster lives in a temporary directory, listens on a free loopback port only (no Unix
socket), and is stopped and deleted at the end of the session. PostgreSQL refuses to run as
root, so as root the data directory is owned by the ``postgres`` system user and ``initdb`` /
``pg_ctl`` run through ``runuser -u postgres --``.

Where the binaries come from: ``$AUGFORGE_PG_BINDIR``, else ``/usr/lib/postgresql/15/bin``
(Debian's ``postgresql-15``; installed by ``scripts/system-deps.sh`` / ``make test``, or by this
fixture with apt-get when running as root), else any ``/usr/lib/postgresql/*/bin`` or
``initdb`` on PATH. ``$AUGFORGE_TEST_POSTGRES_URL`` (an existing server's admin URL) skips
the temporary cluster: the fixture then only creates databases in that server.

When PostgreSQL cannot be had, tests that need it are skipped with the reason — except
under ``CI=true``, where that is an error.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_FIXTURES = {"postgres_cluster", "postgres_url", "fresh_postgres_url"}
DEFAULT_DB = "augforge_test"
USER = "augforge"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str):
    if _in_ci():
        pytest.fail(f"PostgreSQL is required in CI (CI=true) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason} (run `make system-deps` or "
                "`apt-get install -y postgresql-15`)")


def find_bindir(install: bool = True) -> Path | None:
    """Directory holding ``initdb``/``pg_ctl``; installs Debian's postgresql-15 as root if absent."""
    cands = []
    if os.environ.get("AUGFORGE_PG_BINDIR"):
        cands.append(os.environ["AUGFORGE_PG_BINDIR"])
    cands.append("/usr/lib/postgresql/15/bin")
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        cands.append(str(Path(on_path).parent))
    for c in cands:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql-15"],
                       env=env, capture_output=True, timeout=900)
        return find_bindir(install=False)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_db(url: str, db: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + db, p.query, p.fragment))


class PostgresCluster:
    """initdb + pg_ctl in a temporary directory; loopback TCP only; password auth."""

    def __init__(self, bindir: Path, base: Path | None = None):
        self.bindir = Path(bindir)
        self.base = Path(base or tempfile.mkdtemp(prefix="augforge-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.password = secrets.token_hex(12)
        self.port: int | None = None
        self.as_root = os.geteuid() == 0
        self._started = False

    # -- helpers ---------------------------------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.base)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"{self.log.read_text() if self.log.exists() else ''}")
        return proc

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/postgres"

    def url(self, db: str = DEFAULT_DB) -> str:
        return _with_db(self.admin_url, db)

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> "PostgresCluster":
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        os.chmod(self.base, 0o700)
        self._run(self.bindir / "initdb", "-D", self.data, "-U", USER, "--pwfile", pwfile,
                  "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        pwfile.unlink()
        conf = self.data / "postgresql.conf"
        last: Exception | None = None
        for _ in range(attempts):  # a free port can be taken between probing and binding
            self.port = free_port()
            with conf.open("a") as f:
                f.write(
                    "\n# augforge test cluster\n"
                    f"port = {self.port}\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = ''\n"
                    "max_connections = 200\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                )
            try:
                self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")
                self._started = True
                break
            except RuntimeError as exc:
                last = exc
        if not self._started:
            raise RuntimeError(f"could not start PostgreSQL: {last}")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg2

        deadline = time.time() + timeout
        while True:
            try:
                psycopg2.connect(self.admin_url, connect_timeout=3).close()
                return
            except psycopg2.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def create_database(self, name: str) -> str:
        return create_database(self.admin_url, name)

    def stop(self) -> None:
        if self._started:
            try:
                self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
            finally:
                self._started = False
        shutil.rmtree(self.base, ignore_errors=True)


class ExternalServer:
    """An already-running server given by ``$AUGFORGE_TEST_POSTGRES_URL`` (its admin URL)."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url

    def url(self, db: str = DEFAULT_DB) -> str:
        return _with_db(self.admin_url, db)

    def create_database(self, name: str) -> str:
        return create_database(self.admin_url, name)

    def stop(self) -> None: ...


def create_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE ``name`` (dropping an old one of that name) and return its URL."""
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(admin_url, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()
    return _with_db(admin_url, name)


@pytest.fixture(scope="session")
def postgres_cluster():
    external = os.environ.get("AUGFORGE_TEST_POSTGRES_URL")
    if external:
        server = ExternalServer(external)
    else:
        bindir = find_bindir()
        if bindir is None:
            _unavailable("no initdb/pg_ctl found (looked in $AUGFORGE_PG_BINDIR, /usr/lib/postgresql/*/bin, PATH)")
        if os.geteuid() == 0 and not shutil.which("runuser"):
            _unavailable("running as root but `runuser` is missing (PostgreSQL refuses to run as root)")
        server = PostgresCluster(bindir)
        try:
            server.start()
        except Exception as exc:  # noqa: BLE001 - report why, then skip/fail
            server.stop()
            _unavailable(f"could not start a temporary cluster: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster) -> str:
    """URL of a database in the session's PostgreSQL, e.g. for ``--storage``."""
    return postgres_cluster.create_database(DEFAULT_DB)


@pytest.fixture
def fresh_postgres_url(postgres_cluster):
    """Factory for new, empty databases: ``fresh_postgres_url("mlflow") -> url``."""

    def make(prefix: str = "db") -> str:
        return postgres_cluster.create_database(f"{prefix}_{uuid.uuid4().hex[:8]}")

    return make


def pytest_collection_modifyitems(config, items):
    """Any test using these fixtures is a ``postgres`` test, marked or not."""
    for item in items:
        if PG_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
