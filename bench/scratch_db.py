"""Scratch PostgreSQL databases for benchmarks, on the server of DOCKYARD_BENCH_DATABASE_URL
(default: the test server)."""

from __future__ import annotations

import os
from urllib.parse import urlparse, urlunparse

import psycopg

SERVER_URL = os.environ.get(
    "DOCKYARD_BENCH_DATABASE_URL",
    os.environ.get("DOCKYARD_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
)


def database_url(dbname: str) -> str:
    """The URL of database `dbname` on the benchmark server."""
    return urlunparse(urlparse(SERVER_URL)._replace(path=f"/{dbname}"))


def admin_sql(sql: str) -> None:
    """Runs one statement (CREATE/DROP DATABASE) outside a transaction."""
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(sql)
