"""A live portal for tests that speak HTTP to it as clients would: uvicorn serving the ASGI app
on the test database, with no worker. Its broker and cache are a Redis database of its own,
emptied before and after, so work it queues (and nothing runs) never reaches a later test's
worker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from portal.accounts.services import token_create
from portal.audit.services import Actor
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import env_on_test_database, free_port, running, uvicorn_args, wait_for


@dataclass
class LivePortal:
    port: int
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, **headers) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, follow_redirects=False)


LIVE_REDIS_DB = 13


@pytest.fixture
def live_redis():
    """The live portal's own Redis database (REDIS_URL with another index), emptied around it."""
    base = os.environ.get("REDIS_URL", "")
    if not base:
        yield {}
        return
    url = urlunsplit(urlsplit(base)._replace(path=f"/{LIVE_REDIS_DB}"))
    server = redis.Redis.from_url(url)
    server.flushdb()
    yield {"REDIS_URL": url}
    server.flushdb()
    server.close()


@pytest.fixture
def live_env() -> dict[str, str]:
    """Extra settings for the live portal's process (a test module may override this fixture)."""
    return {}


@pytest.fixture
def live_portal(transactional_db, tmp_path, live_redis, live_env):
    port = free_port()
    env = {
        **env_on_test_database(),
        **live_redis,
        "DOCKYARD_PORTAL_URL": f"http://127.0.0.1:{port}",
        "DOCKYARD_NOTEBOOK_PORT": str(port),
        "DOCKYARD_WORKLOAD_LABELS": f"{RUN_LABEL}={TEST_RUN}",
        "DOCKYARD_MEDIA_ROOT": str(tmp_path / "media"),
        **live_env,
    }
    with running(uvicorn_args(port), env=env, log=tmp_path / "web.log"):
        portal = LivePortal(port=port, env=env)
        wait_for(lambda: portal.client().get("/healthz").status_code == 200, timeout=30, what="the portal")
        yield portal


@pytest.fixture
def bob_token(bob) -> str:
    """An API token of bob's, a member of `demo`."""
    return token_create(user=bob, name="live", expires_at=None, actor=Actor.system())[1]
