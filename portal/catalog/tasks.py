"""Catalog work for the `builds` queue."""

from __future__ import annotations

from celery import shared_task

from portal.catalog import services
from portal.runtime import RuntimeError_

# Engine hiccups (unreachable, timeouts) are retried with growing delays; after this many
# the build is marked failed with the last error, so nothing stays "running" for ever.
BUILD_MAX_RETRIES = 5


@shared_task(bind=True, name="catalog.build_image", acks_late=True, max_retries=BUILD_MAX_RETRIES)
def build_image_task(self, build_id: int) -> None:
    """Builds or pulls one revision. Safe to run twice (build_claim): with acks_late, a build
    whose worker died is redelivered and redone, reusing the engine's cached layers."""
    try:
        services.build_run(build_id=build_id)
    except RuntimeError_ as error:
        if self.request.retries >= self.max_retries:
            services.build_give_up(build_id=build_id, error=error)
            return
        raise self.retry(exc=error, countdown=min(300, 10 * 2**self.request.retries)) from error
