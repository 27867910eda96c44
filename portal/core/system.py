"""The platform admins' "system" page: health of every part, when each periodic pass last
ran, the backend's capacity, the reconciler's recent corrections, and a reconcile on demand."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from portal.audit.models import AuditEvent
from portal.audit.services import Actor, audit_record
from portal.core.health import OK, run_checks
from portal.core.permissions import staff_required
from portal.runtime import RuntimeError_, get_backend

PERIODIC_KEY = "dockyard:periodic:"
# A periodic task counts as late when it has not run for this many of its intervals.
LATE_AFTER_INTERVALS = 3


def periodic_run_record(*, task_name: str, state: str) -> None:
    """Called when a task ends: remembers when each periodic task (beat's schedule) last ran."""
    if task_name not in {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}:
        return
    try:
        cache.set(PERIODIC_KEY + task_name, {"at": timezone.now().isoformat(), "state": state}, timeout=None)
    except Exception:  # noqa: BLE001  (the cache being down must not fail the task)
        return


def periodic_status(*, now: datetime) -> list[dict]:
    names = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    try:
        seen = cache.get_many([PERIODIC_KEY + name for name in names])
    except Exception:  # noqa: BLE001  (shown as unknown when the cache is down)
        seen = {}
    rows = []
    for name, interval in sorted(names.items()):
        interval_s = interval.total_seconds() if hasattr(interval, "total_seconds") else float(interval)
        last = seen.get(PERIODIC_KEY + name)
        at = datetime.fromisoformat(last["at"]) if last else None
        age = (now - at).total_seconds() if at else None
        late = age is None or age > LATE_AFTER_INTERVALS * max(interval_s, 1)
        rows.append({"name": name, "interval_s": interval_s, "last_at": at, "age_s": age,
                     "state": last["state"] if last else "never seen", "late": late})  # fmt: skip
    return rows


def _backend_status() -> dict:
    backend = get_backend()
    try:
        nodes = backend.capacity()
        workloads = backend.list_managed()
    except RuntimeError_ as error:
        return {"name": backend.name, "error": error.user_message, "nodes": [], "workloads": 0}
    return {"name": backend.name, "error": "", "nodes": nodes, "workloads": len(workloads)}


@staff_required
def system(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    checks = run_checks()
    corrections = AuditEvent.objects.filter(action__startswith="reconcile.").order_by("-id")[:20]
    return render(request, "core/system.html", {
        "checks": [(name, value, value == OK) for name, value in checks.items()],
        "periodic": periodic_status(now=now),
        "backend": _backend_status(),
        "corrections": corrections,
        "reconcile_interval_s": settings.DOCKYARD_RECONCILE_INTERVAL_S,
    })  # fmt: skip


@require_POST
@staff_required
def reconcile_now(request: HttpRequest) -> HttpResponse:
    from portal.workloads.tasks import reconcile_task

    audit_record(actor=Actor.from_request(request), action="reconcile.request", details={"from": "system page"})
    reconcile_task.delay_on_commit()
    messages.success(request, "A reconcile pass is queued; its corrections appear below within seconds.")
    return redirect("system")
