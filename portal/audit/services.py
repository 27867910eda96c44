"""Writing the audit log: one call, `audit_record`, used by every state change."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from portal.audit.hashing import (
    CHAIN_FIELDS,
    GENESIS_HASH,
    HASHED_FIELDS,
    canonical_bytes,
    canonical_parts,
)
from portal.audit.models import ActorType, AuditEvent, Outcome

# Any 64-bit number: the PostgreSQL advisory lock key that serialises appends to the chain
# (written out in `audit_chain_next`, migration 0004).
CHAIN_LOCK_KEY = 0x646F636B79617264  # "dockyard"

SECRET_KEY_PATTERN = re.compile(r"pass(word)?|secret|token|api[_-]?key|private|credential", re.IGNORECASE)
MASK = "********"


@dataclass(frozen=True)
class Actor:
    """Who acted: a person (optionally through an API token), or the system."""

    type: str
    name: str
    id: int | None = None
    token_name: str = ""
    ip: str | None = None

    @classmethod
    def system(cls) -> Actor:
        return cls(type=ActorType.SYSTEM, name="system")

    @classmethod
    def for_user(cls, user, *, ip: str | None = None, token_name: str = "") -> Actor:
        if user is None or not user.is_authenticated:
            return cls(type=ActorType.ANONYMOUS, name="anonymous", ip=ip)
        kind = ActorType.TOKEN if token_name else ActorType.USER
        return cls(type=kind, name=user.get_username(), id=user.pk, token_name=token_name, ip=ip)

    @classmethod
    def from_request(cls, request) -> Actor:
        """The person behind a request, as Django or DRF authenticated them."""
        token = getattr(request, "auth", None)
        token_name = getattr(token, "name", "") if token is not None else ""
        return cls.for_user(getattr(request, "user", None), ip=client_ip(request), token_name=token_name)


def client_ip(request) -> str | None:
    # REMOTE_ADDR is the peer as the ASGI server saw it; uvicorn rewrites it from
    # X-Forwarded-For only for the proxies listed in FORWARDED_ALLOW_IPS.
    return request.META.get("REMOTE_ADDR") or None


def normal_ip(value: str | None) -> str | None:
    """The address as PostgreSQL's `inet` gives it back, so the stored row hashes the same.

    IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what dual-stack sockets report) becomes plain IPv4,
    a zone (`%eth0`) is dropped, and anything unparsable is not recorded rather than failing
    the action it describes.
    """
    if not value:
        return None
    try:
        address = ipaddress.ip_address(str(value).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def scrub(value: Any) -> Any:
    """Masks values under secret-looking keys, at any depth, so they never reach the log."""
    if isinstance(value, dict):
        return {k: MASK if SECRET_KEY_PATTERN.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def canonical_form(event: AuditEvent) -> bytes:
    """The exact bytes an event's hash covers: every field but `hash`, sorted, compact."""
    return canonical_bytes(tuple(getattr(event, name) for name in HASHED_FIELDS))


def event_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical_form(event)).hexdigest()


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
    team=None,
    outcome: str = Outcome.OK,
    details: dict | None = None,
) -> AuditEvent:
    """Appends one event to the chain, inside the caller's transaction.

    If the caller's change rolls back, the event goes with it. Call it as the last write of
    a transaction: the chain lock it takes is held until that transaction commits.
    """
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_repr = target_repr or str(target)[:200]
    event = AuditEvent(
        created_at=timezone.now(),
        actor_type=actor.type,
        actor_id=actor.id,
        actor_name=actor.name,
        token_name=actor.token_name,
        ip=normal_ip(actor.ip),
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        target_repr=target_repr,
        team_id=getattr(team, "pk", None),
        team_slug=getattr(team, "slug", ""),
        outcome=outcome,
        details=_json_safe(scrub(details or {})),
    )
    # No savepoint of its own: the event lives or dies with the caller's transaction anyway.
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            _append_on_postgresql(event)
        else:
            _append_here(event)
    return event


def _json_safe(details: dict) -> dict:
    # Round-trip so the stored value is exactly what the hash covered (dates become strings).
    return json.loads(json.dumps(details, default=str))


def _append_on_postgresql(event: AuditEvent) -> None:
    """Appends in one statement: `audit_chain_next` (migration 0004) takes the chain lock,
    reads the head and hashes the event; the INSERT around it stores the row.

    The chain lock serialises appends so two writers never extend the same head (a fork),
    and it is held until the caller's transaction commits. Doing the lock, the head read,
    the hash and the insert in one round trip keeps that critical section short. The
    function reads the head after taking the lock, with a fresh snapshot (it is VOLATILE),
    so it sees a head committed while it waited.
    """
    prefix, middle, suffix = canonical_parts(
        {name: getattr(event, name) for name in HASHED_FIELDS if name not in CHAIN_FIELDS}
    )
    values = [getattr(event, name) for name in _INSERTED_FIELDS]
    values[_INSERTED_FIELDS.index("details")] = json.dumps(event.details)
    with connection.cursor() as cursor:
        cursor.execute(_APPEND_SQL, [*values, prefix, middle, suffix])
        event.id, event.prev_hash, event.hash = cursor.fetchone()
    event._state.adding, event._state.db = False, connection.alias  # as if saved by the ORM


# HASHED_FIELDS but the chain's own, in the order of the columns below.
_INSERTED_FIELDS = [name for name in HASHED_FIELDS if name not in CHAIN_FIELDS]
_APPEND_SQL = """
INSERT INTO audit_auditevent (
    id, created_at, actor_type, actor_id, actor_name, token_name, ip, action, target_type,
    target_id, target_repr, team_id, team_slug, outcome, details, prev_hash, hash
)
SELECT link.new_id, %s, %s, %s, %s, %s, %s::inet, %s, %s, %s, %s, %s, %s, %s, %s::jsonb,
       link.new_prev_hash, link.new_hash
FROM audit_chain_next(%s, %s, %s) AS link
RETURNING id, prev_hash, hash
"""


def _append_here(event: AuditEvent) -> None:
    """Appends with the hash computed in Python (SQLite, the embedded default).

    SQLite transactions begin IMMEDIATE (see settings), which takes the database's write
    lock: appends are already serialised, and the head read is the latest.
    """
    head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
    event.id, event.prev_hash = head if head else (0, GENESIS_HASH)
    event.id += 1
    event.hash = event_hash(event)
    event.save(force_insert=True)
