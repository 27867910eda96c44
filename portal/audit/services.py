"""Writing the audit log: one call, `audit_record`, used by every state change."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from portal.audit.models import ActorType, AuditEvent, Outcome

GENESIS_HASH = "0" * 64
# Any 64-bit number: the PostgreSQL advisory lock key that serialises appends to the chain.
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


def scrub(value: Any) -> Any:
    """Masks values under secret-looking keys, at any depth, so they never reach the log."""
    if isinstance(value, dict):
        return {k: MASK if SECRET_KEY_PATTERN.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def canonical_form(event: AuditEvent) -> bytes:
    """The exact bytes an event's hash covers: every field but `hash`, sorted, compact."""
    fields = {
        "id": event.id,
        "created_at": _iso(event.created_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "token_name": event.token_name,
        "ip": event.ip,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "team_id": event.team_id,
        "team_slug": event.team_slug,
        "outcome": event.outcome,
        "details": event.details,
        "prev_hash": event.prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
    with transaction.atomic():
        _lock_chain()
        head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
        head_id, head_hash = head if head else (0, GENESIS_HASH)
        event = AuditEvent(
            id=head_id + 1,
            created_at=timezone.now(),
            actor_type=actor.type,
            actor_id=actor.id,
            actor_name=actor.name,
            token_name=actor.token_name,
            ip=actor.ip,
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            target_repr=target_repr,
            team_id=getattr(team, "pk", None),
            team_slug=getattr(team, "slug", ""),
            outcome=outcome,
            details=_json_safe(scrub(details or {})),
            prev_hash=head_hash,
        )
        event.hash = event_hash(event)
        event.save(force_insert=True)
    return event


def _json_safe(details: dict) -> dict:
    # Round-trip so the stored value is exactly what the hash covered (dates become strings).
    return json.loads(json.dumps(details, default=str))


def _lock_chain() -> None:
    """Serialises appends so two writers never both extend the same head (a fork).

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback.
    SQLite: transactions begin IMMEDIATE (see settings), so writers are already serialised.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_KEY])
