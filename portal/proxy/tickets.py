"""The handshake that signs a browser in to a notebook host, and the host's own cookie.

It is bound to the browser, as JupyterHub's OAuth handshake is with its state cookie:

1. The notebook host sets a random state cookie (host-only) and sends the browser to the
   portal's Open view with that state.
2. The portal, which knows who is signed in, issues a one-time ticket for that person, this
   workspace and a digest of that state, and sends the browser back with it.
3. The notebook host redeems the ticket only if the browser's state cookie matches, once,
   within DOCKYARD_TICKET_MAX_AGE_S, and sets its own host-only cookie.

A ticket URL followed in someone else's browser therefore signs nobody in: that browser has
no (or another) state cookie. The notebook cookie carries the portal session that made it,
sealed, so signing out of the portal signs out of every notebook host. The portal's session
cookie itself never reaches notebook hosts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from functools import cache as memoize
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.utils.crypto import salted_hmac

TICKET_SALT = "dockyard.proxy.ticket"
COOKIE_SALT = "dockyard.proxy.cookie"
COOKIE_NAME = "dockyard-nb"
STATE_COOKIE_NAME = "dockyard-nb-state"
# The state cookie lives long enough to sign in to the portal on the way.
STATE_MAX_AGE_S = 600
STATE_PATTERN = re.compile(r"[A-Za-z0-9_-]{32,64}")
DEFAULT_PATH = "/lab"
# The notebook host's own paths, answered by the proxy and never forwarded to the app.
LOGIN_PATH = "/_dockyard/login"
TICKET_PATH = "/_dockyard/ticket"


@dataclass(frozen=True)
class Pass:
    """Who a ticket or cookie speaks for, for which workspace, and from which portal session
    (sealed; empty for none)."""

    user_id: int
    workspace_id: str
    session: str = ""


def cookie_name(base: str) -> str:
    """Over https, `__Host-` makes browsers refuse the name from any other host, so script on
    a sibling notebook host cannot plant ("toss") it with a parent-domain cookie."""
    return f"__Host-{base}" if settings.DOCKYARD_NOTEBOOK_SCHEME == "https" else base


def state_new() -> str:
    return secrets.token_urlsafe(32)


def state_valid(state: str) -> bool:
    return bool(STATE_PATTERN.fullmatch(state or ""))


def next_path_safe(value: str | None) -> str:
    """`value` if it is a path on the same host, else the app's default path. Refuses what a
    browser could read as another host: `//host`, `/\\host`, any backslash, control
    characters or whitespace, and anything with a scheme or host."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return DEFAULT_PATH
    if "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return DEFAULT_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return DEFAULT_PATH
    return value


def ticket_issue(*, user_id: int, workspace_id: str, state: str, session_key: str) -> str:
    payload = {
        "u": user_id,
        "w": workspace_id,
        "n": secrets.token_urlsafe(12),
        "s": _state_digest(state),
        "k": session_seal(session_key),
    }
    return signing.dumps(payload, salt=TICKET_SALT, compress=True)


def ticket_redeem(*, ticket: str, workspace_id: str, state: str) -> Pass | None:
    """The ticket's pass if it is genuine, fresh, for this workspace, made for this browser's
    state, and not used before."""
    try:
        payload = signing.loads(ticket, salt=TICKET_SALT, max_age=settings.DOCKYARD_TICKET_MAX_AGE_S)
    except signing.BadSignature:
        return None
    if payload.get("w") != workspace_id or not state_valid(state):
        return None
    if not hmac.compare_digest(str(payload.get("s", "")), _state_digest(state)):
        return None  # another browser's ticket: it stays unused for the browser it was made for
    # cache.add is atomic (SET NX on Redis): of two uses of one ticket, exactly one wins.
    if not cache.add(f"dockyard:ticket-used:{payload['n']}", 1, timeout=settings.DOCKYARD_TICKET_MAX_AGE_S * 2):
        return None
    return Pass(user_id=payload["u"], workspace_id=workspace_id, session=payload.get("k", ""))


def cookie_value(p: Pass) -> str:
    return signing.dumps({"u": p.user_id, "w": p.workspace_id, "k": p.session}, salt=COOKIE_SALT, compress=True)


def cookie_pass(*, value: str, workspace_id: str) -> Pass | None:
    """The pass in a notebook cookie, only if it was made for this very workspace's host and
    names a portal session."""
    try:
        payload = signing.loads(value, salt=COOKIE_SALT, max_age=settings.DOCKYARD_NOTEBOOK_COOKIE_AGE_S)
    except signing.BadSignature:
        return None
    if payload.get("w") != workspace_id or not payload.get("k"):
        return None
    return Pass(user_id=payload["u"], workspace_id=workspace_id, session=payload["k"])


def session_seal(session_key: str) -> str:
    """The portal session key, encrypted: the notebook cookie names the session it came from
    without being a portal credential itself."""
    return _fernet(settings.SECRET_KEY).encrypt(session_key.encode()).decode()


def session_unseal(sealed: str) -> str | None:
    try:
        return _fernet(settings.SECRET_KEY).decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError):
        return None


def app_cookie_prefix(workspace_id: str) -> str:
    """The prefix the proxy gives the app's own cookies on this workspace's host. Keyed with
    SECRET_KEY, so script on another notebook host cannot guess it and plant a cookie (set on
    the parent domain) that this workspace's app would then read."""
    digest = salted_hmac("dockyard.proxy.app-cookie", workspace_id).hexdigest()[:16]
    return cookie_name(f"dy{digest}-")


def _state_digest(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()


@memoize
def _fernet(secret_key: str) -> Fernet:
    derived = hashlib.sha256(b"dockyard-notebook-session:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))
