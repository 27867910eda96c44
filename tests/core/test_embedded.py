"""The embedded default: no DATABASE_URL or REDIS_URL, so SQLite and the filesystem broker."""

from __future__ import annotations

import json
import os
import sys
import urllib.request

from tests.processes import REPO, celery_worker_args, free_port, manage, running, wait_for


def test_embedded_default_migrates_seeds_and_serves_with_a_real_worker(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    env["DOCKYARD_VAR_DIR"] = str(tmp_path / "var")

    for command in (["migrate", "--noinput"], ["seed_demo", "--no-builds"]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "dockyard.sqlite3").exists()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    web = [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    with (
        running(web, env=env, log=tmp_path / "web.log"),
        running(celery_worker_args("embedded", queues="default"), env=env, log=tmp_path / "worker.log"),
    ):
        login = wait_for(lambda: _get(f"{base}/accounts/login/"), timeout=60, what="the login page")
        assert login[0] == 200 and "Sign in" in login[1]

        ready = wait_for(
            lambda: (r := _get(f"{base}/readyz"))[0] == 200 and r, timeout=60, what="/readyz with a worker"
        )
        assert json.loads(ready[1]) == {"database": "ok", "broker": "ok", "worker": "ok", "runtime": "ok"}
    assert (REPO / "manage.py").exists()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  (a loopback URL we built)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
