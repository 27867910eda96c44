"""Celery tasks of the quotas app: the admission pass, after releases and from beat."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache

from portal.audit.services import Actor
from portal.quotas.services import admission_pass
from portal.quotas.services.queue import ADMISSION_QUEUED_FLAG
from portal.runtime import RuntimeError_


@shared_task(name="quotas.admission_pass", acks_late=True)
def admission_pass_task() -> dict:
    """Admits what fits from the waiting queue.

    Safe to run twice or after a crash (hence `acks_late`): a pass admits only requests still
    waiting, under the team and inventory locks, so a second run finds them settled. The
    pending flag is cleared before reading, so a release that commits during this pass
    queues the next one.
    """
    cache.delete(ADMISSION_QUEUED_FLAG)
    result = admission_pass(actor=Actor.system())
    return {"admitted": len(result.admitted), "waiting": result.waiting, "held_gpus": result.held_gpus}


@shared_task(name="quotas.inventory_sync", acks_late=True)
def inventory_sync_task() -> dict:
    """Brings the GPU inventory in line with the runtime's capacity. Idempotent: a second run
    finds nothing to change."""
    from portal.quotas.services.inventory import gpu_inventory_discover

    result = gpu_inventory_discover(actor=Actor.system())
    return {"added": result.added, "changed": result.changed, "missing": result.missing}


@shared_task(name="quotas.team_sync", acks_late=True, autoretry_for=(RuntimeError_,), retry_backoff=2, max_retries=5)
def team_sync_task(team_id: int) -> None:
    """Mirrors a team's changed limits into the runtime (a no-op on Docker). Idempotent."""
    from portal.accounts.models import Team
    from portal.quotas.services.quota import team_runtime_limits
    from portal.runtime import get_backend

    team = Team.objects.filter(pk=team_id).first()
    if team is not None:
        get_backend().team_sync(team.slug, team_runtime_limits(team=team))
