"""admit and release, one request at a time: every limit, GPU placement, audit."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.quotas.models import Allocation, AllocationGpu, GpuHealth, WorkloadKind
from portal.quotas.placement import FreeGpu, gpu_pick
from portal.quotas.services import admit, gpu_device_drain, release
from portal.quotas.values import Refusal
from tests.quotas.conftest import SYSTEM, ask, inventory, team_limits, user_limits

pytestmark = pytest.mark.django_db


def node_of(allocation: Allocation) -> set[str]:
    return set(AllocationGpu.objects.filter(allocation=allocation).values_list("device__node__name", flat=True))


def test_admit_opens_an_allocation_and_audits_it(demo_team, alice, two_nodes):
    allocation = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)

    assert isinstance(allocation, Allocation) and allocation.is_open
    assert allocation.gpu_rows.count() == 1
    event = AuditEvent.objects.get(action="quota.admit")
    assert event.outcome == "ok" and event.team_slug == "demo" and len(event.details["gpus"]) == 1


def test_team_gpu_limit_refuses_with_the_limit_and_the_numbers(demo_team, alice, two_nodes):
    team_limits(demo_team, gpus=2)
    admit(request=ask(demo_team, alice, gpus=2), actor=SYSTEM)

    refusal = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)

    assert isinstance(refusal, Refusal)
    assert refusal.message == "team demo: GPUs 2 of 2 in use"
    denied = AuditEvent.objects.get(action="quota.admit", outcome="denied")
    assert denied.details["refused"] == refusal.message


@pytest.mark.parametrize(
    ("limits", "request_kwargs", "dimension"),
    [
        ({"max_workspaces": 1}, {"kind": WorkloadKind.WORKSPACE}, "max_workspaces"),
        ({"max_jobs": 1}, {"kind": WorkloadKind.JOB}, "max_jobs"),
        ({"cpus": Decimal("1.5")}, {"cpus": "1"}, "cpus"),
        ({"memory_gib": Decimal(3)}, {"memory": "2"}, "memory_gib"),
    ],
)
def test_every_dimension_is_limited(demo_team, alice, limits, request_kwargs, dimension):
    team_limits(demo_team, **limits)
    assert isinstance(admit(request=ask(demo_team, alice, **request_kwargs), actor=SYSTEM), Allocation)

    refusal = admit(request=ask(demo_team, alice, **request_kwargs), actor=SYSTEM)

    assert isinstance(refusal, Refusal) and refusal.dimension == dimension and refusal.scope == "team"


def test_workspaces_and_jobs_count_against_their_own_limits(demo_team, alice):
    team_limits(demo_team, max_workspaces=1, max_jobs=1)
    assert isinstance(admit(request=ask(demo_team, alice, kind=WorkloadKind.WORKSPACE), actor=SYSTEM), Allocation)
    assert isinstance(admit(request=ask(demo_team, alice, kind=WorkloadKind.JOB), actor=SYSTEM), Allocation)


def test_user_limit_applies_inside_a_looser_team_limit(demo_team, alice, bob, two_nodes):
    team_limits(demo_team, gpus=4)
    user_limits(demo_team, bob, gpus=1)
    assert isinstance(admit(request=ask(demo_team, bob, gpus=1), actor=SYSTEM), Allocation)

    refusal = admit(request=ask(demo_team, bob, gpus=1), actor=SYSTEM)

    assert refusal.message == "user bob in demo: GPUs 1 of 1 in use"
    # alice has no limit of her own: the team's 4 still apply to her.
    assert isinstance(admit(request=ask(demo_team, alice, gpus=3), actor=SYSTEM), Allocation)
    assert admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM).message == "team demo: GPUs 4 of 4 in use"


def test_team_limit_applies_when_the_user_limit_is_looser(demo_team, bob, two_nodes):
    team_limits(demo_team, gpus=1)
    user_limits(demo_team, bob, gpus=4)

    refusal = admit(request=ask(demo_team, bob, gpus=2), actor=SYSTEM)

    assert refusal.scope == "team" and refusal.limit == 1


def test_month_gpu_hours_budget_refuses_gpu_work_once_spent(demo_team, alice, two_nodes):
    team_limits(demo_team, gpu_hours_per_month=Decimal(10))
    start = timezone.now().replace(day=1, hour=1, minute=0, second=0, microsecond=0)
    with time_machine.travel(start, tick=False):
        first = admit(request=ask(demo_team, alice, gpus=2), actor=SYSTEM)
    with time_machine.travel(start + timedelta(hours=4), tick=False):
        # 8 GPU-hours spent: under budget, so more GPU work is still admitted.
        assert isinstance(admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM), Allocation)
    with time_machine.travel(start + timedelta(hours=5), tick=False):
        release(workload=first.workload_ref, actor=SYSTEM)
        refusal = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
        cpu_only = admit(request=ask(demo_team, alice), actor=SYSTEM)

    assert refusal.dimension == "gpu_hours_per_month"
    assert refusal.message == "team demo: GPU-hours this month 11 of 10 used"
    assert isinstance(cpu_only, Allocation)


def test_multi_gpu_request_lands_on_one_node(demo_team, alice, two_nodes):
    admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)  # node-a now has 3 free, node-b 4

    allocation = admit(request=ask(demo_team, alice, gpus=4), actor=SYSTEM)

    assert node_of(allocation) == {"node-b"}
    assert allocation.gpu_rows.count() == 4
    refusal = admit(request=ask(demo_team, alice, gpus=4), actor=SYSTEM)
    assert refusal.scope == "inventory" and "3 free in all" in refusal.message


def test_best_fit_keeps_a_node_whole(demo_team, alice, two_nodes):
    first = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    second = admit(request=ask(demo_team, alice, gpus=2), actor=SYSTEM)

    # Both landed on the node already in use, leaving the other whole for a 4-GPU request.
    assert node_of(first) == node_of(second)
    assert isinstance(admit(request=ask(demo_team, alice, gpus=4), actor=SYSTEM), Allocation)


def test_a_drained_or_unhealthy_device_is_never_chosen(demo_team, alice, two_nodes):
    drained = [d for d in two_nodes if d.node.name == "node-a"][:3]
    gpu_device_drain(devices=drained, drained=True, actor=SYSTEM)
    two_nodes[3].health = GpuHealth.UNHEALTHY
    two_nodes[3].save()
    chosen = []
    for _ in range(4):
        allocation = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
        chosen += list(allocation.gpu_rows.values_list("device__node__name", flat=True))

    assert chosen == ["node-b"] * 4
    assert admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM).scope == "inventory"
    assert AuditEvent.objects.filter(action="gpu.drain").count() == 3


def test_gpu_model_must_match(demo_team, alice, db):
    inventory({"a100-node": 2}, model="A100")
    inventory({"h100-node": 2}, model="H100")

    allocation = admit(request=ask(demo_team, alice, gpus=2, model="H100"), actor=SYSTEM)

    assert node_of(allocation) == {"h100-node"}
    assert admit(request=ask(demo_team, alice, gpus=1, model="H100"), actor=SYSTEM).scope == "inventory"


def test_admitting_the_same_workload_twice_returns_its_allocation(demo_team, alice, two_nodes):
    request = ask(demo_team, alice, gpus=1)

    first = admit(request=request, actor=SYSTEM)
    again = admit(request=request, actor=SYSTEM)

    assert again.pk == first.pk
    assert AllocationGpu.objects.filter(closed_at__isnull=True).count() == 1


def test_release_is_idempotent_and_frees_the_gpus(demo_team, alice, two_nodes):
    allocation = admit(request=ask(demo_team, alice, gpus=4), actor=SYSTEM)

    released = release(workload=allocation.workload_ref, actor=SYSTEM, reason="stopped")
    again = release(workload=allocation.workload_ref, actor=SYSTEM)

    assert released.closed_at is not None and again is None
    assert not AllocationGpu.objects.filter(closed_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="quota.release").count() == 1
    assert isinstance(admit(request=ask(demo_team, alice, gpus=4), actor=SYSTEM), Allocation)


def test_best_fit_picks_the_fullest_node_that_still_fits():
    free = [FreeGpu(i, 1, "a", i, "A100") for i in range(4)] + [FreeGpu(10 + i, 2, "b", i, "A100") for i in range(2)]

    assert {g.node_name for g in gpu_pick(free=free, count=2)} == {"b"}
    assert {g.node_name for g in gpu_pick(free=free, count=3)} == {"a"}
    assert gpu_pick(free=free, count=5) is None
