"""Workspace steps for the `runtime` queue: short calls to the engine, each idempotent."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from portal.runtime import RuntimeError_
from portal.workloads.services import IllegalTransition
from workspaces import services

# Engine errors (unreachable, timeouts) are retried with growing delays, this many times.
RUNTIME_RETRIES = 5


@shared_task(
    name="workspaces.start",
    acks_late=True,
    autoretry_for=(RuntimeError_,),
    retry_backoff=2,
    max_retries=RUNTIME_RETRIES,
)
def start_task(workspace_id: str) -> None:
    """Pending → starting: image present, container created. Does nothing in any other state."""
    if services.workspace_run_start(workspace_id=workspace_id):
        ready_task.delay(workspace_id)


@shared_task(name="workspaces.ready", acks_late=True)
def ready_task(workspace_id: str) -> None:
    """Looks once whether Jupyter answers; if not yet, looks again shortly (until the deadline).

    Each look is one short request, so no worker is held while Jupyter starts.
    """
    try:
        outcome = services.workspace_check_ready(workspace_id=workspace_id)
    except RuntimeError_:
        outcome = None  # the engine hiccuped: look again
    if outcome is None:
        ready_task.apply_async((workspace_id,), countdown=settings.DOCKYARD_WORKSPACE_READY_POLL_S)


@shared_task(
    name="workspaces.stop", acks_late=True, autoretry_for=(RuntimeError_,), retry_backoff=2, max_retries=RUNTIME_RETRIES
)
def stop_task(workspace_id: str) -> None:
    services.workspace_run_stop(workspace_id=workspace_id)


@shared_task(name="workspaces.cull", acks_late=True)
def cull_task() -> int:
    """Looks at every running workspace (beat, every DOCKYARD_CULL_INTERVAL_S); returns how
    many it stopped. Safe to run twice: a stopped workspace is no longer looked at."""
    from workspaces.models import Workspace, WorkspaceState

    stopped = 0
    for workspace_id in Workspace.objects.filter(state=WorkspaceState.RUNNING).values_list("pk", flat=True):
        try:
            decision = services.workspace_cull_check(workspace_id=workspace_id)
        except IllegalTransition:
            continue  # stopped or failed meanwhile by someone else: nothing to cull
        stopped += bool(decision and decision.cull_now)
    return stopped
