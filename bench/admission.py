"""Admission benchmark on PostgreSQL (not a test): `.venv/bin/python bench/admission.py`.

Creates a scratch database on the server of DOCKYARD_BENCH_DATABASE_URL (default: the test
server, postgres://postgres@127.0.0.1:5432/), migrates it, measures, and drops it.

1. Admissions per second with 1 and 8 clients (threads, one connection each), each admission
   a single-GPU request on 1,000 GPUs; the floor is a transaction that only writes one audit
   event, which every admission must also do.
2. One admission pass over 10,000 queued requests from 50 teams onto 1,000 GPUs on 125 nodes:
   its time (goal: under 2 s) and how many nodes stay whole (all 8 GPUs free) afterwards,
   against the most that could (free GPUs // 8).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from benchkit import admin_sql, database_url

REPO = Path(__file__).resolve().parent.parent
SCRATCH = f"dockyard_bench_{os.getpid()}"
NODES, GPUS_PER_NODE, TEAMS, QUEUED = 125, 8, 50, 10_000
TEAM_GPU_LIMIT = 16  # 50 teams x 16 = 800 of the 1,000 GPUs: some capacity is left, to see what stays whole


def setup_django() -> None:
    os.environ["DATABASE_URL"] = database_url(SCRATCH)
    os.environ.pop("REDIS_URL", None)
    os.environ["DOCKYARD_VAR_DIR"] = tempfile.mkdtemp(prefix="dockyard-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_world():
    from portal.accounts.models import Membership, Team, User
    from portal.quotas.models import GpuDevice, GpuNode, TeamQuota

    nodes = GpuNode.objects.bulk_create([GpuNode(name=f"node-{i:03d}", backend="docker") for i in range(NODES)])
    GpuDevice.objects.bulk_create(
        [
            GpuDevice(node=node, index=i, uuid=f"GPU-{node.name}-{i}", model="A100", memory_mib=81920)
            for node in nodes
            for i in range(GPUS_PER_NODE)
        ]
    )
    teams = Team.objects.bulk_create([Team(slug=f"team-{i:02d}", name=f"Team {i}") for i in range(TEAMS)])
    users = User.objects.bulk_create([User(username=f"user-{i:03d}") for i in range(TEAMS * 4)])
    Membership.objects.bulk_create([Membership(team=teams[i // 4], user=u) for i, u in enumerate(users)])
    TeamQuota.objects.bulk_create([TeamQuota(team=t) for t in teams])
    return teams, users


def request_for(team, user, gpus: int):
    from portal.quotas.models import WorkloadKind
    from portal.quotas.values import AdmissionRequest, Resources, WorkloadRef

    return AdmissionRequest(
        WorkloadRef(WorkloadKind.JOB, uuid.uuid4()), team, user, Resources(Decimal(2), Decimal(8), gpus)
    )


def admissions_per_second(teams, users, *, clients: int, per_client: int) -> float:
    from django.db import connections

    from portal.audit.services import Actor
    from portal.quotas.models import Allocation
    from portal.quotas.services import admit

    barrier = threading.Barrier(clients + 1)
    failures: list[object] = []

    def client(i: int) -> None:
        try:
            requests = [request_for(teams[i], users[i * 4], 1) for _ in range(per_client)]
            barrier.wait()
            for r in requests:
                result = admit(request=r, actor=Actor.system())
                if not isinstance(result, Allocation):
                    failures.append(result)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    assert not failures, failures[:3]
    close_everything()
    return clients * per_client / elapsed


def audit_floor(count: int) -> float:
    from django.db import transaction

    from portal.audit.services import Actor, audit_record

    started = time.perf_counter()
    for _ in range(count):
        with transaction.atomic():
            audit_record(actor=Actor.system(), action="bench.floor")
    return count / (time.perf_counter() - started)


def close_everything() -> None:
    from django.utils import timezone

    from portal.quotas.models import Allocation, AllocationGpu

    now = timezone.now()
    AllocationGpu.objects.filter(closed_at__isnull=True).update(closed_at=now)
    Allocation.objects.filter(closed_at__isnull=True).update(closed_at=now)


def fill_queue(teams, users) -> None:
    from django.utils import timezone

    from portal.quotas.models import QueuedRequest, TeamQuota, WorkloadKind

    TeamQuota.objects.update(gpus=TEAM_GPU_LIMIT)
    rng = random.Random(5)
    now = timezone.now()
    sizes = [0] * 5 + [1] * 60 + [2] * 25 + [4] * 7 + [8] * 3
    rows = []
    for i in range(QUEUED):
        team_index = i % TEAMS
        rows.append(
            QueuedRequest(
                workload_kind=WorkloadKind.JOB,
                workload_uid=uuid.uuid4(),
                team=teams[team_index],
                user=users[team_index * 4 + rng.randrange(4)],
                cpus=Decimal(2),
                memory_gib=Decimal(8),
                gpus=rng.choice(sizes),
                priority=rng.choice([0, 0, 0, 1, 2]),
                enqueued_at=now - timedelta(seconds=rng.randrange(1800)),
            )
        )
    QueuedRequest.objects.bulk_create(rows, batch_size=2000)


def whole_nodes() -> tuple[int, int]:
    from django.db.models import Count, Q

    from portal.quotas.models import GpuNode
    from portal.quotas.services.admission import free_gpu_list

    busy = Count("devices__allocations", filter=Q(devices__allocations__closed_at__isnull=True))
    whole = GpuNode.objects.annotate(busy=busy).filter(busy=0).count()
    return whole, len(free_gpu_list()) // GPUS_PER_NODE


def one_pass() -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal.quotas.services import admission_pass

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = admission_pass()
        elapsed = time.perf_counter() - started
    whole, best_possible = whole_nodes()
    return {
        "seconds": elapsed,
        "admitted": len(result.admitted),
        "gpus": sum(e.gpus for e in result.admitted),
        "waiting": result.waiting,
        "queries": len(queries),
        "whole": whole,
        "best_possible": best_possible,
    }


def main() -> None:
    admin_sql(f'CREATE DATABASE "{SCRATCH}"')
    try:
        setup_django()
        teams, users = make_world()
        floor = audit_floor(300)
        one = admissions_per_second(teams, users, clients=1, per_client=300)
        eight = admissions_per_second(teams, users, clients=8, per_client=60)
        fill_queue(teams, users)
        result = one_pass()
        report(floor=floor, one=one, eight=eight, result=result)
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


def report(*, floor: float, one: float, eight: float, result: dict) -> None:
    rows = [
        ("floor: transaction writing one audit event", f"{floor:,.0f} /s", "1.00"),
        ("admit, 1 client (1 GPU each)", f"{one:,.0f} /s", f"{one / floor:.2f}"),
        ("admit, 8 clients (1 GPU each)", f"{eight:,.0f} /s", f"{eight / floor:.2f}"),
        (
            f"admission pass: {QUEUED:,} queued, {TEAMS} teams, {NODES * GPUS_PER_NODE:,} GPUs on {NODES} nodes",
            f"{result['seconds']:.2f} s",
            "goal < 2 s",
        ),
        ("  admitted requests (GPUs)", f"{result['admitted']:,} ({result['gpus']:,})", ""),
        ("  still waiting", f"{result['waiting']:,}", ""),
        (
            "  queries in the pass",
            f"{result['queries']:,}",
            "(fixed reads and bulk writes, plus one audit event per admission)",
        ),
        ("  nodes left whole / most possible", f"{result['whole']} / {result['best_possible']}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'result':>16}  ratio to floor")
    print("-" * (width + 36))
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>16}  {ratio}")


if __name__ == "__main__":
    main()
