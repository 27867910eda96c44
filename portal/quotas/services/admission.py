"""Admitting a workload (opening its allocation) and releasing it.

Locks are always taken in the same order, by `admit` and by the admission pass alike:
team quota rows (ascending id), then the GPU inventory lock, then the audit chain lock (taken
by `audit_record`, the last write). One order means two admissions can wait on each other but
never deadlock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.quotas import selectors
from portal.quotas.limits import Usage, limits_check, limits_of
from portal.quotas.models import (
    Allocation,
    AllocationGpu,
    GpuDevice,
    GpuHealth,
    QueuedRequest,
    QueueState,
    TeamQuota,
    UserQuota,
)
from portal.quotas.placement import FreeGpu, FreePool
from portal.quotas.values import AdmissionRequest, Refusal, WorkloadRef

# Any 64-bit number: the PostgreSQL advisory lock key that serialises choosing GPUs. Devices
# are shared by every team, so the team lock alone cannot stop two teams taking one device.
INVENTORY_LOCK_KEY = 0x6770752D696E76  # "gpu-inv"


def admit(*, request: AdmissionRequest, actor: Actor) -> Allocation | Refusal:
    """Opens an allocation for the workload if every limit allows it and GPUs are free.

    Returns the allocation (the one already open, if the workload was admitted before) or a
    Refusal naming the limit and the numbers. Either way the outcome is audited, and a
    refusal commits its audit event.
    """
    with transaction.atomic():
        team_quota = team_quota_lock(team_ids=[request.team.pk])[request.team.pk]
        existing = allocation_open_for(workload=request.workload)
        if existing is not None:
            return existing
        refusal = _quota_refusal(request=request, team_quota=team_quota)
        gpus: list[FreeGpu] = []
        if refusal is None and request.resources.gpus:
            gpus, refusal = _gpus_for(request)
        if refusal is not None:
            _audit_refusal(request=request, refusal=refusal, actor=actor)
            return refusal
        return allocation_open(request=request, gpus=gpus, actor=actor, now=timezone.now())


def admit_preview(*, request: AdmissionRequest) -> Refusal | None:
    """What `admit` would say now, without locking or writing anything: for forms that show,
    before anything is created, which profiles fit. (Only `admit` decides.)"""
    team_quota = TeamQuota.objects.filter(team=request.team).first() or TeamQuota(team=request.team)
    refusal = _quota_refusal(request=request, team_quota=team_quota)
    if refusal is None and request.resources.gpus:
        pool = FreePool(free_gpu_list())
        if pool.pick(count=request.resources.gpus, model=request.resources.gpu_model) is None:
            refusal = inventory_refusal(request=request, pool=pool)
    return refusal


def admission_never_fits(*, request: AdmissionRequest) -> Refusal | None:
    """A refusal if the request could not be admitted even with nothing else running: it asks
    for more than a limit allows, or more GPUs (of its model) than any one node has. Such
    work is refused outright rather than queued for ever."""
    team_quota = TeamQuota.objects.filter(team=request.team).first() or TeamQuota(team=request.team)
    user_quota = UserQuota.objects.filter(team=request.team, user=request.user).first()
    return request_never_fits(
        request=request, team_limits=limits_of(team_quota), user_limits=limits_of(user_quota),
        inventory=inventory_pool,
    )  # fmt: skip


def inventory_pool() -> FreePool:
    """Every healthy GPU, as if none were taken: what the biggest request could ever get."""
    rows = GpuDevice.objects.filter(health=GpuHealth.HEALTHY).values_list(
        "pk", "node_id", "node__name", "index", "model"
    )
    return FreePool(FreeGpu(*row) for row in rows)


def request_never_fits(
    *, request: AdmissionRequest, team_limits: dict, user_limits: dict, inventory: Callable[[], FreePool]
) -> Refusal | None:
    """The limit that refuses the request even with nothing else running, or None. The GPU
    inventory is asked for (`inventory()`) only when the limits let the request through."""
    refusal = request_check(
        request=request, team_limits=team_limits, user_limits=user_limits, team_used=Usage(), user_used=Usage()
    )
    if refusal is None and request.resources.gpus:
        pool = inventory()
        if pool.pick(count=request.resources.gpus, model=request.resources.gpu_model) is None:
            refusal = inventory_refusal(request=request, pool=pool)
    return refusal


def release(*, workload: WorkloadRef, actor: Actor, reason: str = "") -> Allocation | None:
    """Closes the workload's allocation (and drops it from the queue if it still waits).

    Idempotent: releasing a workload with nothing open changes nothing and returns None.
    A release frees capacity, so an admission pass is queued once the change commits.
    """
    from portal.quotas.services.queue import admission_pass_soon, queue_cancel

    with transaction.atomic():
        queue_cancel(workload=workload, actor=actor)
        allocation = (
            Allocation.objects.select_for_update()
            .select_related("team", "user")
            .filter(workload_kind=workload.kind, workload_uid=workload.uid, closed_at__isnull=True)
            .first()
        )
        if allocation is None:
            return None
        now = timezone.now()
        allocation.closed_at, allocation.close_reason = now, reason[:200]
        allocation.save(update_fields=["closed_at", "close_reason"])
        AllocationGpu.objects.filter(allocation=allocation).update(closed_at=now)
        audit_record(
            actor=actor,
            action="quota.release",
            target=allocation,
            team=allocation.team,
            details={"workload": str(workload), "user": allocation.user.username, "reason": reason},
        )
        admission_pass_soon()
    return allocation


def allocation_open_for(*, workload: WorkloadRef) -> Allocation | None:
    return Allocation.objects.filter(
        workload_kind=workload.kind, workload_uid=workload.uid, closed_at__isnull=True
    ).first()


def allocation_device_ids(*, allocation: Allocation) -> list[str]:
    """The UUIDs of the GPUs an allocation holds, in device order (for the runtime)."""
    return list(allocation.gpu_rows.order_by("device__index").values_list("device__uuid", flat=True))


def allocations_device_ids(*, allocation_ids: list[int]) -> dict[int, list[str]]:
    """allocation_device_ids for many allocations in one query (those with no GPUs map to [])."""
    found: dict[int, list[str]] = {pk: [] for pk in allocation_ids}
    rows = (
        AllocationGpu.objects.filter(allocation_id__in=allocation_ids)
        .order_by("allocation_id", "device__index").values_list("allocation_id", "device__uuid")
    )  # fmt: skip
    for allocation_id, uuid in rows:
        found[allocation_id].append(uuid)
    return found


# --- Locks ------------------------------------------------------------------------------------


def team_quota_lock(*, team_ids: list[int]) -> dict[int, TeamQuota]:
    """Locks the quota rows of these teams (making missing ones, all limits null) until commit.

    Every admission for a team passes through its row, so two admissions in one team are
    serialised and each sees the other's allocation when it sums what is open.
    """
    TeamQuota.objects.bulk_create([TeamQuota(team_id=pk) for pk in team_ids], ignore_conflicts=True)
    rows = TeamQuota.objects.select_for_update().filter(team_id__in=team_ids).order_by("team_id")
    return {row.team_id: row for row in rows}


def inventory_lock() -> None:
    """Serialises choosing GPUs across all teams until commit (SQLite: already serialised)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [INVENTORY_LOCK_KEY])


