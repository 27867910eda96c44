"""Sharing a workspace with teammates: who may be added, what they may do, and revoking."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from portal.audit.models import AuditEvent
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.processes import run_async, wait_for
from tests.workspaces.conftest import wait_state
from tests.workspaces.test_jupyter import execute

pytestmark = [pytest.mark.docker]


@pytest.fixture
def lab(portal, people, small, jupyter_image):
    token = people["tokens"]["alice"]
    body = {"name": "shared-lab", "image": jupyter_image.slug, "profile": "small", "team": "demo"}
    created = portal.client(authorization=f"Bearer {token}").post("/api/v1/workspaces/", json=body)
    assert created.status_code == 201, created.text
    return wait_state(portal, token, created.json()["id"], "running", timeout=180)


def test_a_teammate_opens_a_shared_workspace_until_access_is_revoked(portal, people, lab):
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    bob_token = people["tokens"]["bob"]
    bob_notebook = portal.notebook(lab["id"], authorization=f"Bearer {bob_token}")
    assert bob_notebook.get("/api/status").status_code == 403

    assert alice.post(f"/api/v1/workspaces/{lab['id']}/shares/", json={"user": "bob"}).status_code == 201
    bob = portal.client(authorization=f"Bearer {bob_token}")
    assert [w["id"] for w in bob.get("/api/v1/workspaces/?shared=1").json()] == [lab["id"]]
    wait_for(lambda: bob_notebook.get("/api/status").status_code == 200, timeout=10, what="bob let in")
    assert run_async(execute, portal, lab["id"], bob_token, "6*7") == "42"

    # Bob cannot stop, delete or re-share what is not his.
    assert bob.post(f"/api/v1/workspaces/{lab['id']}/stop/").status_code == 403
    assert bob.delete(f"/api/v1/workspaces/{lab['id']}/").status_code == 403
    assert bob.post(f"/api/v1/workspaces/{lab['id']}/shares/", json={"user": "alice"}).status_code == 403

    closed = run_async(_revoke_while_connected, portal, lab["id"], bob_token, alice)
    assert closed < 7, f"bob's WebSocket stayed open {closed:.1f} s after revoking"
    wait_for(lambda: bob_notebook.get("/api/status").status_code == 403, timeout=6, what="bob refused")
    actions = list(AuditEvent.objects.filter(action__startswith="workspace.").values_list("action", flat=True))
    assert "workspace.share" in actions and "workspace.unshare" in actions


async def _revoke_while_connected(portal, workspace_id, token, alice) -> float:
    """Opens a kernel WebSocket as bob, revokes his access, returns seconds until it closes."""
    import asyncio
    import time

    from websockets.asyncio.client import connect

    host = portal.notebook_host(workspace_id)
    headers = {"Authorization": f"Bearer {token}", "Origin": f"http://{host}"}
    kernel = portal.notebook(workspace_id, **headers).post("/api/kernels", json={"name": "python3"}).json()
    url = f"ws://{host}/api/kernels/{kernel['id']}/channels"
    async with connect(url, sock=portal.ws_socket(), additional_headers=headers) as channel:
        await asyncio.to_thread(alice.delete, f"/api/v1/workspaces/{workspace_id}/shares/bob/")
        revoked = time.monotonic()
        try:
            while True:
                await asyncio.wait_for(channel.recv(), timeout=15)
        except ConnectionClosed:
            return time.monotonic() - revoked


@pytest.mark.django_db
def test_only_members_of_the_team_can_be_added(api, alice, bob, django_capture_on_commit_callbacks):
    research = TeamFactory(slug="research")
    carol = UserFactory(username="carol")
    MembershipFactory(user=carol, team=research)
    workspace = _workspace_for(alice)

    response = api(alice).post(f"/api/v1/workspaces/{workspace.pk}/shares/", {"user": "carol"}, format="json")

    assert response.status_code == 400
    assert "not a member of demo" in response.json()["detail"]


def _workspace_for(owner):
    from decimal import Decimal

    from portal.catalog.models import Image, ImageRevision
    from portal.quotas.models import ResourceProfile
    from workspaces.models import Workspace

    image = Image.objects.create(slug="img", name="img", default_command=["jupyter-lab"])
    revision = ImageRevision.objects.create(image=image, number=1, source_type="build", digest="sha256:x")
    profile = ResourceProfile.objects.create(slug="s", name="S", cpus=1, memory_gib=1)
    team = owner.memberships.get().team
    return Workspace.objects.create(
        owner=owner, team=team, name="w", image=image, image_revision=revision, image_digest="sha256:x",
        profile=profile, cpus=Decimal(1), memory_gib=Decimal(1), state="stopped", jupyter_token="t",
    )  # fmt: skip


@pytest.mark.django_db
def test_sharing_is_for_the_owner_only_and_refusals_are_audited(api, alice, bob):
    workspace = _workspace_for(alice)

    response = api(bob).post(f"/api/v1/workspaces/{workspace.pk}/shares/", {"user": "bob"}, format="json")

    assert response.status_code == 404  # bob cannot even see it
    api(alice).post(f"/api/v1/workspaces/{workspace.pk}/shares/", {"user": "bob"}, format="json")
    assert (
        api(bob).post(f"/api/v1/workspaces/{workspace.pk}/shares/", {"user": "bob"}, format="json").status_code == 403
    )
    assert AuditEvent.objects.filter(action="workspace.share", outcome="denied", actor_name="bob").count() == 1
