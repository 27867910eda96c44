"""Reconcile benchmark on PostgreSQL (not a test): `.venv/bin/python bench/reconcile.py`.

Creates a scratch database on the server of DOCKYARD_BENCH_DATABASE_URL (default: the test
server, postgres://postgres@127.0.0.1:5432/), migrates it, measures, and drops it.

One reconcile pass over N running workloads (half workspaces, half jobs holding quota) and the
N labelled containers the backend lists for them, for N = 10, 100 and 1,000: its time and its
number of database queries (goal: the same number of queries whatever N, and under 1 s at
1,000). The backend's `list_managed` is a stub returning the N containers (no engine call is
timed). The floor is what any pass must do: read the active rows of both kinds once and match
them with the listed containers.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from benchkit import admin_sql, database_url

REPO = Path(__file__).resolve().parent.parent
SCRATCH = f"dockyard_bench_{os.getpid()}"
SIZES = (10, 100, 1000)
RUNS = 5


def setup_django() -> None:
    os.environ["DATABASE_URL"] = database_url(SCRATCH)
    os.environ.pop("REDIS_URL", None)  # the cache and the reconcile lock use the database then
    os.environ["DOCKYARD_VAR_DIR"] = tempfile.mkdtemp(prefix="dockyard-bench-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DOCKYARD_LOG_FORMAT", "console")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class ListingBackend:
    """The Docker backend's answers without an engine: `list_managed` returns what it is given."""

    name = "docker"

    def __init__(self):
        self.observed = []

    def list_managed(self, kind: str = ""):
        return [o for o in self.observed if not kind or o.kind == kind]

    def engine_started_at(self):
        return None


def make_world(n: int, backend: ListingBackend) -> None:
    from django.utils import timezone

    from jobs.models import Job
    from portal.accounts.models import Membership, Team, User
    from portal.catalog.models import Image, ImageRevision
    from portal.quotas.models import Allocation, ResourceProfile
    from portal.runtime.base import Observed, State
    from workspaces.models import Workspace

    for model in (Allocation, Job, Workspace):
        model.objects.all().delete()
    team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    owner, _ = User.objects.get_or_create(username="bench")
    Membership.objects.get_or_create(team=team, user=owner)
    image, _ = Image.objects.get_or_create(slug="bench", defaults={"name": "bench", "default_command": ["x"]})
    revision, _ = ImageRevision.objects.get_or_create(
        image=image, number=1, defaults={"source_type": "build", "digest": "sha256:" + "b" * 64}
    )
    profile, _ = ResourceProfile.objects.get_or_create(slug="bench", defaults={"name": "b", "cpus": 1, "memory_gib": 1})
    common = {"owner": owner, "team": team, "image": image, "image_revision": revision,
              "image_digest": revision.digest, "profile": profile, "cpus": Decimal(1), "memory_gib": Decimal(1),
              "state": "running", "started_at": timezone.now()}  # fmt: skip
    half = n // 2
    workspaces = Workspace.objects.bulk_create(
        [
            Workspace(id=uuid.uuid4(), name=f"w{i}", jupyter_token="t", endpoint="127.0.0.1:1", **common)
            for i in range(half)
        ]
    )
    jobs = Job.objects.bulk_create(
        [Job(id=uuid.uuid4(), name=f"j{i}", command=["true"], attempt=1, **common) for i in range(n - half)]
    )
    now = timezone.now()
    Allocation.objects.bulk_create(
        [
            Allocation(
                workload_kind="job",
                workload_uid=j.pk,
                team=team,
                user=owner,
                cpus=Decimal(1),
                memory_gib=Decimal(1),
                opened_at=now,
            )
            for j in jobs
        ]
    )
    backend.observed = [
        Observed(uid=str(w.pk), kind=kind, state=State.RUNNING, started_at=now)
        for kind, rows in (("workspace", workspaces), ("job", jobs))
        for w in rows
    ]


def floor(backend: ListingBackend) -> float:
    """Read the active rows of both kinds once and match them with the listed containers."""
    from jobs.models import Job
    from workspaces.models import Workspace

    started = time.perf_counter()
    seen = {o.uid: o for o in backend.list_managed()}
    for model in (Workspace, Job):
        for pk in model.objects.filter(state="running").values_list("pk", flat=True):
            seen.get(str(pk))
    return time.perf_counter() - started


def one_pass() -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from portal.workloads.reconcile import reconcile_pass

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        corrections = reconcile_pass()
        elapsed = time.perf_counter() - started
    assert corrections is not None, "another pass held the lock"
    return elapsed, len(queries), len(corrections)


def main() -> None:
    admin_sql(f'CREATE DATABASE "{SCRATCH}"')
    try:
        setup_django()
        import portal.runtime

        backend = ListingBackend()
        portal.runtime._backend = lambda name, location: backend  # every get_backend() caller sees the stub
        import jobs.reconcile  # noqa: F401  (registers the reconcilers)
        import workspaces.reconcile  # noqa: F401

        rows = []
        for n in SIZES:
            make_world(n, backend)
            one_pass()  # warm: connections, caches
            passes = [one_pass() for _ in range(RUNS)]
            floors = [floor(backend) for _ in range(RUNS)]
            elapsed = statistics.median(p[0] for p in passes)
            base = statistics.median(floors)
            rows.append((n, elapsed, base, {p[1] for p in passes}, sum(p[2] for p in passes)))
        from django.db import connection

        connection.close()
    finally:
        admin_sql(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')

    print(f"One reconcile pass over N running workloads and their N containers (median of {RUNS})")
    print(f"{'N':>6} {'pass ms':>9} {'floor ms':>9} {'ratio':>6} {'queries':>8} {'corrections':>12}")
    for n, elapsed, base, queries, corrections in rows:
        count = ",".join(str(q) for q in sorted(queries))
        print(f"{n:>6} {elapsed * 1000:>9.1f} {base * 1000:>9.1f} {elapsed / base:>6.2f} {count:>8} {corrections:>12}")
    constant = len({q for row in rows for q in row[3]}) == 1
    print(f"queries constant across N: {'yes' if constant else 'NO'}; "
          f"pass at N={rows[-1][0]}: {rows[-1][1]:.3f} s (goal: under 1 s)")  # fmt: skip


if __name__ == "__main__":
    main()