def free_gpu_list() -> list[FreeGpu]:
    """Every device that may take new work now, with its node (one query)."""
    rows = GpuDevice.objects.allocatable().values_list("pk", "node_id", "node__name", "index", "model")
    return [FreeGpu(*row) for row in rows]


# --- Deciding ---------------------------------------------------------------------------------


def _quota_refusal(*, request: AdmissionRequest, team_quota: TeamQuota) -> Refusal | None:
    user_quota = UserQuota.objects.filter(team=request.team, user=request.user).first()
    # Month GPU-hours cost a query over the month's allocations: only read them if they matter.
    budgeted = any(q is not None and q.gpu_hours_per_month is not None for q in (team_quota, user_quota))
    team_used, user_used = _usage_now(request=request, month_needed=bool(request.resources.gpus) and budgeted)
    return request_check(
        request=request,
        team_limits=limits_of(team_quota),
        user_limits=limits_of(user_quota),
        team_used=team_used,
        user_used=user_used,
    )


def request_check(
    *, request: AdmissionRequest, team_limits: dict, user_limits: dict, team_used: Usage, user_used: Usage
) -> Refusal | None:
    """The person's own limits first (the more specific reason), then the team's."""
    common = {"kind": request.workload.kind, "resources": request.resources}
    user_name = f"{request.user.get_username()} in {request.team.slug}"
    return limits_check(limits=user_limits, used=user_used, scope="user", name=user_name, **common) or limits_check(
        limits=team_limits, used=team_used, scope="team", name=request.team.slug, **common
    )


