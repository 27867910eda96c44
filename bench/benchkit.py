"""What the benchmarks share: scratch PostgreSQL databases on the server of
DOCKYARD_BENCH_DATABASE_URL (default: the test server), free ports, and waiting on a condition.
bench/ is on the path when a benchmark runs (`python bench/<name>.py`)."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlparse, urlunparse

import httpx
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, *, timeout: float, what: str, interval: float = 0.2):
    """Polls `condition` until it returns something truthy; gives up at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (httpx.HTTPError, OSError) as error:
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what} (last error: {last_error!r})")
