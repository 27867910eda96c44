"""Fixtures for quotas: a declared GPU inventory, quotas, and requests to admit."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from portal.audit.services import Actor
from portal.quotas.models import GpuDevice, GpuNode, TeamQuota, UserQuota, WorkloadKind
from portal.quotas.values import AdmissionRequest, Resources, WorkloadRef

SYSTEM = Actor.system()


def inventory(nodes: dict[str, int], *, model: str = "A100") -> list[GpuDevice]:
    """Declares nodes with that many GPUs each, as staff would in the admin."""
    devices = []
    for name, count in nodes.items():
        node = GpuNode.objects.create(name=name, backend="docker")
        devices += [
            GpuDevice.objects.create(node=node, index=i, uuid=f"GPU-{name}-{i}", model=model, memory_mib=81920)
            for i in range(count)
        ]
    return devices


def ask(
    team, user, *, gpus: int = 0, cpus: str = "1", memory: str = "2", kind: str = WorkloadKind.JOB, model: str = ""
):
    """A request for a new workload of `kind`."""
    return AdmissionRequest(
        workload=WorkloadRef(kind, uuid.uuid4()),
        team=team,
        user=user,
        resources=Resources(Decimal(cpus), Decimal(memory), gpus, model),
    )


def team_limits(team, **limits) -> TeamQuota:
    quota, _ = TeamQuota.objects.update_or_create(team=team, defaults=limits)
    return quota


def user_limits(team, user, **limits) -> UserQuota:
    quota, _ = UserQuota.objects.update_or_create(team=team, user=user, defaults=limits)
    return quota


@pytest.fixture
def two_nodes(db):
    """node-a and node-b, four A100s each."""
    return inventory({"node-a": 4, "node-b": 4})
