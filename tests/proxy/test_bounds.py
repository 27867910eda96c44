"""The proxy's bounds: request bodies and WebSocket messages have a maximum size, refused
with a clear answer, and the web process's memory stays bounded."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from portal.accounts.services import token_create
from portal.audit.services import Actor
from tests.proxy.conftest import rss_bytes

pytestmark = [pytest.mark.django_db(transaction=True)]
LIMIT = 1024 * 1024
MiB = 1024 * 1024


@pytest.fixture
def live_env():
    return {"DOCKYARD_PROXY_MAX_BODY_BYTES": str(LIMIT), "DOCKYARD_PROXY_WS_MAX_BYTES": str(LIMIT)}


@pytest.fixture
def alice_token(alice):
    return token_create(user=alice, name="laptop", expires_at=None, actor=Actor.system())[1]


def _chunks(total: int, size: int = 256 * 1024):
    for _ in range(total // size):
        yield b"x" * size


def test_a_body_over_the_limit_gets_413_and_memory_stays_bounded(live, upstream, make_workspace, alice, alice_token):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    notebook = live.notebook(workspace.pk, authorization=f"Bearer {alice_token}")
    assert notebook.put("/small", content=b"x" * (LIMIT // 2)).status_code == 200
    before = rss_bytes(live.process.pid)

    declared = notebook.put("/big", content=b"x" * (2 * LIMIT))  # with Content-Length
    streamed = notebook.put("/big", content=_chunks(64 * MiB))  # chunked, no length given

    for response in (declared, streamed):
        assert response.status_code == 413
        assert "larger than the notebook proxy accepts" in response.json()["detail"]
    assert rss_bytes(live.process.pid) - before < 16 * MiB


def _channel(live, workspace, token):
    host = live.notebook_host(workspace.pk)
    headers = {"Origin": f"http://{host}", "Authorization": f"Bearer {token}"}
    return connect(f"ws://{host}/ws", sock=live.ws_socket(), additional_headers=headers, max_size=None,
                   open_timeout=10, compression=None)  # fmt: skip


def test_a_websocket_message_over_the_limit_from_the_browser_closes_with_1009(
    live, upstream, make_workspace, alice, alice_token
):
    workspace = make_workspace(owner=alice, endpoint=upstream.ws)
    with _channel(live, workspace, alice_token) as channel:
        channel.send(b"y" * 1000)
        assert channel.recv(timeout=10) == b"y" * 1000
        channel.send(b"y" * (2 * LIMIT))
        with pytest.raises(ConnectionClosed) as closed:
            channel.recv(timeout=10)
    assert closed.value.rcvd.code == 1009 and "larger than the notebook proxy allows" in closed.value.rcvd.reason


def test_a_websocket_message_over_the_limit_from_the_app_closes_with_1009_unread(
    live, upstream, make_workspace, alice, alice_token
):
    workspace = make_workspace(owner=alice, endpoint=upstream.ws)
    with _channel(live, workspace, alice_token) as channel:
        channel.send("big:1000")
        assert len(channel.recv(timeout=10)) == 1000
        before = rss_bytes(live.process.pid)
        channel.send(f"big:{64 * MiB}")
        with pytest.raises(ConnectionClosed) as closed:
            channel.recv(timeout=30)
    assert closed.value.rcvd.code == 1009
    assert rss_bytes(live.process.pid) - before < 16 * MiB
