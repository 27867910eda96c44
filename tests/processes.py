"""Starting real portal processes (uvicorn, Celery) from tests, and waiting on them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], object], *, timeout: float, what: str, interval: float = 0.2):
    """Polls `condition` until it returns something truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    result: object = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except Exception as error:  # noqa: BLE001  (a condition that cannot be evaluated yet is just "not yet")
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last result: {result!r}, last error: {last_error!r})"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(env: dict[str, str]) -> dict[str, str]:
    # The browser fixture lets the test process call the ORM beside Playwright's event loop;
    # the portal processes a test starts must run with Django's async safety intact.
    return {k: v for k, v in env.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}


@contextmanager
def running(args: list[str], *, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Runs a process for the duration of a `with` block, then stops it (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=child_env(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def uvicorn_args(port: int) -> list[str]:
    """The web process: uvicorn serving the ASGI app (portal and notebook proxy) on `port`."""
    return [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port), "--log-level", "warning"]


def celery_worker_args(name: str, queues: str = "default,runtime,builds") -> list[str]:
    return [
        str(VENV_BIN / "celery"), "-A", "portal", "worker", "--pool", "solo", "--loglevel", "INFO",
        "-Q", queues, "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def env_on_test_database() -> dict[str, str]:
    """The environment for a portal process that must see the test database (which only
    tests marked `transaction=True` commit to)."""
    from django.db import connection

    db = connection.settings_dict
    user = quote(db["USER"]) + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
    url = f"postgres://{user}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=child_env(env), capture_output=True, text=True, timeout=300
    )


def run_async(coroutine_function, *args):
    """Runs `coroutine_function(*args)` to completion in a thread of its own: the browser
    fixture keeps an event loop running in the test's thread, where asyncio.run cannot."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function(*args))).result(timeout=300)
