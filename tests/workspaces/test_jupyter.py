"""A real JupyterLab through the proxy: kernels over WebSockets, a home that persists."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from websockets.asyncio.client import connect

from tests.processes import run_async, wait_for
from tests.workspaces.conftest import wait_state

pytestmark = [pytest.mark.docker]


@pytest.fixture
def lab(portal, people, small, jupyter_image):
    token = people["tokens"]["alice"]
    body = {"name": "lab", "image": jupyter_image.slug, "profile": "small", "team": "demo"}
    created = portal.client(authorization=f"Bearer {token}").post("/api/v1/workspaces/", json=body)
    assert created.status_code == 201, created.text
    return wait_state(portal, token, created.json()["id"], "running", timeout=180)


async def execute(portal, workspace_id, token: str, code: str) -> str:
    host = portal.notebook_host(workspace_id)
    headers = {"Authorization": f"Bearer {token}", "Origin": f"http://{host}"}
    kernel = portal.notebook(workspace_id, **headers).post("/api/kernels", json={"name": "python3"})
    assert kernel.status_code == 201, kernel.text
    url = f"ws://{host}/api/kernels/{kernel.json()['id']}/channels"
    async with connect(url, sock=portal.ws_socket(), additional_headers=headers, open_timeout=30) as channel:
        msg_id = uuid.uuid4().hex
        header = {"msg_id": msg_id, "username": "", "session": uuid.uuid4().hex, "msg_type": "execute_request"}
        request = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell"}
        await channel.send(json.dumps({**request, "content": {"code": code, "silent": False}}))
        while True:
            reply = json.loads(await asyncio.wait_for(channel.recv(), timeout=60))
            if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["msg_type"] == "execute_result":
                return reply["content"]["data"]["text/plain"]


def test_owner_runs_code_in_a_kernel_through_the_proxy(portal, people, lab):
    notebook = portal.notebook(lab["id"], authorization=f"Bearer {people['tokens']['alice']}")
    assert notebook.get("/api/status").status_code == 200

    assert run_async(execute, portal, lab["id"], people["tokens"]["alice"], "6*7") == "42"


def test_home_survives_stop_and_start_and_goes_only_when_asked(portal, people, lab, engine):
    token = people["tokens"]["alice"]
    api = portal.client(authorization=f"Bearer {token}")
    notebook = portal.notebook(lab["id"], authorization=f"Bearer {token}")
    saved = notebook.put("/api/contents/kept.txt", json={"type": "file", "format": "text", "content": "still here"})
    assert saved.status_code in (200, 201), saved.text

    assert api.post(f"/api/v1/workspaces/{lab['id']}/stop/").status_code == 200
    wait_state(portal, token, lab["id"], "stopped")
    assert api.post(f"/api/v1/workspaces/{lab['id']}/start/").status_code == 200
    wait_state(portal, token, lab["id"], "running", timeout=180)
    assert notebook.get("/api/contents/kept.txt").json()["content"] == "still here"

    volume = f"dockyard-{lab['id']}-home"
    assert api.delete(f"/api/v1/workspaces/{lab['id']}/").status_code == 204
    wait_for(lambda: api.get(f"/api/v1/workspaces/{lab['id']}/").status_code == 404, timeout=60, what="deletion")
    assert engine.volumes.get(volume) is not None  # kept: not asked to delete data
