"""Every change to quotas, the GPU inventory, allocations and the queue goes through here.

Workspaces, jobs, the API, the admin and Celery tasks call these functions; each writes its
audit event in the same transaction as the change.
"""

from __future__ import annotations

from portal.quotas.services.admission import admit, allocation_open_for, release
from portal.quotas.services.inventory import SyncResult, gpu_device_drain, gpu_inventory_sync
from portal.quotas.services.queue import (
    PassResult,
    admission_listener_register,
    admission_pass,
    queue_cancel,
    queue_enqueue,
)
from portal.quotas.services.quota import team_quota_set, user_quota_set

__all__ = [
    "PassResult",
    "SyncResult",
    "admission_listener_register",
    "admission_pass",
    "admit",
    "allocation_open_for",
    "gpu_device_drain",
    "gpu_inventory_sync",
    "queue_cancel",
    "queue_enqueue",
    "release",
    "team_quota_set",
    "user_quota_set",
]
