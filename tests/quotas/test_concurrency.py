"""Many admissions at once, each on its own database connection: limits and devices hold."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, connection, connections, transaction

from portal.quotas.models import Allocation, AllocationGpu
from portal.quotas.services import admit, release
from portal.quotas.values import Refusal
from tests.quotas.conftest import SYSTEM, ask, inventory, team_limits

pytestmark = pytest.mark.django_db(transaction=True)


def admit_all_at_once(requests, *, threads: int) -> list:
    """Admits the requests from `threads` threads, each with its own connection, released together."""
    start = threading.Barrier(threads)
    chunks = [requests[i::threads] for i in range(threads)]

    def run(chunk):
        try:
            start.wait(timeout=30)
            return [admit(request=r, actor=SYSTEM) for r in chunk]
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [result for chunk_results in pool.map(run, chunks) for result in chunk_results]


def test_fifty_parallel_admissions_against_a_limit_of_five(demo_team, alice):
    team_limits(demo_team, max_jobs=5)
    requests = [ask(demo_team, alice) for _ in range(50)]

    results = admit_all_at_once(requests, threads=50)

    admitted = [r for r in results if isinstance(r, Allocation)]
    refused = [r for r in results if isinstance(r, Refusal)]
    assert len(admitted) == 5 and len(refused) == 45
    assert {r.message for r in refused} == {"team demo: running jobs 5 of 5 in use"}
    assert Allocation.objects.filter(closed_at__isnull=True).count() == 5


def test_hundred_parallel_single_gpu_requests_on_eight_gpus(demo_team, research_team, alice, carol):
    devices = inventory({"node-a": 4, "node-b": 4})
    # Two teams, so the team lock alone cannot be what keeps devices apart.
    requests = [ask(demo_team if i % 2 else research_team, alice if i % 2 else carol, gpus=1) for i in range(100)]

    results = admit_all_at_once(requests, threads=25)

    admitted = [r for r in results if isinstance(r, Allocation)]
    assert len(admitted) == 8
    held = Counter(AllocationGpu.objects.filter(closed_at__isnull=True).values_list("device_id", flat=True))
    assert held == Counter({d.pk: 1 for d in devices})

    for allocation in admitted[:3]:
        release(workload=allocation.workload_ref, actor=SYSTEM)
    again = admit_all_at_once([ask(demo_team, alice, gpus=1) for _ in range(10)], threads=10)

    assert sum(isinstance(r, Allocation) for r in again) == 3
    assert AllocationGpu.objects.filter(closed_at__isnull=True).count() == 8


def test_the_constraint_itself_rejects_a_second_open_allocation_of_a_device(demo_team, alice):
    [device] = inventory({"node-a": 1})
    first = admit(request=ask(demo_team, alice, gpus=1), actor=SYSTEM)
    other = Allocation.objects.create(
        workload_kind="job", workload_uid=ask(demo_team, alice).workload.uid, team=demo_team, user=alice,
        cpus=1, memory_gib=1, gpus=1, opened_at=first.opened_at,
    )  # fmt: skip

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO quotas_allocationgpu (allocation_id, device_id, closed_at) VALUES (%s, %s, NULL)",
            [other.pk, device.pk],
        )

    # A closed row for the same device is fine: the rule is about open allocations only.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO quotas_allocationgpu (allocation_id, device_id, closed_at) VALUES (%s, %s, now())",
            [other.pk, device.pk],
        )
    assert AllocationGpu.objects.filter(device=device).count() == 2
