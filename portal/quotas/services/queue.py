"""The waiting queue and the admission pass that drains it.

A pass reads everything it needs in a fixed number of queries (waiting requests, held
resources, month GPU-hours, recent GPU-hours for fair share, per-person limits, free GPUs),
decides in memory, and writes the admissions in bulk: its cost does not grow with a query per
queued request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from portal.accounts.models import Team, User
from portal.audit.services import Actor, audit_record
from portal.quotas import selectors
from portal.quotas.limits import Usage, limits_of
from portal.quotas.models import Allocation, AllocationGpu, QueuedRequest, QueueState, ResourceProfile, UserQuota
from portal.quotas.placement import FreeGpu, FreePool
from portal.quotas.services.admission import (
    admission_details,
    allocation_build,
    allocation_open_for,
    free_gpu_list,
    inventory_lock,
    inventory_pool,
    inventory_refusal,
    request_check,
    request_never_fits,
    team_quota_lock,
)
from portal.quotas.values import AdmissionRequest, Refusal, Resources, WorkloadRef

# Set while an admission pass is queued but not started, so a burst of releases queues one
# pass, not one each. It expires on its own in case the task is lost; beat covers the gap.
ADMISSION_QUEUED_FLAG = "quotas:admission-pass-pending"

AdmittedListener = Callable[[list[tuple[WorkloadRef, int]]], None]
_admitted_listeners: dict[str, AdmittedListener] = {}


def admission_listener_register(*, kind: str, listener: AdmittedListener) -> None:
    """Lets the app owning a workload kind hear, after commit, which of its workloads a pass
    admitted: `listener([(workload, allocation_id), ...])`, typically enqueuing their start."""
    _admitted_listeners[kind] = listener


# --- Entering and leaving the queue -----------------------------------------------------------


def queue_enqueue(*, request: AdmissionRequest, actor: Actor, priority: int = 0) -> QueuedRequest:
    """Puts a workload in the queue (once: enqueuing it again returns the waiting entry).

    An admission pass is queued on commit, so work that fits already is admitted promptly.
    """
    with transaction.atomic():
        if allocation_open_for(workload=request.workload) is not None:
            raise ValidationError(f"{request.workload} is already admitted.")
        waiting = _waiting(request.workload).first()
        if waiting is not None:
            return waiting
        entry = QueuedRequest.objects.create(**_entry_fields(request), priority=priority, enqueued_at=timezone.now())
        audit_record(
            actor=actor,
            action="quota.enqueue",
            target=entry,
            team=request.team,
            details={**admission_details(request=request, gpus=[]), "priority": priority},
        )
        admission_pass_soon()
    return entry


def queue_cancel(*, workload: WorkloadRef, actor: Actor) -> bool:
    """Takes a workload out of the queue; True if it was waiting (idempotent)."""
    with transaction.atomic():
        entry = _waiting(workload).select_for_update().select_related("team").first()
        if entry is None:
            return False
        entry.state, entry.decided_at = QueueState.CANCELLED, timezone.now()
        entry.save(update_fields=["state", "decided_at"])
        audit_record(
            actor=actor, action="quota.dequeue", target=entry, team=entry.team, details={"workload": str(workload)}
        )
    return True


def _waiting(workload: WorkloadRef):
    return QueuedRequest.objects.filter(
        workload_kind=workload.kind, workload_uid=workload.uid, state=QueueState.WAITING
    )


def _entry_fields(request: AdmissionRequest) -> dict:
    resources = request.resources
    return {
        "workload_kind": request.workload.kind,
        "workload_uid": request.workload.uid,
        "team": request.team,
        "user": request.user,
        "profile": request.profile,
        "cpus": resources.cpus,
        "memory_gib": resources.memory_gib,
        "gpus": resources.gpus,
        "gpu_model": resources.gpu_model,
    }


def queued_request_as_admission(entry: QueuedRequest) -> AdmissionRequest:
    return AdmissionRequest(
        workload=WorkloadRef(entry.workload_kind, entry.workload_uid),
        team=entry.team,
        user=entry.user,
        resources=Resources(entry.cpus, entry.memory_gib, entry.gpus, entry.gpu_model),
        profile=entry.profile,
    )


def admission_pass_soon() -> None:
    """Queues one admission pass after the current transaction commits."""

    def enqueue() -> None:
        from portal.quotas.tasks import admission_pass_task

        if cache.add(ADMISSION_QUEUED_FLAG, 1, timeout=settings.DOCKYARD_ADMISSION_PASS_PENDING_TTL_S):
            admission_pass_task.delay()

    transaction.on_commit(enqueue, robust=True)  # a broker or cache outage: beat runs a pass anyway


# --- The admission pass -----------------------------------------------------------------------


@dataclass
class PassResult:
    admitted: list[QueuedRequest] = field(default_factory=list)
    waiting: int = 0
    held_gpus: int = 0  # GPUs set aside for requests past the starvation limit


@dataclass
class _Ledger:
    """What the pass has decided so far: use per team and person, and holds for starving work."""

    team_used: dict[int, Usage]
    user_used: dict[tuple[int, int], Usage]
    team_limits: dict[int, dict]
    user_limits: dict[tuple[int, int], dict]
    pool: FreePool
    held: set = field(default_factory=set)  # team ids and (team, user) keys whose quota is held
    held_gpus: int = 0
    inventory: FreePool | None = None  # every healthy GPU, read once per pass if a hold needs it

    def inventory_pool(self) -> FreePool:
        if self.inventory is None:
            self.inventory = inventory_pool()
        return self.inventory


def admission_pass(*, actor: Actor | None = None, now: datetime | None = None) -> PassResult:
    """Admits waiting requests in queue order while limits and free GPUs allow.

    Order: priority (higher first), then fair share (the team with the fewest GPU-hours over
    the fair-share window first), then age. A request that does not fit is skipped, so smaller
    ones behind it can run (backfill), unless it has waited longer than
    DOCKYARD_QUEUE_STARVATION_S: then what it waits for is held, so that the work ahead of it
    finishing frees capacity for it rather than for newcomers.
    """
    actor = actor or Actor.system()
    now = now or timezone.now()
    with transaction.atomic():
        team_ids = sorted(set(QueuedRequest.objects.filter(state=QueueState.WAITING).values_list("team_id", flat=True)))
        if not team_ids:
            return PassResult()
        quotas = team_quota_lock(team_ids=team_ids)
        inventory_lock()
        waiting = _waiting_in_order(team_ids=team_ids, now=now)
        ledger = _ledger(team_ids=team_ids, quotas=quotas)
        decisions, settled = _decide(waiting=waiting, ledger=ledger, now=now)
        _write(decisions=decisions, settled=settled, actor=actor, now=now)
    _notify([entry for entry, _ in decisions] + settled)
    return PassResult(
        admitted=[entry for entry, _ in decisions], waiting=len(waiting) - len(decisions) - len(settled),
        held_gpus=ledger.held_gpus,
    )  # fmt: skip


def _waiting_in_order(*, team_ids: list[int], now: datetime) -> list[QueuedRequest]:
    # A workload admitted directly while it also waited already holds an allocation; the
    # annotation finds those in the same query so they are settled, not admitted twice.
    open_allocation = Allocation.objects.filter(
        workload_kind=OuterRef("workload_kind"), workload_uid=OuterRef("workload_uid"), closed_at__isnull=True
    ).values("pk")[:1]
    waiting = list(
        QueuedRequest.objects.filter(state=QueueState.WAITING, team_id__in=team_ids).annotate(
            open_allocation_id=Subquery(open_allocation)
        )
    )
    # Thousands of entries share a few teams, people and profiles: one object each, read once,
    # rather than three more per entry from a join.
    teams = Team.objects.in_bulk({q.team_id for q in waiting})
    users = User.objects.in_bulk({q.user_id for q in waiting})
    profiles = ResourceProfile.objects.in_bulk({q.profile_id for q in waiting if q.profile_id is not None})
    for entry in waiting:
        entry.team, entry.user = teams[entry.team_id], users[entry.user_id]
        entry.profile = profiles.get(entry.profile_id)
    window = timedelta(hours=settings.DOCKYARD_FAIR_SHARE_WINDOW_H)
    share = selectors.gpu_hours_by_team(since=now - window, team_ids=team_ids)
    waiting.sort(key=lambda q: (-q.priority, share.get(q.team_id, selectors.ZERO), q.enqueued_at, str(q.pk)))
    return waiting


def _ledger(*, team_ids: list[int], quotas: dict) -> _Ledger:
    start, end = selectors.month_bounds()
    held = selectors.open_usage_by_team_user(team_ids=team_ids)
    hours = selectors.hours_by_team_user(start=start, end=end, team_ids=team_ids, gpu_only=True)
    user_used = {
        key: selectors.usage_combine(held=held.get(key), gpu_hours=hours[key].gpu_hours if key in hours else 0)
        for key in {*held, *hours}
    }
    team_used = {
        team_id: selectors.usage_total(u for key, u in user_used.items() if key[0] == team_id) for team_id in team_ids
    }
    user_limits = {
        (q.team_id, q.user_id): limits_of(q) for q in UserQuota.objects.filter(team_id__in=team_ids)
    }  # fmt: skip
    return _Ledger(
        team_used=team_used,
        user_used=user_used,
        team_limits={team_id: limits_of(quota) for team_id, quota in quotas.items()},
        user_limits=user_limits,
        pool=FreePool(free_gpu_list()),
    )


def _decide(
    *, waiting: list[QueuedRequest], ledger: _Ledger, now: datetime
) -> tuple[list[tuple[QueuedRequest, list[FreeGpu]]], list[QueuedRequest]]:
    starving_before = now - timedelta(seconds=settings.DOCKYARD_QUEUE_STARVATION_S)
    decisions, settled = [], []
    for entry in waiting:
        if entry.open_allocation_id is not None:
            settled.append(entry)
            continue
        if entry.team_id in ledger.held or (entry.team_id, entry.user_id) in ledger.held:
            continue
        request = queued_request_as_admission(entry)
        gpus, refusal = _try(request=request, ledger=ledger)
        if refusal is None:
            _take(request=request, gpus=gpus, ledger=ledger)
            decisions.append((entry, gpus))
        elif entry.enqueued_at <= starving_before and not _never_fits(request=request, ledger=ledger):
            _hold(entry=entry, refusal=refusal, ledger=ledger)
    return decisions, settled


def _try(*, request: AdmissionRequest, ledger: _Ledger) -> tuple[list[FreeGpu], Refusal | None]:
    team_id, key = request.team.pk, (request.team.pk, request.user.pk)
    refusal = request_check(
        request=request,
        team_limits=ledger.team_limits.get(team_id, {}),
        user_limits=ledger.user_limits.get(key, {}),
        team_used=ledger.team_used.get(team_id, Usage()),
        user_used=ledger.user_used.get(key, Usage()),
    )
    if refusal is not None or not request.resources.gpus:
        return [], refusal
    chosen = ledger.pool.pick(count=request.resources.gpus, model=request.resources.gpu_model)
    if chosen is None:
        return [], inventory_refusal(request=request, pool=ledger.pool)
    return chosen, None


def _never_fits(*, request: AdmissionRequest, ledger: _Ledger) -> bool:
    # Work that could not run even on an idle cluster (limits lowered, GPUs retired since it
    # queued) would hold capacity for ever and starve everyone behind it for nothing.
    team_id, key = request.team.pk, (request.team.pk, request.user.pk)
    refusal = request_never_fits(
        request=request, team_limits=ledger.team_limits.get(team_id, {}),
        user_limits=ledger.user_limits.get(key, {}), inventory=ledger.inventory_pool,
    )  # fmt: skip
    return refusal is not None


def _take(*, request: AdmissionRequest, gpus: list[FreeGpu], ledger: _Ledger) -> None:
    team_id, key = request.team.pk, (request.team.pk, request.user.pk)
    kind = request.workload.kind
    ledger.team_used[team_id] = ledger.team_used.get(team_id, Usage()).plus(kind=kind, resources=request.resources)
    ledger.user_used[key] = ledger.user_used.get(key, Usage()).plus(kind=kind, resources=request.resources)
    ledger.pool.take(gpus)


def _hold(*, entry: QueuedRequest, refusal: Refusal, ledger: _Ledger) -> None:
    """Reserves what a starving request waits for: a node's GPUs, or its team's or person's quota.

    A spent month GPU-hours budget is not held: it comes back with the month, not with
    releases, and holding it would stop the team's CPU-only work for nothing.
    """
    if refusal.is_capacity:
        ledger.held_gpus += len(ledger.pool.hold_for(model=entry.gpu_model))
    elif refusal.dimension != "gpu_hours_per_month":
        ledger.held.add(entry.team_id if refusal.scope == "team" else (entry.team_id, entry.user_id))


def _write(
    *, decisions: list[tuple[QueuedRequest, list[FreeGpu]]], settled: list[QueuedRequest], actor: Actor, now: datetime
) -> None:
    requests = [queued_request_as_admission(entry) for entry, _ in decisions]
    allocations = Allocation.objects.bulk_create([allocation_build(request=r, now=now) for r in requests])
    AllocationGpu.objects.bulk_create(
        [
            AllocationGpu(allocation=a, device_id=g.id)
            for a, (_, gpus) in zip(allocations, decisions, strict=True)
            for g in gpus
        ]
    )
    for allocation, (entry, _) in zip(allocations, decisions, strict=True):
        entry.state, entry.allocation, entry.decided_at = QueueState.ADMITTED, allocation, now
    for entry in settled:
        entry.state, entry.allocation_id, entry.decided_at = QueueState.ADMITTED, entry.open_allocation_id, now
    # One statement for all of them: each entry's allocation is its workload's open one (at
    # most one per workload), found by the database rather than spelt out row by row.
    open_allocation = Allocation.objects.filter(
        workload_kind=OuterRef("workload_kind"), workload_uid=OuterRef("workload_uid"), closed_at__isnull=True
    ).values("pk")[:1]
    QueuedRequest.objects.filter(pk__in=[e.pk for e, _ in decisions] + [e.pk for e in settled]).update(
        state=QueueState.ADMITTED, decided_at=now, allocation=Subquery(open_allocation)
    )
    for allocation, request, (entry, gpus) in zip(allocations, requests, decisions, strict=True):
        details = {
            **admission_details(request=request, gpus=gpus),
            "queued_s": round((now - entry.enqueued_at).total_seconds()),
        }
        audit_record(actor=actor, action="quota.admit", target=allocation, team=request.team, details=details)


def _notify(entries: list[QueuedRequest]) -> None:
    by_kind: dict[str, list[tuple[WorkloadRef, int]]] = {}
    for entry in entries:
        ref = WorkloadRef(entry.workload_kind, entry.workload_uid)
        by_kind.setdefault(entry.workload_kind, []).append((ref, entry.allocation_id))
    for kind, admitted in by_kind.items():
        listener = _admitted_listeners.get(kind)
        if listener is not None:
            transaction.on_commit(lambda listener=listener, admitted=admitted: listener(admitted))
