"""A running portal for workspace tests: uvicorn (web + proxy) and a Celery worker, both real,
on the test database, plus catalog images built from the local base (cached by the engine)."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass

import httpx
import pytest
from django.conf import settings

from portal.accounts.models import Role
from portal.accounts.services import token_create
from portal.audit.services import Actor
from portal.catalog import services as catalog_services
from portal.catalog.models import SourceType
from portal.catalog.services import SourceSpec
from portal.quotas.models import ResourceProfile
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.factories import MembershipFactory, UserFactory
from tests.processes import celery_worker_args, env_on_test_database, free_port, running, uvicorn_args, wait_for

# A stand-in for Jupyter that answers every path with the request it received, as JSON: it
# shows exactly what the proxy forwards. /api/status answers like Jupyter's does.
ECHO_SERVER = r"""
import json, http.server
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        data = json.dumps({"path": self.path, "method": self.command, "headers": dict(self.headers.items()),
                           "body": body}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data))); self.end_headers(); self.wfile.write(data)
    do_GET = do_POST = do_PUT = do_DELETE = _answer
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8888), H).serve_forever()
"""
JUPYTER = ["jupyter-lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.allow_remote_access=True"]


@dataclass
class Portal:
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_host(self, workspace_id) -> str:
        return f"{workspace_id}.{settings.DOCKYARD_NOTEBOOK_DOMAIN}:{self.port}"

    def client(self, **headers) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, follow_redirects=False)

    def notebook(self, workspace_id, **headers) -> httpx.Client:
        """A client for a notebook host (Python cannot resolve *.localhost: connect to
        127.0.0.1 and send the Host header)."""
        return self.client(host=self.notebook_host(workspace_id), **headers)

    def ws_socket(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port))


@pytest.fixture
def portal_env() -> dict[str, str]:
    """Extra settings for the portal's processes (a test module may override this fixture)."""
    return {}


@pytest.fixture
def portal(transactional_db, tmp_path, settings, engine, portal_env):
    """uvicorn serving the ASGI app (portal + proxy) and a worker on the runtime queues."""
    port = free_port()
    env = {
        **env_on_test_database(),
        "DOCKYARD_NOTEBOOK_PORT": str(port),
        "DOCKYARD_PORTAL_URL": f"http://127.0.0.1:{port}",
        "DOCKYARD_WORKSPACE_READY_POLL_S": "0.2",
        # Everything the worker makes carries this run's label: the `engine` fixture removes it.
        "DOCKYARD_WORKLOAD_LABELS": f"{RUN_LABEL}={TEST_RUN}",
        **portal_env,
    }
    settings.DOCKYARD_NOTEBOOK_PORT = str(port)
    settings.DOCKYARD_PORTAL_URL = f"http://127.0.0.1:{port}"
    web = uvicorn_args(port)
    worker = celery_worker_args(f"ws-{uuid.uuid4().hex[:6]}", queues="default,runtime")
    with running(web, env=env, log=tmp_path / "web.log"), running(worker, env=env, log=tmp_path / "worker.log"):
        portal = Portal(port=port)
        wait_for(lambda: portal.client().get("/healthz").status_code == 200, timeout=30, what="the portal")
        yield portal


@pytest.fixture
def people(transactional_db, demo_team):
    """alice and bob in `demo` (alice team admin), and an API token for each."""
    alice = UserFactory(username="alice")
    bob = UserFactory(username="bob")
    MembershipFactory(user=alice, team=demo_team, role=Role.TEAM_ADMIN)
    MembershipFactory(user=bob, team=demo_team, role=Role.MEMBER)
    tokens = {
        u.username: token_create(user=u, name="test", expires_at=None, actor=Actor.system())[1] for u in (alice, bob)
    }
    return {"alice": alice, "bob": bob, "tokens": tokens}


@pytest.fixture
def small(transactional_db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=1)


def built_image(slug: str, *, pip=(), command=()):
    source = SourceSpec(source_type=SourceType.BUILD, base_image=settings.DOCKYARD_BASE_IMAGE, pip_requirements=pip)
    image = catalog_services.image_create(
        slug=slug,
        source=source,
        details={"name": slug, "default_command": list(command)},
        by=None,
        actor=Actor.system(),
    )
    build = catalog_services.image_build(image=image, by=None, actor=Actor.system())
    catalog_services.build_run(build_id=build.pk)
    image.refresh_from_db()
    assert image.current_revision is not None, build.log
    return image


@pytest.fixture
def echo_image(transactional_db, image_slug):
    return built_image(image_slug, command=["python3", "-c", ECHO_SERVER])


@pytest.fixture
def jupyter_image(transactional_db, image_slug):
    pip = ("jupyterlab>=4", "numpy>=2", "pandas>=2", "matplotlib>=3.8")
    return built_image(image_slug, pip=pip, command=JUPYTER)


def wait_state(portal: Portal, token: str, workspace_id, state: str, timeout: float = 120) -> dict:
    client = portal.client(authorization=f"Bearer {token}")

    def check():
        data = client.get(f"/api/v1/workspaces/{workspace_id}/").json()
        if data["state"] == "failed" and state != "failed":
            raise AssertionError(f"workspace failed: {data['error_message']}\n{data['error_detail']}")
        return data if data["state"] == state else None

    return wait_for(check, timeout=timeout, what=f"the workspace to be {state}")