def _usage_now(*, request: AdmissionRequest, month_needed: bool) -> tuple[Usage, Usage]:
    team_id, user_id = request.team.pk, request.user.pk
    held = selectors.open_usage_by_team_user(team_ids=[team_id])
    hours: dict = {}
    if month_needed:
        start, end = selectors.month_bounds()
        hours = selectors.hours_by_team_user(start=start, end=end, team_ids=[team_id], gpu_only=True)
    team_hours = sum((h.gpu_hours for h in hours.values()), selectors.ZERO)
    user_hours = hours[(team_id, user_id)].gpu_hours if (team_id, user_id) in hours else selectors.ZERO
    team_used = selectors.usage_combine(held=selectors.usage_total(held.values()), gpu_hours=team_hours)
    user_used = selectors.usage_combine(held=held.get((team_id, user_id)), gpu_hours=user_hours)
    return team_used, user_used


def _gpus_for(request: AdmissionRequest) -> tuple[list[FreeGpu], Refusal | None]:
    inventory_lock()
    pool = FreePool(free_gpu_list())
    resources = request.resources
    chosen = pool.pick(count=resources.gpus, model=resources.gpu_model)
    if chosen is None:
        return [], inventory_refusal(request=request, pool=pool)
    return chosen, None


def inventory_refusal(*, request: AdmissionRequest, pool: FreePool) -> Refusal:
    model = request.resources.gpu_model
    what = f"{model} GPUs" if model else "GPUs"
    return Refusal("inventory", f"{what} on one node", "gpus", pool.free_count(model=model), 0, request.resources.gpus)


# --- Writing ----------------------------------------------------------------------------------


def allocation_open(*, request: AdmissionRequest, gpus: list[FreeGpu], actor: Actor, now: datetime) -> Allocation:
    """Writes the allocation and its device rows, and audits the admission."""
    allocation = allocation_build(request=request, now=now)
    allocation.save(force_insert=True)
    AllocationGpu.objects.bulk_create([AllocationGpu(allocation=allocation, device_id=g.id) for g in gpus])
    # Admitted directly while also waiting in the queue: the queue entry is settled too.
    QueuedRequest.objects.filter(
        workload_kind=request.workload.kind, workload_uid=request.workload.uid, state=QueueState.WAITING
    ).update(state=QueueState.ADMITTED, allocation=allocation, decided_at=now)
    audit_record(
        actor=actor,
        action="quota.admit",
        target=allocation,
        team=request.team,
        details=admission_details(request=request, gpus=gpus),
    )
    return allocation


def allocation_build(*, request: AdmissionRequest, now: datetime) -> Allocation:
    resources = request.resources
    return Allocation(
        workload_kind=request.workload.kind,
        workload_uid=request.workload.uid,
        team=request.team,
        user=request.user,
        profile=request.profile,
        cpus=resources.cpus,
        memory_gib=resources.memory_gib,
        gpus=resources.gpus,
        gpu_model=resources.gpu_model,
        opened_at=now,
    )


def admission_details(*, request: AdmissionRequest, gpus: list[FreeGpu]) -> dict:
    resources = request.resources
    return {
        "workload": str(request.workload),
        "user": request.user.get_username(),
        "cpus": resources.cpus,
        "memory_gib": resources.memory_gib,
        "gpus": [f"{g.node_name}/{g.index}" for g in gpus],
    }


def _audit_refusal(*, request: AdmissionRequest, refusal: Refusal, actor: Actor) -> None:
    from portal.core.metrics import ADMISSION_REFUSALS

    ADMISSION_REFUSALS.labels(scope=refusal.scope, limit=refusal.dimension).inc()
    audit_record(
        actor=actor,
        action="quota.admit",
        target_type="quotas.workload",
        target_id=str(request.workload.uid),
        target_repr=str(request.workload),
        team=request.team,
        outcome=Outcome.DENIED,
        details={**admission_details(request=request, gpus=[]), "refused": refusal.message},
    )
