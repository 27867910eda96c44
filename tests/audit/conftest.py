"""Helpers for audit tests: appending events, and going around the append-only trigger."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from django.db import connection

from portal.audit.hashing import HASHED_FIELDS, values_hash
from portal.audit.models import AuditEvent
from portal.audit.services import Actor, audit_record

TRIGGER = "audit_auditevent_append_only"


def append(count: int, *, actor: Actor | None = None, **fields) -> list[AuditEvent]:
    """Appends `count` events through the one real write path."""
    actor = actor or Actor(type="user", name="alice", id=1, ip="10.0.0.7")
    fields.setdefault("action", "team.member_update")
    return [
        audit_record(actor=actor, target_type="accounts.membership", target_id=str(n), details={"n": n}, **fields)
        for n in range(count)
    ]


@contextmanager
def trigger_disabled() -> Iterator[None]:
    """What someone with the table owner's (here: superuser's) rights could do."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE audit_auditevent DISABLE TRIGGER {TRIGGER}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE audit_auditevent ENABLE TRIGGER {TRIGGER}")


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def rewrite_from(first_id: int, *, details: dict) -> None:
    """Rewrites every event from `first_id` on with new details and freshly chained hashes:
    a forgery that the plain chain check cannot see."""
    prev_hash = AuditEvent.objects.get(id=first_id - 1).hash if first_id > 1 else "0" * 64
    for event_id in AuditEvent.objects.filter(id__gte=first_id).order_by("id").values_list("id", flat=True):
        row = list(AuditEvent.objects.filter(id=event_id).values_list(*HASHED_FIELDS).get())
        row[HASHED_FIELDS.index("details")] = details
        row[HASHED_FIELDS.index("prev_hash")] = prev_hash
        new_hash = values_hash(tuple(row))
        sql(
            "UPDATE audit_auditevent SET details = %s::jsonb, prev_hash = %s, hash = %s WHERE id = %s",
            [json.dumps(details), prev_hash, new_hash, event_id],
        )
        prev_hash = new_hash


def portal_env_on_test_db(*, user: str | None = None, password: str | None = None) -> dict[str, str]:
    """The environment for a portal subprocess on the test database (as `user`, if given)."""
    db = connection.settings_dict
    credentials = quote(user or db["USER"]) + (f":{quote(password or db['PASSWORD'] or '')}")
    url = f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return {**os.environ, "DATABASE_URL": url}


@pytest.fixture
def checkpoint_file(tmp_path, settings):
    path = tmp_path / "checkpoints.jsonl"
    settings.DOCKYARD_AUDIT_CHECKPOINT_FILE = str(path)
    return path
