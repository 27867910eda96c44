"""Audit log benchmark on PostgreSQL: append throughput and `audit_verify` time.

    .venv/bin/python bench/audit.py [--events 4000] [--rounds 3] [--verify-events 1000000]

Creates a scratch database next to DOCKYARD_BENCH_DATABASE_URL's (default
postgres://postgres@127.0.0.1:5432/postgres), migrates it, and drops it at the end.

Appends: `audit_record` with 1 and 8 writers (processes, each with its own connection, one
event per transaction, as the portal writes them), against the floor of plain INSERTs of the
same rows into a copy of the table with the same indexes, with no hashing and no chain lock,
through the same ORM path. Verify: `manage.py audit_verify` over 1,000,000 events.
Goals: appends at least 0.5x the floor; verify in under 20 s.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BASE_URL = os.environ.get("DOCKYARD_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
SCRATCH = f"dockyard_bench_audit_{os.getpid()}"
APPEND_GOAL, VERIFY_GOAL_S = 0.5, 20.0


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_sql(sql: str) -> None:
    with psycopg.connect(BASE_URL, autocommit=True) as conn:
        conn.execute(sql)


def setup_django() -> None:
    os.environ["DATABASE_URL"] = with_database(BASE_URL, SCRATCH)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def plain_model():
    """A model on `bench_plain_event`, a copy of the audit table with its indexes, no trigger."""
    from django.db import connection, models

    from portal.audit.models import AuditEvent

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_plain_event (LIKE audit_auditevent INCLUDING ALL)")
    attrs = {field.name: field.clone() for field in AuditEvent._meta.local_fields}
    attrs["__module__"] = __name__
    attrs["Meta"] = type("Meta", (), {"app_label": "bench", "db_table": "bench_plain_event", "managed": False})
    return type("PlainEvent", (models.Model,), attrs)


def sample(i: int) -> dict:
    """One realistic event: a team admin changing someone's role through the API."""
    return {
        "action": "team.member_update",
        "target_type": "accounts.membership",
        "target_id": str(i),
        "target_repr": f"user{i % 97} in demo (member)",
        "details": {"user": f"user{i % 97}", "role": "team_admin", "previous_role": "member", "via": "api"},
    }


def audit_writer(n: int, offset: int) -> None:
    from portal.accounts.models import Team
    from portal.audit.services import Actor, audit_record

    team = Team(pk=1, slug="demo")
    actor = Actor(type="user", name="alice", id=1, ip="10.0.0.7")
    for i in range(offset, offset + n):
        audit_record(actor=actor, team=team, **sample(i))


