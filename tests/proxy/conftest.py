"""A live web process (uvicorn: portal and notebook proxy) in front of stand-ins for a
workspace's app that this test process serves on loopback: an HTTP echo and a WebSocket
echo. A workspace row points at them, so the proxy is tested whole, without containers."""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.sync.server import serve

from portal.quotas.models import ResourceProfile
from tests.factories import PASSWORD
from tests.processes import env_on_test_database, free_port, running, uvicorn_args, wait_for
from tests.workspaces.conftest import Portal


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with the request it received as JSON; /set-cookies answers with Set-Cookie
    headers named in the query (`?c=<header>&c=<header>`)."""

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = f"{self._drain_chunks()} bytes, chunked"

        data = json.dumps({"path": self.path, "headers": dict(self.headers.items()), "body": body}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        if self.path.startswith("/set-cookies"):
            from urllib.parse import parse_qs

            for value in parse_qs(urlsplit(self.path).query).get("c", []):
                self.send_header("set-cookie", value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain_chunks(self) -> int:
        """Reads a chunked body as a real app does (counting it, not keeping it)."""
        total = 0
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            remaining = size
            while remaining:
                remaining -= len(self.rfile.read(min(remaining, 1 << 16)))
            self.rfile.readline()
            total += size
        self.rfile.readline()
        return total

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


def _ws_echo(connection):
    """Echoes each message; `big:<n>` answers with n bytes in one message."""
    for message in connection:
        if isinstance(message, str) and message.startswith("big:"):
            connection.send(b"x" * int(message[4:]))
        else:
            connection.send(message)


@dataclass
class Upstream:
    http: str
    ws: str


@pytest.fixture
def upstream():
    """The app's stand-ins, on loopback ports of this process, stopped afterwards."""
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    ws_server = serve(_ws_echo, "127.0.0.1", 0, max_size=None, compression=None)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (http_server, ws_server)]
    for thread in threads:
        thread.start()
    try:
        yield Upstream(
            http=f"127.0.0.1:{http_server.server_address[1]}", ws=f"127.0.0.1:{ws_server.socket.getsockname()[1]}"
        )
    finally:
        http_server.shutdown()
        http_server.server_close()
        ws_server.shutdown()
        for thread in threads:
            thread.join(timeout=10)


@pytest.fixture
def live_env() -> dict[str, str]:
    """Extra settings for the web process (a test module may override this fixture)."""
    return {}


@pytest.fixture
def live(transactional_db, tmp_path, settings, live_env):
    """uvicorn serving the ASGI app (portal + proxy) on the test database; `.process` is it."""
    port = free_port()
    env = {
        **env_on_test_database(),
        "DOCKYARD_NOTEBOOK_PORT": str(port),
        "DOCKYARD_PORTAL_URL": f"http://127.0.0.1:{port}",
        **live_env,
    }
    settings.DOCKYARD_NOTEBOOK_PORT = str(port)
    settings.DOCKYARD_PORTAL_URL = f"http://127.0.0.1:{port}"
    with running(uvicorn_args(port), env=env, log=tmp_path / "web.log") as process:
        portal = Portal(port=port)
        wait_for(lambda: portal.client().get("/healthz").status_code == 200, timeout=30, what="the portal")
        portal.process = process
        yield portal


@pytest.fixture
def make_workspace(make_image, demo_team):
    """A running workspace row whose app is the given loopback endpoint."""
    from portal.catalog.models import Image, ImageRevision, ImageStatus
    from workspaces.models import Workspace, WorkspaceState

    image = make_image("proxy-stand-in")
    revision = image.revisions.get()
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest="sha256:" + "d" * 64)
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    profile = ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=1)

    def make(*, owner, endpoint: str, name: str = "lab") -> Workspace:
        return Workspace.objects.create(
            owner=owner, team=demo_team, name=name, image=image, image_revision=revision,
            image_digest="sha256:" + "d" * 64, profile=profile, cpus=1, memory_gib=1,
            state=WorkspaceState.RUNNING, endpoint=endpoint, jupyter_token=secrets.token_hex(24),
        )  # fmt: skip

    return make


@dataclass
class Browser:
    """One person's browser: a portal session, and the cookies each notebook host set."""

    portal: Portal
    username: str
    jars: dict[str, dict[str, str]] = field(default_factory=dict)

    def __post_init__(self):
        self.client = self.portal.client()
        page = self.client.get("/accounts/login/")
        form = {"username": self.username, "password": PASSWORD, "csrfmiddlewaretoken": page.cookies["csrftoken"]}
        assert self.client.post("/accounts/login/", data=form).status_code == 302

    def notebook(self, workspace_id, path: str, **headers) -> httpx.Response:
        jar = self.jars.setdefault(str(workspace_id), {})
        cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
        with self.portal.notebook(workspace_id, cookie=cookie, **headers) as client:
            response = client.get(path)
        for header in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(header).items():
                if morsel["max-age"] == "0":
                    jar.pop(name, None)
                else:
                    jar[name] = morsel.value
        return response

    def to_ticket(self, workspace_id, next_path: str = "/lab") -> str:
        """Follows Open up to the ticket: portal → notebook host (state) → portal → ticket URL."""
        to_host = self.client.get(f"/workspaces/{workspace_id}/open/", params={"next": next_path})
        assert to_host.status_code == 302, to_host.text
        back = self.notebook(workspace_id, _path(to_host.headers["location"]))
        assert back.status_code == 302 and back.headers["location"].startswith(self.portal.url)
        to_ticket = self.client.get(_path(back.headers["location"]))
        assert to_ticket.status_code == 302, to_ticket.text
        return _path(to_ticket.headers["location"])

    def open(self, workspace_id, next_path: str = "/lab") -> httpx.Response:
        return self.notebook(workspace_id, self.to_ticket(workspace_id, next_path))

    def sign_out(self) -> None:
        csrf = self.client.cookies["csrftoken"]
        response = self.client.post("/accounts/logout/", headers={"x-csrftoken": csrf, "referer": self.portal.url})
        assert response.status_code == 302, response.text


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
