"""Job steps for the `runtime` queue: short calls to the engine, each idempotent."""

from __future__ import annotations

from celery import shared_task
from django.core.cache import cache

from jobs import services
from portal.runtime import RuntimeError_

# Engine errors (unreachable, timeouts) are retried with growing delays, this many times.
RUNTIME_RETRIES = 5


@shared_task(name="jobs.start", acks_late=True, autoretry_for=(RuntimeError_,), retry_backoff=2,
             max_retries=RUNTIME_RETRIES)  # fmt: skip
def start_task(job_id: str) -> None:
    """Admitted → starting → running. Does nothing in any other state."""
    services.job_run_start(job_id=job_id)


@shared_task(name="jobs.settle", acks_late=True, autoretry_for=(RuntimeError_,), retry_backoff=2,
             max_retries=RUNTIME_RETRIES)  # fmt: skip
def settle_task(job_id: str, cause: str = "") -> None:
    """Ends an attempt whose container exited, timed out or was cancelled (see job_settle)."""
    services.job_settle(job_id=job_id, cause=cause)


@shared_task(name="jobs.watch", acks_late=True)
def watch_task() -> dict:
    """Looks at running jobs; while any job is active it looks again in DOCKYARD_JOB_WATCH_S.
    Beat runs it too, so a lost pass is made up for."""
    cache.delete(services.WATCH_FLAG)
    try:
        result = services.jobs_watch()
    except RuntimeError_:
        services.jobs_watch_soon()  # the engine hiccuped: look again
        raise
    if result.active:
        services.jobs_watch_soon()
    return {"settling": result.settling, "retried": result.retried, "active": result.active}
