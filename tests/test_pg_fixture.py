"""The temporary PostgreSQL cluster fixture works (used by sweeps and team mode)."""

import pytest

pytestmark = pytest.mark.postgres


def test_postgres_url_accepts_connections(postgres_url):
    import psycopg2

    assert postgres_url.startswith("postgresql://") and "@127.0.0.1:" in postgres_url
    with psycopg2.connect(postgres_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42); SELECT x FROM t")
        assert cur.fetchone() == (42,)
        cur.execute("SHOW server_version")
        assert cur.fetchone()[0].startswith("15")


def test_fresh_databases_are_separate(fresh_postgres_url):
    import psycopg2

    a, b = fresh_postgres_url("a"), fresh_postgres_url("b")
    assert a != b
    with psycopg2.connect(a) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE only_in_a (x int)")
    with psycopg2.connect(b) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('only_in_a')")
        assert cur.fetchone() == (None,)


def test_optuna_rdb_storage_on_postgres(postgres_url):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=postgres_url, study_name="pg-fixture-smoke")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=3)
    again = optuna.load_study(storage=postgres_url, study_name="pg-fixture-smoke")
    assert len(again.trials) == 3
