"""Who may use a workspace through the proxy, decided in the database and cached briefly.

Only "yes" is cached, for at most DOCKYARD_PROXY_AUTH_CACHE_S: the cache bounds how long a
revocation takes, and never delays a grant (a new share, a new member) or a fresh start.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from portal.accounts.models import token_digest
from portal.accounts.services import token_authenticate
from portal.proxy.tickets import session_unseal


@dataclass(frozen=True)
class Decision:
    allowed: bool
    running: bool = False
    upstream: str = ""  # host:port of Jupyter inside the workload network
    token: str = ""  # Jupyter's token, added server-side
    owner_id: int | None = None


@dataclass(frozen=True)
class Caller:
    """Who is asking, and by what: a notebook cookie (the sealed portal session it came from)
    or an API token (its digest and name)."""

    user_id: int
    session: str = ""
    token_digest: str = ""
    token_name: str = ""


NOT_FOUND = Decision(allowed=False)
CACHE_MAX_ENTRIES = 10_000
T = TypeVar("T")


class _Recent:
    """Answers kept with the time they were fetched; a reader says how old it accepts."""

    def __init__(self):
        self.entries: dict[object, tuple[float, object]] = {}

    def get(self, key, max_age: float):
        found = self.entries.get(key)
        if found and time.monotonic() - found[0] <= max_age:
            return found[1]
        return None

    def put(self, key, value) -> None:
        now = time.monotonic()
        self.entries[key] = (now, value)
        if len(self.entries) > CACHE_MAX_ENTRIES:  # bound memory: drop expired entries
            horizon = now - settings.DOCKYARD_PROXY_AUTH_CACHE_S
            for stale in [k for k, (at, _) in self.entries.items() if at < horizon]:
                self.entries.pop(stale, None)

    def clear(self) -> None:
        self.entries.clear()


_decisions = _Recent()
_sessions = _Recent()
_tokens = _Recent()
_token_uses = _Recent()


def _in_thread(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """`fn` run in a worker thread, giving its database connection back afterwards. These
    threads serve no Django request, so nothing else would: with a connection pool, each one
    would hold a connection for good and starve the requests."""

    def run(*args, **kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return sync_to_async(run, thread_sensitive=False)


def _max_age(max_age: float | None) -> float:
    return settings.DOCKYARD_PROXY_AUTH_CACHE_S if max_age is None else max_age


def _decide(user_id: int, workspace_id: str) -> Decision:
    from workspaces.models import Workspace, WorkspaceState
    from workspaces.selectors import workspace_user_may_open

    workspace = Workspace.objects.filter(pk=workspace_id).select_related("owner").first()
    if workspace is None or not workspace_user_may_open(user_id=user_id, workspace=workspace):
        return NOT_FOUND
    return Decision(
        allowed=True,
        running=workspace.state == WorkspaceState.RUNNING and bool(workspace.endpoint),
        upstream=workspace.endpoint,
        token=workspace.jupyter_token,
        owner_id=workspace.owner_id,
    )


async def decide(*, user_id: int, workspace_id: str, max_age: float | None = None) -> Decision:
    """May this person use this workspace now, and is it running? A "yes, running" younger
    than `max_age` (default DOCKYARD_PROXY_AUTH_CACHE_S) is reused; anything else is asked
    afresh, so a grant or a start is seen by the very next request."""
    key = (user_id, workspace_id)
    cached = _decisions.get(key, _max_age(max_age))
    if cached is not None:
        return cached
    decision = await _in_thread(_decide)(user_id, workspace_id)
    if decision.allowed and decision.running:
        _decisions.put(key, decision)
    return decision


def _session_user_id(session_key: str) -> str | None:
    from django.contrib.auth import SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return store.load().get(SESSION_KEY)  # {} once the session is gone or expired


async def session_alive(*, sealed: str, user_id: int, max_age: float | None = None) -> bool:
    """Is the portal session a notebook cookie came from still signed in, as this person?"""
    cached = _sessions.get(sealed, _max_age(max_age))
    if cached is not None:
        return cached
    session_key = session_unseal(sealed)
    if not session_key:
        return False
    found = await _in_thread(_session_user_id)(session_key)
    alive = found is not None and str(found) == str(user_id)
    if alive:
        _sessions.put(sealed, True)
    return alive


async def caller_for_token(raw: str, *, max_age: float | None = None) -> Caller | None:
    """The person behind an API token, cached like access decisions (a revoked token stops
    working within DOCKYARD_PROXY_AUTH_CACHE_S), so a script's every request is not a query."""
    key = token_digest(raw)
    cached = _tokens.get(key, _max_age(max_age))
    if cached is not None:
        return cached
    token = await _in_thread(token_authenticate)(raw=raw)
    if token is None:
        return None
    caller = Caller(user_id=token.user_id, token_digest=key, token_name=token.name)
    _tokens.put(key, caller)
    return caller


async def caller_still_valid(caller: Caller, *, raw_token: str = "", max_age: float | None = None) -> bool:
    """Is the credential a caller came with still good (session signed in, token usable)?"""
    if caller.session:
        return await session_alive(sealed=caller.session, user_id=caller.user_id, max_age=max_age)
    if raw_token:
        return await caller_for_token(raw_token, max_age=max_age) is not None
    return False


def forget() -> None:
    """Drops every cached answer (tests, and after a change that must apply at once)."""
    _decisions.clear()
    _sessions.clear()
    _tokens.clear()
    _token_uses.clear()


async def record_open(*, workspace_id: str, user_id: int, ip: str | None) -> bool:
    """Audits a ticket's use; False if the workspace is gone or not theirs to open."""

    def record() -> bool:
        from portal.accounts.models import User
        from workspaces.models import Workspace
        from workspaces.selectors import workspace_user_may_open
        from workspaces.services import workspace_record_open

        workspace = Workspace.objects.filter(pk=workspace_id).select_related("team").first()
        user = User.objects.filter(pk=user_id, is_active=True).first()
        if workspace is None or user is None or not workspace_user_may_open(user_id=user_id, workspace=workspace):
            return False
        workspace_record_open(workspace=workspace, user=user, ip=ip)
        return True

    return await _in_thread(record)()


async def record_token_use(*, caller: Caller, workspace_id: str, ip: str | None) -> None:
    """Audits an API token's use on a notebook host: its first use per workspace and hour."""
    hour = int(time.time() // 3600)
    seen = (caller.token_digest, workspace_id, hour)
    if _token_uses.get(seen, 3600) is not None:  # this process recorded (or saw) it already
        return

    def record() -> None:
        from django.core.cache import cache

        from portal.accounts.models import User
        from portal.audit.services import Actor, audit_record
        from workspaces.models import Workspace

        # cache.add is atomic (SET NX on Redis): of many web processes, one records the hour.
        if not cache.add(f"dockyard:nb-token-use:{caller.token_digest}:{workspace_id}:{hour}", 1, timeout=3600):
            return
        workspace = Workspace.objects.filter(pk=workspace_id).select_related("team").first()
        user = User.objects.filter(pk=caller.user_id).first()
        if workspace is None or user is None:
            return
        audit_record(
            actor=Actor.for_user(user, ip=ip, token_name=caller.token_name),
            action="workspace.open",
            target=workspace,
            team=workspace.team,
            details={"name": workspace.name, "via": "token"},
        )

    await _in_thread(record)()
    _token_uses.put(seen, True)
