"""Waiting for capacity: a workspace that does not fit is queued and starts by itself."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.quotas.models import TeamQuota
from portal.quotas.services import admit
from portal.quotas.values import AdmissionRequest, Resources, WorkloadRef
from tests.workspaces.conftest import wait_state
from workspaces.models import Workspace

pytestmark = [pytest.mark.docker]


def test_a_waiting_workspace_starts_by_itself_when_the_first_one_stops(portal, people, small, echo_image, demo_team):
    TeamQuota.objects.create(team=demo_team, max_workspaces=1)
    api = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    body = {"image": echo_image.slug, "profile": "small", "team": "demo"}
    first = api.post("/api/v1/workspaces/", json={**body, "name": "first"}).json()
    wait_state(portal, people["tokens"]["alice"], first["id"], "running")

    refused = api.post("/api/v1/workspaces/", json={**body, "name": "second"})
    assert refused.status_code == 403
    waiting = api.post("/api/v1/workspaces/", json={**body, "name": "second", "wait": True})

    assert waiting.status_code == 201, waiting.text
    second = waiting.json()
    assert (second["state"], second["queue_position"]) == ("queued", 1)
    assert AuditEvent.objects.filter(action="quota.enqueue").count() == 1
    assert second["estimated_start"] is None  # nothing to go by yet

    Workspace.objects.filter(pk=first["id"]).update(cull_at=timezone.now() + timedelta(minutes=42))
    estimate = api.get(f"/api/v1/workspaces/{second['id']}/").json()["estimated_start"]
    assert estimate == Workspace.objects.get(pk=first["id"]).cull_at.isoformat()

    assert api.post(f"/api/v1/workspaces/{first['id']}/stop/").status_code == 200
    started = wait_state(portal, people["tokens"]["alice"], second["id"], "running", timeout=120)
    assert started["queue_position"] is None
    assert any(e["step"] == "queued" for e in started["events"])


def test_waiting_can_be_cancelled(portal, people, small, echo_image, demo_team):
    TeamQuota.objects.create(team=demo_team, max_workspaces=1)
    running = AdmissionRequest(WorkloadRef("workspace", uuid.uuid4()), demo_team, people["alice"], Resources(1, 1))
    admit(request=running, actor=Actor.system())  # the team's one workspace is in use
    api = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    body = {"name": "never", "image": echo_image.slug, "profile": "small", "team": "demo", "wait": True}
    queued = api.post("/api/v1/workspaces/", json=body).json()
    assert queued["state"] == "queued"

    assert api.post(f"/api/v1/workspaces/{queued['id']}/stop/").status_code == 200

    assert api.get(f"/api/v1/workspaces/{queued['id']}/").json()["state"] == "stopped"
    assert AuditEvent.objects.filter(action="quota.dequeue").count() == 1
