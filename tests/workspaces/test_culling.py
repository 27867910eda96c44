"""Explainable culling: the decision itself (pure), then against a real JupyterLab."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from websockets.asyncio.client import connect

from portal.audit.models import AuditEvent
from tests.processes import run_async, wait_for
from tests.workspaces.conftest import wait_state
from workspaces.culling import Activity, Policy, cull_decide
from workspaces.models import Workspace, WorkspacePolicy
from workspaces.services import workspace_cull_check

T0 = datetime(2026, 5, 1, 14, 2, tzinfo=UTC)
POLICY = Policy(idle_timeout_s=3600, gpu_idle_timeout_s=1800, max_lifetime_s=None)


def decide(now, activity, policy=POLICY, gpu=None, gpu_idle_since=None):
    return cull_decide(
        now=now, started_at=T0 - timedelta(hours=1), activity=activity, gpu_utilisation=gpu,
        gpu_idle_since=gpu_idle_since, policy=policy,
    )  # fmt: skip


def test_an_idle_workspace_stops_an_idle_timeout_after_its_last_activity():
    waiting = decide(T0 + timedelta(minutes=10), Activity(busy=False, connections=0, last_activity=T0))
    assert (waiting.cull_now, waiting.cull_at) == (False, T0 + timedelta(hours=1))
    assert waiting.explanation == "will stop at 15:02: idle since 14:02"

    due = decide(T0 + timedelta(hours=1, seconds=1), Activity(busy=False, connections=0, last_activity=T0))
    assert due.cull_now and due.reason == "stopped: idle for 60 min"


def test_a_busy_kernel_is_never_stopped_for_idleness():
    decision = decide(T0 + timedelta(hours=5), Activity(busy=True, connections=0, last_activity=T0), gpu={"g": 0})
    assert (decision.cull_now, decision.explanation) == (False, "kept: kernel busy")


def test_an_open_tab_keeps_a_cpu_workspace():
    decision = decide(T0 + timedelta(hours=5), Activity(busy=False, connections=1, last_activity=T0))
    assert (decision.cull_now, decision.explanation) == (False, "kept: open in a browser")


def test_idle_gpus_stop_it_even_with_a_tab_open():
    open_tab = Activity(busy=False, connections=2, last_activity=T0)
    first = decide(T0, open_tab, gpu={"GPU-1": 0})
    assert first.gpu_idle_since == T0 and first.explanation == "will stop at 14:32: GPUs idle since 14:02"

    later = decide(T0 + timedelta(minutes=45), open_tab, gpu={"GPU-1": 0}, gpu_idle_since=first.gpu_idle_since)
    assert later.cull_now and later.reason == "stopped: GPUs idle for 45 min"

    working = decide(T0 + timedelta(minutes=45), open_tab, gpu={"GPU-1": 87}, gpu_idle_since=T0)
    assert working.gpu_idle_since is None and not working.cull_now


def test_the_maximum_lifetime_stops_even_a_busy_workspace():
    policy = Policy(idle_timeout_s=3600, gpu_idle_timeout_s=1800, max_lifetime_s=2 * 3600)
    decision = decide(T0 + timedelta(hours=1, seconds=1), Activity(True, 1, T0), policy=policy)
    assert decision.cull_now and decision.reason == "stopped: reached its maximum lifetime of 120 min"


# --- Against a real JupyterLab -------------------------------------------------------------------


@pytest.fixture
def lab(portal, people, small, jupyter_image, demo_team):
    token = people["tokens"]["alice"]
    body = {"name": "cull-me", "image": jupyter_image.slug, "profile": "small", "team": "demo"}
    created = portal.client(authorization=f"Bearer {token}").post("/api/v1/workspaces/", json=body)
    assert created.status_code == 201, created.text
    return wait_state(portal, token, created.json()["id"], "running", timeout=180)


async def start_sleeping_cell(portal, workspace_id, token, seconds: int) -> None:
    host = portal.notebook_host(workspace_id)
    headers = {"Authorization": f"Bearer {token}", "Origin": f"http://{host}"}
    kernel = portal.notebook(workspace_id, **headers).post("/api/kernels", json={"name": "python3"}).json()
    url = f"ws://{host}/api/kernels/{kernel['id']}/channels"
    async with connect(url, sock=portal.ws_socket(), additional_headers=headers) as channel:
        header = {
            "msg_id": uuid.uuid4().hex,
            "username": "",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
        }
        request = {"header": {**header, "version": "5.3"}, "parent_header": {}, "metadata": {}, "channel": "shell"}
        code = f"import time; time.sleep({seconds})"
        await channel.send(json.dumps({**request, "content": {"code": code, "silent": False}}))
        while True:  # until the kernel says it is busy with our cell
            reply = json.loads(await channel.recv())
            if reply["msg_type"] == "status" and reply["content"]["execution_state"] == "busy":
                return


@pytest.mark.docker
def test_idle_workspace_is_stopped_with_its_reason_but_a_busy_one_is_spared(portal, people, lab, demo_team, client):
    WorkspacePolicy.objects.create(team=demo_team, idle_timeout_s=1, gpu_idle_timeout_s=1)
    run_async(start_sleeping_cell, portal, lab["id"], people["tokens"]["alice"], 60)

    busy = workspace_cull_check(workspace_id=lab["id"])
    assert (busy.cull_now, busy.explanation) == (False, "kept: kernel busy")

    # The same workspace with the kernel gone idle: interrupt by restarting the kernel list.
    notebook = portal.notebook(lab["id"], authorization=f"Bearer {people['tokens']['alice']}")
    for kernel in notebook.get("/api/kernels").json():
        notebook.delete(f"/api/kernels/{kernel['id']}")
    seen = []

    def culled():
        seen.append(workspace_cull_check(workspace_id=lab["id"]))
        return seen[-1] and seen[-1].cull_now and seen[-1]

    decision = wait_for(culled, timeout=30, what=f"the idle workspace to be culled ({seen[-1:]})")
    assert decision.reason.startswith("stopped: idle for")
    wait_state(portal, people["tokens"]["alice"], lab["id"], "stopped")
    event = AuditEvent.objects.get(action="workspace.cull")
    assert event.details["reason"] == decision.reason


@pytest.mark.docker
def test_the_owner_is_warned_before_and_idle_gpus_are_culled_with_a_fake_reader(portal, people, lab, demo_team, client):
    WorkspacePolicy.objects.create(team=demo_team, idle_timeout_s=300, gpu_idle_timeout_s=120)
    Workspace.objects.filter(pk=lab["id"]).update(gpu_device_ids=["GPU-fake-0"])

    warned = workspace_cull_check(workspace_id=lab["id"], gpu_reader=lambda ids: dict.fromkeys(ids, 0))

    assert not warned.cull_now and "GPUs idle since" in warned.explanation
    api = portal.client(authorization=f"Bearer {people['tokens']['alice']}").get(f"/api/v1/workspaces/{lab['id']}/")
    assert api.json()["cull_at"] is not None
    client.force_login(people["alice"])
    page = client.get(reverse("workspace-detail", args=[lab["id"]])).content.decode()
    assert "will stop at" in page and 'role="alert"' in page

    later = workspace_cull_check(
        workspace_id=lab["id"], now=warned.cull_at + timedelta(seconds=1), gpu_reader=lambda ids: dict.fromkeys(ids, 0)
    )
    assert later.cull_now and later.reason.startswith("stopped: GPUs idle for")
    wait_state(portal, people["tokens"]["alice"], lab["id"], "stopped")
