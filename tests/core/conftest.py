"""A live portal for tests that speak HTTP to it as clients would: uvicorn serving the ASGI app
on the test database, with no worker (requests that queue work leave it queued)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

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


@pytest.fixture
def live_env() -> dict[str, str]:
    """Extra settings for the live portal's process (a test module may override this fixture)."""
    return {}


@pytest.fixture
def live_portal(transactional_db, tmp_path, live_env):
    port = free_port()
    env = {
        **env_on_test_database(),
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
