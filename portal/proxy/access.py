"""Who may use a workspace through the proxy, decided in the database and cached briefly."""

from __future__ import annotations

import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from portal.accounts.models import token_digest
from portal.accounts.services import token_authenticate


@dataclass(frozen=True)
class Decision:
    allowed: bool
    running: bool = False
    upstream: str = ""  # host:port of Jupyter inside the workload network
    token: str = ""  # Jupyter's token, added server-side
    owner_id: int | None = None


NOT_FOUND = Decision(allowed=False)
NOT_RUNNING_TTL_S = 0.2
_cache: dict[tuple[int, str], tuple[float, Decision]] = {}


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


async def decide(*, user_id: int, workspace_id: str) -> Decision:
    """May this person use this workspace now? Cached for DOCKYARD_PROXY_AUTH_CACHE_S at most,
    so a revoked share or a stopped workspace takes effect within that time."""
    key = (user_id, workspace_id)
    now = time.monotonic()
    cached = _cache.get(key)
    if cached and cached[0] > now:
        return cached[1]
    decision = await sync_to_async(_decide, thread_sensitive=False)(user_id, workspace_id)
    # "Allowed but not running yet" changes by itself within seconds (Jupyter coming up): it
    # is kept only briefly, so the first request after the start gets through at once.
    ttl = settings.DOCKYARD_PROXY_AUTH_CACHE_S
    if decision.allowed and not decision.running:
        ttl = min(ttl, NOT_RUNNING_TTL_S)
    _cache[key] = (now + ttl, decision)
    if len(_cache) > 10_000:  # bound memory: drop expired entries
        for stale in [k for k, (expires, _) in _cache.items() if expires <= now]:
            _cache.pop(stale, None)
    return decision


def forget() -> None:
    """Drops every cached decision (tests, and after a change that must apply at once)."""
    _cache.clear()
    _token_cache.clear()


_token_cache: dict[str, tuple[float, int | None]] = {}


async def user_id_for_token(raw: str) -> int | None:
    """The person behind an API token, cached like access decisions (a revoked token stops
    working within DOCKYARD_PROXY_AUTH_CACHE_S), so a script's every request is not a query."""
    key = token_digest(raw)
    now = time.monotonic()
    cached = _token_cache.get(key)
    if cached and cached[0] > now:
        return cached[1]
    token = await sync_to_async(token_authenticate, thread_sensitive=False)(raw=raw)
    user_id = token.user_id if token else None
    _token_cache[key] = (now + settings.DOCKYARD_PROXY_AUTH_CACHE_S, user_id)
    if len(_token_cache) > 10_000:
        for stale in [k for k, (expires, _) in _token_cache.items() if expires <= now]:
            _token_cache.pop(stale, None)
    return user_id


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

    return await sync_to_async(record, thread_sensitive=False)()