def plain_writer(model, n: int, offset: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    for i in range(offset, offset + n):
        fake_hash = hashlib.sha256(str(i).encode()).hexdigest()  # unique, as a real one is
        with transaction.atomic():
            model(
                id=i + 1,
                created_at=timezone.now(),
                actor_type="user",
                actor_id=1,
                actor_name="alice",
                ip="10.0.0.7",
                team_id=1,
                team_slug="demo",
                outcome="ok",
                prev_hash=fake_hash,
                hash=fake_hash,
                **sample(i),
            ).save(force_insert=True)


def run_writers(write: Callable[[int, int], None], writers: int, per_writer: int) -> float:
    """Events per second with `writers` processes each calling `write(count, offset)`.

    Processes, not threads, as in production (web and worker processes): each has its own
    connection and interpreter, so the figures measure the database, not the GIL.
    """
    from django.db import connections

    connections.close_all()
    context = multiprocessing.get_context("fork")
    ready = context.Barrier(writers + 1)
    processes = [
        context.Process(target=_writer, args=(write, ready, per_writer, w * per_writer)) for w in range(writers)
    ]
    for process in processes:
        process.start()
    ready.wait()
    start = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - start
    if any(process.exitcode for process in processes):
        raise SystemExit("a writer failed")
    return writers * per_writer / elapsed


def _writer(write, ready, count: int, offset: int) -> None:
    from django.db import connection

    connection.ensure_connection()
    ready.wait()
    write(count, offset)
    connection.close()


def measure_appends(events: int, rounds: int) -> list[tuple[int, float, float]]:
    """Best of `rounds` for each, plain and audited taking turns, so that load from other
    processes on the machine hits both alike."""
    model = plain_model()
    results = []
    next_plain_id = 0
    for writers in (1, 8):
        per_writer = events // writers
        plain, audited = [], []
        for _ in range(rounds):
            base = next_plain_id
            plain.append(run_writers(lambda n, o, b=base: plain_writer(model, n, b + o), writers, per_writer))
            next_plain_id += writers * per_writer
            audited.append(run_writers(audit_writer, writers, per_writer))
        results.append((writers, max(plain), max(audited)))
    return results


def fill_chain(total: int) -> None:
    """Appends events up to `total` in one COPY, hashed exactly as `audit_record` does."""
    from django.db import connection

    from portal.audit.hashing import HASHED_FIELDS, values_hash

    with connection.cursor() as cursor:
        cursor.execute("SELECT id, hash, created_at FROM audit_auditevent ORDER BY id DESC LIMIT 1")
        head_id, prev, moment = cursor.fetchone() or (0, "0" * 64, datetime.now(UTC))
    columns = ", ".join((*HASHED_FIELDS, "hash"))
    raw = connection.connection
    with raw.cursor() as cursor, cursor.copy(f"COPY audit_auditevent ({columns}) FROM STDIN") as copy:
        for event_id in range(head_id + 1, total + 1):
            moment += timedelta(milliseconds=3)
            row = sample(event_id)
            values = (
                event_id, moment, "user", 1, "alice", "", "10.0.0.7", row["action"], row["target_type"],
                row["target_id"], row["target_repr"], 1, "demo", "ok", row["details"], prev,
            )  # fmt: skip
            prev = values_hash(values)
            copy.write_row((*values[:14], psycopg.types.json.Jsonb(row["details"]), values[15], prev))


def measure_verify(total: int) -> tuple[float, str]:
    from django.core.management import call_command

    fill_chain(total)
    out = StringIO()
    start = time.perf_counter()
    call_command("audit_verify", stdout=out)
    return time.perf_counter() - start, out.getvalue().strip()


def print_table(appends, verify_s: float, verify_out: str, total: int) -> None:
    print(f"\n{'measure':<44} {'result':>14} {'ratio':>8}  goal")
    for writers, plain, audited in appends:
        print(f"{f'plain INSERT, {writers} writer(s)':<44} {plain:>10.0f} ev/s {'':>8}")
        ratio = audited / plain
        mark = "ok" if ratio >= APPEND_GOAL else "MISSED"
        print(
            f"{f'audit_record, {writers} writer(s)':<44} {audited:>10.0f} ev/s {ratio:>7.2f}x  >= {APPEND_GOAL}x {mark}"
        )
    mark = "ok" if verify_s < VERIFY_GOAL_S else "MISSED"
    print(f"{f'audit_verify, {total:,} events':<44} {verify_s:>12.1f} s {'':>8}  < {VERIFY_GOAL_S:.0f} s {mark}")
    print(f"\n{verify_out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per append measurement")
    parser.add_argument("--rounds", type=int, default=3, help="append measurements taken, best kept")
    parser.add_argument("--verify-events", type=int, default=1_000_000)
    options = parser.parse_args()
    admin_sql(f'CREATE DATABASE "{SCRATCH}"')
    try:
        setup_django()
        appends = measure_appends(options.events, options.rounds)
        verify_s, verify_out = measure_verify(options.verify_events)
        print_table(appends, verify_s, verify_out, options.verify_events)
    finally:
        from django.db import connections

        connections.close_all()
        admin_sql(f'DROP DATABASE IF EXISTS "{SCRATCH}" WITH (FORCE)')


if __name__ == "__main__":
    main()
