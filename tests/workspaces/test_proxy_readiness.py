"""Readiness and activity reads of a workspace's app never follow redirects and read a
bounded body: a container cannot send the worker elsewhere or fill its memory."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from portal.runtime.base import Endpoint
from workspaces.jupyter import jupyter_activity, jupyter_status

MiB = 1024 * 1024


class Workspace(BaseHTTPRequestHandler):
    """A hostile app: /redirect points at the elsewhere server, /huge streams without end."""

    elsewhere = ""
    hits: list[str] = []

    def do_GET(self):
        Workspace.hits.append(self.path)
        if self.path.startswith("/api/status") and self.server.mode == "redirect":
            self.send_response(302)
            self.send_header("location", f"http://{Workspace.elsewhere}/api/status")
            self.end_headers()
        elif self.server.mode == "huge":
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            try:
                self.wfile.write(b'{"a": "')
                for _ in range(256):  # 256 MiB if nobody stops reading
                    self.wfile.write(b"x" * MiB)
            except OSError:
                pass  # the reader hung up: what a bounded reader does
        else:
            body = b'{"started": "now"}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(mode: str) -> Endpoint:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Workspace)
        server.mode = mode
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return Endpoint(host="127.0.0.1", port=server.server_address[1])

    Workspace.hits = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _rss() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def test_readiness_does_not_follow_a_redirect(serve):
    elsewhere = serve("ok")
    Workspace.elsewhere = f"{elsewhere.host}:{elsewhere.port}"
    assert jupyter_status(endpoint=elsewhere, token="t") is True
    Workspace.hits.clear()

    assert jupyter_status(endpoint=serve("redirect"), token="t") is False
    assert Workspace.hits == ["/api/status"]  # the redirect's target was never asked


def test_an_endless_answer_is_read_only_up_to_the_bound(serve):
    endpoint = serve("huge")
    before = _rss()

    assert jupyter_status(endpoint=endpoint, token="t") is False
    assert jupyter_activity(endpoint=endpoint, token="t") is None

    assert _rss() - before < 32 * MiB
