"""The hash chain: appends link up, the trigger refuses changes, audit_verify names tampering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from portal.audit.hashing import CHAIN_FIELDS, GENESIS_HASH, HASHED_FIELDS, canonical_bytes, canonical_parts
from portal.audit.models import AuditEvent
from portal.audit.services import Actor, audit_record, event_hash
from portal.audit.verification import chain_verify
from tests.audit.conftest import append, rewrite_from, sql, trigger_disabled

pytestmark = pytest.mark.django_db


def verify(*args: str) -> str:
    """Runs audit_verify; returns its output, or raises CommandError (exit status 1)."""
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def test_each_event_links_to_the_one_before():
    events = append(3)

    assert [e.id for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    stored = AuditEvent.objects.get(id=2)
    assert stored.hash == events[1].hash == event_hash(stored)


def test_the_database_hashes_exactly_the_canonical_form_python_verifies():
    # Quotes, backslashes, newlines, non-ASCII, nesting, numbers: whatever the database
    # computed when appending must be what the verifier computes from the stored row.
    details = {"z": ['a"b\\c\nd', {"ä": 1.5, "b": None}], "a": {"y": True, "x": -3}, "emoji": "🚢", "big": 2**60}
    event = audit_record(
        actor=Actor(type="user", name="zoë", id=9, ip="::ffff:10.1.2.3"), action="user.update", details=details
    )

    stored = AuditEvent.objects.get(id=event.id)
    assert stored.hash == event.hash == event_hash(stored)
    assert stored.ip == "10.1.2.3"
    assert "Verified 1 events" in verify()


def test_canonical_parts_join_to_the_canonical_form():
    values = dict.fromkeys(HASHED_FIELDS, "")
    values.update(id=42, prev_hash="ab" * 32, created_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    values.update(details={"k": ["v", {"b": 1, "a": 2}]}, actor_id=None, team_id=7)

    prefix, middle, suffix = canonical_parts({k: v for k, v in values.items() if k not in CHAIN_FIELDS})

    joined = f"{prefix}{values['id']}{middle}{values['prev_hash']}{suffix}".encode()
    assert joined == canonical_bytes(tuple(values.values()))
    assert b'"created_at":"2026-01-02T03:04:05.000006Z"' in joined


def test_verify_counts_an_intact_chain():
    append(5)

    assert "Verified 5 events (#1 to #5)" in verify()
    assert "Verified 2 events (#4 to #5)" in verify("--since", "4")


def test_verify_of_an_empty_log_succeeds():
    assert "Verified 0 events" in verify()


def test_update_delete_and_truncate_are_refused_by_the_trigger():
    append(2)

    for statement in (
        "UPDATE audit_auditevent SET details = '{}'::jsonb WHERE id = 1",
        "UPDATE audit_auditevent SET outcome = 'ok' WHERE false",
        "DELETE FROM audit_auditevent WHERE id = 2",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            sql(statement)
    assert AuditEvent.objects.count() == 2
    with pytest.raises(DatabaseError, match="append-only"):
        AuditEvent.objects.filter(id=1).delete()


def test_truncate_is_refused_to_every_role_but_superusers():
    append(1)
    role = f"{connection.settings_dict['NAME']}_owner"  # roles are per server, not per database
    sql(f"CREATE ROLE {role} NOLOGIN")  # created and dropped with the test's transaction
    sql(f"GRANT ALL ON audit_auditevent TO {role}")  # even with every table privilege

    sql(f"SET LOCAL ROLE {role}")
    with pytest.raises(DatabaseError, match="TRUNCATE on audit_auditevent is refused"), transaction.atomic():
        sql("TRUNCATE audit_auditevent")
    sql("RESET ROLE")
    assert AuditEvent.objects.count() == 1


def test_saving_an_event_again_is_refused():
    event = append(1)[0]
    event.details = {"n": "forged"}

    with pytest.raises(DatabaseError, match="append-only"):
        event.save()


def test_changed_details_are_named():
    append(5)
    with trigger_disabled():
        sql("""UPDATE audit_auditevent SET details = '{"n": 99}'::jsonb WHERE id = 3""")

    expected = r"^Audit chain broken: event #3 was altered: its hash does not match its contents\.$"
    with pytest.raises(CommandError, match=expected):
        verify()


def test_changed_actor_is_named_even_when_its_own_hash_is_recomputed():
    events = append(4)
    forged = AuditEvent.objects.get(id=2)
    forged.actor_name = "mallory"
    with trigger_disabled():
        sql(
            "UPDATE audit_auditevent SET actor_name = 'mallory', hash = %s WHERE id = 2",
            [event_hash(forged)],
        )

    with pytest.raises(CommandError, match=r"event #3 does not link to event #2"):
        verify()
    assert events[2].prev_hash != event_hash(forged)


def test_an_event_deleted_from_the_middle_is_named():
    append(6)
    with trigger_disabled():
        sql("DELETE FROM audit_auditevent WHERE id = 4")

    with pytest.raises(CommandError, match=r"event #4 is missing \(the chain goes from #3 to #5\)"):
        verify()


def test_since_needs_its_predecessor():
    append(4)
    with trigger_disabled():
        sql("DELETE FROM audit_auditevent WHERE id = 2")

    with pytest.raises(CommandError, match=r"event #2 is missing"):
        verify("--since", "3")


def test_a_chain_rewritten_with_fresh_hashes_passes_the_plain_check():
    append(6)
    with trigger_disabled():
        rewrite_from(3, details={"n": "rewritten"})

    assert "Verified 6 events" in verify()
    assert chain_verify().ok


def test_verify_reads_in_chunks_without_loading_the_table(monkeypatch):
    monkeypatch.setattr("portal.audit.verification.VERIFY_CHUNK_SIZE", 2)
    append(5)

    assert chain_verify().verified == 5
