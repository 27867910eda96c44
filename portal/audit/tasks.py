"""Audit tasks run by beat."""

from __future__ import annotations

from celery import shared_task

from portal.audit.checkpoints import checkpoint_create


@shared_task(name="audit.checkpoint", acks_late=True)
def audit_checkpoint() -> int | None:
    """Writes a signed checkpoint of the chain head; returns its event id.

    Safe to run twice (acks_late may redeliver it): a second checkpoint of the same head is
    just one more line that must match.
    """
    checkpoint = checkpoint_create()
    return checkpoint.event_id if checkpoint else None
