"""Work that can never fit: a workspace asked to wait with such a size is refused at once,
naming the limit, as jobs are; and the queue's starvation guard holds nothing for such work."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from portal.audit.services import Actor
from portal.quotas.models import QueuedRequest, ResourceProfile, WorkloadKind
from portal.quotas.services import admission_pass, admit
from tests.quotas.conftest import SYSTEM, ask, inventory, team_limits, user_limits
from tests.quotas.test_queue import admitted, enqueue
from workspaces import services as workspace_services
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(ready_image):
    return ready_image("lab")


def profile(slug: str, *, cpus: int = 1, gpus: int = 0) -> ResourceProfile:
    return ResourceProfile.objects.create(slug=slug, name=slug, cpus=Decimal(cpus), memory_gib=Decimal(1), gpus=gpus)


def wait_for_capacity(alice, demo_team, lab, size: ResourceProfile, name: str = "lab") -> Workspace:
    return workspace_services.workspace_create(
        owner=alice, team=demo_team, name=name, profile=size, image=lab, wait=True, actor=Actor.for_user(alice)
    )


def test_a_workspace_bigger_than_the_team_limit_is_refused_at_once_even_when_asked_to_wait(alice, demo_team, lab):
    team_limits(demo_team, cpus=4)

    with pytest.raises(ValidationError) as refused:
        wait_for_capacity(alice, demo_team, lab, profile("huge", cpus=8))

    assert "huge can never run here" in str(refused.value) and "CPU" in str(refused.value).upper()
    assert not Workspace.objects.exists() and not QueuedRequest.objects.exists()


def test_a_workspace_wanting_more_gpus_than_any_node_has_is_refused_at_once(alice, demo_team, lab):
    inventory({"node-a": 2, "node-b": 2})

    with pytest.raises(ValidationError, match="quad can never run here"):
        wait_for_capacity(alice, demo_team, lab, profile("quad", gpus=4))

    assert not Workspace.objects.exists()


def test_a_workspace_that_fits_once_others_finish_still_waits(alice, demo_team, lab):
    team_limits(demo_team, max_workspaces=1)
    admit(request=ask(demo_team, alice, kind=WorkloadKind.WORKSPACE), actor=SYSTEM)

    workspace = wait_for_capacity(alice, demo_team, lab, profile("small"))

    assert workspace.state == "queued" and QueuedRequest.objects.count() == 1


def test_the_starvation_guard_holds_nothing_for_work_over_a_limit(demo_team, alice, settings):
    settings.DOCKYARD_QUEUE_STARVATION_S = 600
    inventory({"node-a": 2})
    user_limits(demo_team, alice, gpus=1)  # lowered after the big request queued
    never = enqueue(demo_team, alice, gpus=2, age_s=3600)
    small = enqueue(demo_team, alice, gpus=1)

    result = admission_pass()

    assert admitted(never, small) == [False, True]
    assert result.held_gpus == 0


def test_the_starvation_guard_holds_nothing_for_more_gpus_than_any_node_has(demo_team, alice, settings):
    settings.DOCKYARD_QUEUE_STARVATION_S = 600
    inventory({"node-a": 2})
    never = enqueue(demo_team, alice, gpus=4, age_s=3600)  # the node it waited for was retired
    small = enqueue(demo_team, alice, gpus=1)

    result = admission_pass()

    assert admitted(never, small) == [False, True]
    assert result.held_gpus == 0
