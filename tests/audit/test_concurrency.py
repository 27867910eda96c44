"""Many writers at once, each on its own connection: one unbroken chain, and a parallel verify."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from portal.audit.models import AuditEvent
from portal.audit.services import Actor, audit_record
from portal.audit.verification import chain_verify
from tests.audit.conftest import portal_env_on_test_db, sql, trigger_disabled
from tests.processes import manage

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS, EVENTS_EACH = 8, 300


def write_events(writer: int, start: threading.Barrier, errors: list) -> None:
    actor = Actor(type="user", name=f"writer{writer}", id=writer)
    try:
        start.wait(timeout=120)  # a writer that cannot start breaks the barrier for all, never hangs them
        for n in range(EVENTS_EACH):
            audit_record(actor=actor, action="bench.append", details={"writer": writer, "n": n})
    except Exception as error:  # noqa: BLE001  (reported by the test below)
        errors.append(error)
    finally:
        connection.close()  # each thread had its own connection


def test_eight_concurrent_writers_make_one_unbroken_chain():
    start, errors = threading.Barrier(WRITERS), []
    threads = [threading.Thread(target=write_events, args=(w, start, errors)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert AuditEvent.objects.count() == WRITERS * EVENTS_EACH
    assert list(AuditEvent.objects.order_by("id").values_list("id", flat=True)) == list(range(1, 2401))
    report = chain_verify()
    assert report.ok and report.verified == 2400
    per_writer = {w: AuditEvent.objects.filter(actor_name=f"writer{w}").count() for w in range(WRITERS)}
    assert set(per_writer.values()) == {EVENTS_EACH}


def append_committed(count: int) -> None:
    for n in range(count):
        audit_record(actor=Actor.system(), action="test.append", details={"n": n})


def test_a_long_chain_is_verified_in_parallel_ranges():
    append_committed(30)

    report = chain_verify(jobs=3, min_per_job=10)

    assert report.ok and report.verified == 30


def test_parallel_verify_reports_the_first_problem_of_all_ranges():
    append_committed(30)
    with trigger_disabled():
        sql("""UPDATE audit_auditevent SET details = '{"n": "x"}'::jsonb WHERE id IN (25, 14)""")
        sql("DELETE FROM audit_auditevent WHERE id = 21")

    report = chain_verify(jobs=3, min_per_job=10)

    assert (report.problem_event_id, report.verified) == (14, 13)
    assert "event #14 was altered" in report.problem


def test_audit_verify_exits_non_zero_naming_the_event():
    append_committed(5)
    with trigger_disabled():
        sql("DELETE FROM audit_auditevent WHERE id = 2")

    result = manage("audit_verify", env=portal_env_on_test_db())

    assert result.returncode == 1
    assert "event #2 is missing (the chain goes from #1 to #3)" in result.stderr
