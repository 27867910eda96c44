"""The workspace API's edges: bad input, quota refusals, conflicts (no containers needed)."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from portal.catalog.models import Image, ImageRevision, ImageStatus
from portal.quotas.models import ResourceProfile, TeamQuota
from workspaces.models import Workspace, WorkspaceState

pytestmark = pytest.mark.django_db


@pytest.fixture
def ready_image(make_image):
    image = make_image("lab-image", default_command=["jupyter-lab"])
    revision = image.revisions.get()
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest="sha256:" + "b" * 64)
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    return Image.objects.get(pk=image.pk)


@pytest.fixture
def small(db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=2)


def body(**overrides):
    return {"name": "lab", "image": "lab-image", "profile": "small", "team": "demo", **overrides}


def test_bad_input_names_the_field(api, alice, ready_image, small):
    response = api(alice).post("/api/v1/workspaces/", body(name="Not A Name!"), format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("name:")

    response = api(alice).post("/api/v1/workspaces/", body(profile="huge"), format="json")
    assert response.status_code == 400 and "profile" in response.json()["errors"]
    assert not Workspace.objects.exists()


def test_an_image_for_jobs_only_cannot_start_a_workspace(api, alice, ready_image, small):
    Image.objects.filter(pk=ready_image.pk).update(default_command=[])

    response = api(alice).post("/api/v1/workspaces/", body(), format="json")

    assert response.status_code == 400
    assert "for jobs only" in response.json()["errors"]["image"][0]


def test_over_quota_is_refused_with_the_reason_and_audited(
    api, alice, ready_image, small, demo_team, django_capture_on_commit_callbacks
):
    TeamQuota.objects.create(team=demo_team, max_workspaces=1)
    with django_capture_on_commit_callbacks(execute=False):
        assert api(alice).post("/api/v1/workspaces/", body(), format="json").status_code == 201

    refused = api(alice).post("/api/v1/workspaces/", body(name="second"), format="json")

    assert refused.status_code == 403
    assert "running workspaces 1 of 1" in refused.json()["detail"]
    assert Workspace.objects.count() == 1
    assert AuditEvent.objects.filter(outcome="denied", team_slug="demo").exists()


def test_the_form_disables_a_profile_that_cannot_fit(web, alice, ready_image, small, demo_team):
    ResourceProfile.objects.create(slug="big", name="Big", cpus=8, memory_gib=32)
    TeamQuota.objects.create(team=demo_team, cpus=4)

    page = web(alice).get("/workspaces/new/").content.decode()

    assert 'id="profile-big" value="big" disabled' in page
    assert "Does not fit now: team demo: CPUs" in page
    assert 'id="profile-small" value="small" disabled' not in page


def test_starting_a_running_workspace_is_a_conflict(api, alice, ready_image, small, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = api(alice).post("/api/v1/workspaces/", body(), format="json").json()
    Workspace.objects.filter(pk=created["id"]).update(state=WorkspaceState.RUNNING)

    response = api(alice).post(f"/api/v1/workspaces/{created['id']}/start/")

    assert response.status_code == 409
    assert "running" in response.json()["detail"]


def test_other_people_cannot_see_or_act_on_a_workspace(
    api, alice, bob, ready_image, small, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        created = api(alice).post("/api/v1/workspaces/", body(), format="json").json()

    assert api(bob).get(f"/api/v1/workspaces/{created['id']}/").status_code == 404
    assert api(bob).post(f"/api/v1/workspaces/{created['id']}/stop/").status_code == 404
    assert api(bob).get("/api/v1/workspaces/").json() == []


def test_workspace_list_costs_a_fixed_number_of_queries(
    api, alice, ready_image, small, django_assert_num_queries, django_capture_on_commit_callbacks
):
    client = api(alice)
    with django_capture_on_commit_callbacks(execute=False):
        for n in range(4):
            client.post("/api/v1/workspaces/", body(name=f"lab{n}"), format="json")
    with django_assert_num_queries(1):
        assert len(client.get("/api/v1/workspaces/").json()) == 4


def test_team_admins_set_their_teams_culling_policy_and_members_cannot(api, alice, bob):
    response = api(alice).put(
        "/api/v1/workspaces/policies/demo/", {"idle_timeout_minutes": 30, "max_lifetime_hours": 8}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {
        "team": "demo", "idle_timeout_minutes": 30, "gpu_idle_timeout_minutes": 30, "max_lifetime_hours": 8,
    }  # fmt: skip

    refused = api(bob).put("/api/v1/workspaces/policies/demo/", {"idle_timeout_minutes": 999}, format="json")
    assert refused.status_code == 403
    assert api(bob).get("/api/v1/workspaces/policies/demo/").json()["idle_timeout_minutes"] == 30
    assert AuditEvent.objects.filter(action="workspace.policy_update", outcome="denied", actor_name="bob").exists()
