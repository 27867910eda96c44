"""Real processes that tests kill, restart and cut off: web, worker, beat, Redis, the engine."""

from __future__ import annotations

import subprocess
import sys
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portal.workloads.reconcile import reconcile_pass
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import (
    REPO,
    celery_worker_args,
    env_on_test_database,
    free_port,
    running,
    stop,
    uvicorn_args,
    wait_for,
)
from tests.workspaces.conftest import ECHO_SERVER, Portal, built_image, people, small  # noqa: F401  (fixtures)

# The echo server, after a pause: a workspace that takes a few seconds from container to ready.
SLOW_ECHO = "import time\ntime.sleep(4)\n" + ECHO_SERVER


@dataclass
class Processes:
    """A portal whose processes a test may kill and start again."""

    env: dict[str, str]
    logs: Path
    portal: Portal
    stack: ExitStack
    workers: list[subprocess.Popen] = field(default_factory=list)

    def start_worker(self) -> subprocess.Popen:
        name = f"chaos-{uuid.uuid4().hex[:6]}"
        args = celery_worker_args(name, queues="default,runtime")
        worker = self.stack.enter_context(running(args, env=self.env, log=self.logs / f"{name}.log"))
        self.workers.append(worker)
        return worker

    def start_web(self) -> tuple[subprocess.Popen, Portal]:
        """Another web process, on its own port, beside the fixture's."""
        port = free_port()
        web = self.stack.enter_context(running(uvicorn_args(port), env=self.env, log=self.logs / f"web-{port}.log"))
        portal = Portal(port=port)
        wait_for(lambda: portal.client().get("/healthz").status_code == 200, timeout=30, what="the second web process")
        return web, portal

    def start_beat(self) -> subprocess.Popen:
        args = [str(Path(sys.executable).parent / "celery"), "-A", "portal", "beat", "--loglevel", "INFO",
                "--schedule", str(self.logs / "beat-schedule")]  # fmt: skip
        return self.stack.enter_context(running(args, env=self.env, log=self.logs / "beat.log"))


@pytest.fixture
def chaos_env() -> dict[str, str]:
    return {}


@pytest.fixture
def processes(transactional_db, tmp_path, settings, engine, chaos_env):
    port = free_port()
    env = {
        **env_on_test_database(),
        "DOCKYARD_NOTEBOOK_PORT": str(port),
        "DOCKYARD_PORTAL_URL": f"http://127.0.0.1:{port}",
        "DOCKYARD_WORKSPACE_READY_POLL_S": "0.2",
        "DOCKYARD_WORKLOAD_LABELS": f"{RUN_LABEL}={TEST_RUN}",
        "DOCKYARD_MEDIA_ROOT": str(tmp_path / "media"),
        "DOCKYARD_JOB_WATCH_S": "0.2",
        "DOCKYARD_JOB_RETRY_BACKOFF_S": "0.5",
        "DOCKYARD_RECONCILE_GRACE_S": "1",
        **chaos_env,
    }
    # Containers earlier tests of this run left behind belong to rows that are gone: a pass
    # here would count them as orphans.
    for container in engine.containers.list(all=True, filters={"label": f"{RUN_LABEL}={TEST_RUN}"}):
        container.remove(force=True)
    settings.DOCKYARD_NOTEBOOK_PORT = str(port)
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.DOCKYARD_RECONCILE_GRACE_S = 0
    settings.DOCKYARD_RECONCILE_REDRIVE_S = 1
    web = uvicorn_args(port)
    with ExitStack() as stack:
        stack.enter_context(running(web, env=env, log=tmp_path / "web.log"))
        procs = Processes(env=env, logs=tmp_path, portal=Portal(port=port), stack=stack)
        wait_for(lambda: procs.portal.client().get("/healthz").status_code == 200, timeout=30, what="the portal")
        yield procs


def reconcile():
    """One pass, as beat would run it; fails the test if another pass held the lock."""
    corrections = reconcile_pass()
    assert corrections is not None, "another reconcile pass held the lock"
    return corrections


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the process and its children (a Celery worker's pool)."""
    import os
    import signal

    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


__all__ = ["REPO", "SLOW_ECHO", "built_image", "kill", "reconcile", "stop"]
