"""The reconcile pass, run by beat every DOCKYARD_RECONCILE_INTERVAL_S and on demand."""

from __future__ import annotations

from celery import shared_task

from portal.workloads.reconcile import reconcile_pass


@shared_task(name="workloads.reconcile", acks_late=True)
def reconcile_task() -> dict:
    """Safe when two schedulers overlap: a pass takes a lock, and the second returns at once."""
    corrections = reconcile_pass()
    if corrections is None:
        return {"skipped": "another pass is running"}
    return {"corrections": [f"{c.kind} {c.workload_kind} {c.uid}: {c.reason}" for c in corrections]}
