"""One-time tickets from the portal to a notebook host, and the host's own cookie.

The portal (which knows who is signed in) issues a ticket naming the person and the
workspace; the notebook host redeems it once, within DOCKYARD_TICKET_MAX_AGE_S, and sets
its own host-only cookie. The portal's session cookie never reaches notebook hosts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.cache import cache

TICKET_SALT = "dockyard.proxy.ticket"
COOKIE_SALT = "dockyard.proxy.cookie"
COOKIE_NAME = "dockyard-nb"


@dataclass(frozen=True)
class Pass:
    """Who a ticket or cookie speaks for, and for which workspace."""

    user_id: int
    workspace_id: str


def ticket_issue(*, user_id: int, workspace_id: str) -> str:
    payload = {"u": user_id, "w": workspace_id, "n": secrets.token_urlsafe(12)}
    return signing.dumps(payload, salt=TICKET_SALT, compress=True)


def ticket_redeem(*, ticket: str, workspace_id: str) -> Pass | None:
    """The ticket's pass if it is genuine, fresh, for this workspace and not used before."""
    try:
        payload = signing.loads(ticket, salt=TICKET_SALT, max_age=settings.DOCKYARD_TICKET_MAX_AGE_S)
    except signing.BadSignature:
        return None
    if payload.get("w") != workspace_id:
        return None
    # cache.add is atomic (SET NX on Redis): of two uses of one ticket, exactly one wins.
    if not cache.add(f"dockyard:ticket-used:{payload['n']}", 1, timeout=settings.DOCKYARD_TICKET_MAX_AGE_S * 2):
        return None
    return Pass(user_id=payload["u"], workspace_id=workspace_id)


def cookie_value(p: Pass) -> str:
    return signing.dumps({"u": p.user_id, "w": p.workspace_id}, salt=COOKIE_SALT, compress=True)


def cookie_pass(*, value: str, workspace_id: str) -> Pass | None:
    """The pass in a notebook cookie, only if it was made for this very workspace's host."""
    try:
        payload = signing.loads(value, salt=COOKIE_SALT, max_age=settings.DOCKYARD_NOTEBOOK_COOKIE_AGE_S)
    except signing.BadSignature:
        return None
    if payload.get("w") != workspace_id:
        return None
    return Pass(user_id=payload["u"], workspace_id=workspace_id)
