"""Access ends with membership: removing someone from a team, or deactivating their account,
takes their shares in it, stops their workspaces there (saying why, audited) and refuses them
every new start, open and reproduction. Services and API, no engine: stops are checked as
the state and the event the worker then acts on."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from jobs import services as job_services
from jobs.models import Job
from portal.accounts.models import Membership, Role
from portal.accounts.services import membership_remove, token_authenticate, token_create, user_deactivate
from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.quotas.models import ResourceProfile
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from workspaces import services as workspace_services
from workspaces.models import Workspace, WorkspaceShare
from workspaces.selectors import workspace_events, workspace_user_may_open

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()


@pytest.fixture
def lab(ready_image):
    return ready_image("lab")


@pytest.fixture
def small(db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=1)


def workspace_of(owner, team, lab, small, *, name: str, state: str) -> Workspace:
    return Workspace.objects.create(
        owner=owner, team=team, name=name, image=lab, image_revision=lab.current_revision,
        image_digest=lab.current_revision.digest, profile=small, cpus=Decimal(1), memory_gib=Decimal(1), state=state,
        jupyter_token="t", endpoint="127.0.0.1:1" if state == "running" else "",
    )  # fmt: skip


@pytest.fixture
def scene(alice, bob, demo_team, lab, small):
    """bob runs a workspace in demo and alice shares hers with him."""
    bobs = workspace_of(bob, demo_team, lab, small, name="bobs", state="running")
    alices = workspace_of(alice, demo_team, lab, small, name="alices", state="running")
    workspace_services.workspace_share(workspace=alices, user=bob, by=alice, actor=SYSTEM)
    return {"bobs": bobs, "alices": alices}


def test_removing_a_member_takes_their_shares_and_stops_their_workspaces_saying_why(alice, bob, demo_team, scene):
    assert workspace_user_may_open(user_id=bob.pk, workspace=scene["alices"])

    membership = Membership.objects.get(user=bob, team=demo_team)
    membership_remove(membership=membership, by=alice, actor=Actor.for_user(alice))

    assert not WorkspaceShare.objects.filter(user=bob).exists()
    assert not workspace_user_may_open(user_id=bob.pk, workspace=scene["alices"])
    assert not workspace_user_may_open(user_id=bob.pk, workspace=scene["bobs"])
    bobs = Workspace.objects.get(pk=scene["bobs"].pk)
    assert bobs.state == "stopping"
    reason = "stopped: bob is no longer a member of demo"
    assert list(workspace_events(workspace=bobs))[-1].message == reason
    stop = AuditEvent.objects.get(action="workspace.stop", target_id=str(bobs.pk))
    assert stop.details["reason"] == reason and stop.actor_name == "alice"
    unshare = AuditEvent.objects.get(action="workspace.unshare")
    assert unshare.details["user"] == "bob" and "no longer a member" in unshare.details["reason"]
    assert Workspace.objects.get(pk=scene["alices"].pk).state == "running"  # alice's own keeps running


def test_a_removed_member_cannot_start_their_old_workspace_on_the_teams_quota(api, alice, bob, demo_team, scene):
    Workspace.objects.filter(pk=scene["bobs"].pk).update(state="stopped")
    Membership.objects.filter(user=bob, team=demo_team).delete()  # as the admin site's delete does

    response = api(bob).post(f"/api/v1/workspaces/{scene['bobs'].pk}/start/")

    assert response.status_code == 403
    assert response.json()["detail"] == "bobs cannot start: bob is no longer a member of demo."
    assert Workspace.objects.get(pk=scene["bobs"].pk).state == "stopped"


def test_a_removed_member_cannot_rerun_or_reproduce_the_teams_jobs(api, alice, bob, demo_team, lab, small):
    job = job_services.job_submit(
        owner=alice, actor=SYSTEM,
        job_spec=job_services.JobSpec(name="train", team=demo_team, image=lab, profile=small, command=["true"]),
    )  # fmt: skip
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    Membership.objects.filter(user=bob, team=demo_team).delete()

    rerun = api(bob).post(f"/api/v1/jobs/{job.pk}/rerun/")
    reproduce = api(bob).post(f"/api/v1/jobs/{job.pk}/workspace/", {}, format="json")

    assert rerun.status_code in (403, 404) and reproduce.status_code in (403, 404)
    with pytest.raises(PermissionDenied):
        job_services.job_rerun(job=job, by=bob, actor=SYSTEM)
    with pytest.raises(PermissionDenied):
        workspace_services.workspace_reproduce(job=job, by=bob, actor=SYSTEM)


def test_deactivating_an_account_in_the_admin_form_ends_its_access_everywhere(alice, bob, demo_team, scene):
    research = TeamFactory(slug="research")
    MembershipFactory(user=bob, team=research, role=Role.MEMBER)
    _, raw = token_create(user=bob, name="script", expires_at=None, actor=SYSTEM)

    bob.is_active = False
    bob.save()  # what the admin site's change form does

    assert token_authenticate(raw=raw) is None
    assert not WorkspaceShare.objects.filter(user=bob).exists()
    assert not workspace_user_may_open(user_id=bob.pk, workspace=scene["alices"])
    bobs = Workspace.objects.get(pk=scene["bobs"].pk)
    assert bobs.state == "stopping"
    assert list(workspace_events(workspace=bobs))[-1].message == "stopped: the account of bob was deactivated"
    assert AuditEvent.objects.filter(action="user.deactivate", target_id=str(bob.pk)).count() == 1
    assert Membership.objects.filter(user=bob).count() == 2  # kept, for the record
    with pytest.raises(PermissionDenied):
        workspace_services.workspace_start(workspace=Workspace.objects.get(pk=bobs.pk), actor=SYSTEM)

    bob.save()  # saving an account that is already inactive does nothing more
    assert AuditEvent.objects.filter(action="user.deactivate").count() == 1


def test_the_deactivation_service_stops_queued_workspaces_too(alice, bob, demo_team, lab, small):
    queued = workspace_of(bob, demo_team, lab, small, name="waiting", state="queued")

    user_deactivate(user=bob, actor=Actor.for_user(alice))

    queued.refresh_from_db()
    assert queued.state == "stopped"
    assert list(workspace_events(workspace=queued))[-1].message == "stopped: the account of bob was deactivated"
    assert AuditEvent.objects.get(action="user.deactivate").actor_name == "alice"


def test_opening_needs_an_active_member_who_owns_it_or_has_a_share(alice, bob, demo_team, lab, small):
    workspace = workspace_of(alice, demo_team, lab, small, name="lab", state="running")
    outsider = UserFactory(username="eve")
    WorkspaceShare.objects.create(workspace=workspace, user=outsider)  # a share left from before

    assert workspace_user_may_open(user_id=alice.pk, workspace=workspace)
    assert not workspace_user_may_open(user_id=bob.pk, workspace=workspace)  # member, no share
    assert not workspace_user_may_open(user_id=outsider.pk, workspace=workspace)  # share, no membership
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)
    assert not workspace_user_may_open(user_id=alice.pk, workspace=workspace)
