"""Reconciliation: what the database believes, compared with what the backend runs, and the
corrections that bring the two together.

Level-triggered and idempotent: each pass looks at the current state only, so a killed worker,
a restarted engine or a restarted portal converge on the next pass, and a pass right after
another finds nothing to correct. Each app registers a reconciler for its workload kind;
containers no app claims are removed (their volumes kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import structlog
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from portal.audit.services import Actor, audit_record
from portal.core.locks import exclusive
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import Observed


@dataclass(frozen=True)
class Correction:
    """One thing a pass changed. `kind`: gone (running, no container), exited (running, container
    ended), orphan (container nobody wants), stuck (past a deadline), missed (the database missed
    a step the backend took), redrive (a lost task queued again)."""

    kind: str
    workload_kind: str
    uid: str
    reason: str
    result: str = ""


@dataclass(frozen=True)
class Look:
    """What every reconciler gets: the backend's workloads (by uid) and the time."""

    observed: dict[str, Observed]
    engine_started_at: datetime | None
    now: datetime

    def engine_restarted(self, observed: Observed | None) -> bool:
        return engine_restarted(observed, self.engine_started_at)

    def past_grace(self, since: datetime) -> bool:
        return (self.now - since).total_seconds() >= settings.DOCKYARD_RECONCILE_GRACE_S


def engine_restarted(observed: Observed | None, engine_started_at: datetime | None) -> bool:
    """True when the workload's container was started before the engine's current process:
    the engine's restart is what stopped it."""
    return bool(
        observed is not None and engine_started_at and observed.started_at
        and observed.started_at < engine_started_at
    )  # fmt: skip


class Reconciler(Protocol):
    kind: str

    def check(self, look: Look) -> list[Correction]:
        """Corrects this kind's workloads that the database says are active."""

    def wants(self, uids: set[str]) -> set[str]:
        """Which of these uids (containers on the backend) belong to a workload that should
        have a container now."""

    def orphan(self, observed: Observed, look: Look) -> Correction | None:
        """Cleans up a container of this kind that no workload wants (e.g. keeping its log first)."""


_reconcilers: dict[str, Reconciler] = {}


def reconciler_register(reconciler: Reconciler) -> None:
    _reconcilers[reconciler.kind] = reconciler


def redrive(*, uid: str, step: str, task) -> bool:
    """Queues `task(uid)` again, at most once per DOCKYARD_RECONCILE_REDRIVE_S per workload and
    step: for a step whose task was lost (a worker killed, the broker down)."""
    if not cache.add(f"reconcile:redrive:{step}:{uid}", 1, timeout=settings.DOCKYARD_RECONCILE_REDRIVE_S):
        return False
    task.delay(uid)
    return True


def reconcile_pass(*, now: datetime | None = None) -> list[Correction] | None:
    """One pass over every backend workload and every active workload. Returns the corrections,
    or None when another process is running a pass right now."""
    with exclusive("reconcile", ttl_s=max(60.0, settings.DOCKYARD_RECONCILE_INTERVAL_S * 4)) as got:
        if not got:
            return None
        return _pass(now=now or timezone.now())


def _pass(*, now: datetime) -> list[Correction]:
    backend = get_backend()
    # The backend first, then the database: a container seen here was made for a row that was
    # already committed, so reading rows afterwards never mistakes a new workload for an orphan.
    seen = backend.list_managed()
    strays = [o for o in seen if o.stray]
    own = [o for o in seen if not o.stray]
    look = Look(observed={o.uid: o for o in own}, engine_started_at=backend.engine_started_at(), now=now)
    corrections: list[Correction] = []
    for reconciler in _reconcilers.values():
        corrections += reconciler.check(look)
    handled = {c.uid for c in corrections}  # their containers were dealt with just now
    by_kind: dict[str, set[str]] = {}
    for observed in own:
        if observed.uid in handled:
            continue
        by_kind.setdefault(observed.kind, set()).add(observed.uid)
    for kind, uids in by_kind.items():
        reconciler = _reconcilers.get(kind)
        wanted = reconciler.wants(uids) if reconciler else set()
        for uid in sorted(uids - wanted):
            corrections += _orphan(reconciler, look.observed[uid], look)
    for observed in strays:
        corrections += _remove(observed, reason="labelled as this workload's, but not its container")
    for correction in corrections:
        _record(correction)
    return corrections


def _orphan(reconciler: Reconciler | None, observed: Observed, look: Look) -> list[Correction]:
    """A failed clean-up is left for the next pass and reported as nothing done."""
    if reconciler is None:
        return _remove(observed, reason="no workload wants this container")
    try:
        correction = reconciler.orphan(observed, look)
    except RuntimeError_ as error:
        _not_removed(observed, error)
        return []
    return [correction] if correction is not None else []


def observed_handle(observed: Observed):
    """What to act on: the object that was seen (by id) where the backend says, else the uid's."""
    return observed.handle or get_backend().handle_for(observed.uid)


def _remove(observed: Observed, *, reason: str) -> list[Correction]:
    try:
        get_backend().remove(observed_handle(observed), keep_data=True)
    except RuntimeError_ as error:
        _not_removed(observed, error)
        return []
    return [Correction("orphan", observed.kind or "unknown", observed.uid, reason, "removed")]


def _not_removed(observed: Observed, error: RuntimeError_) -> None:
    structlog.get_logger(__name__).warning(
        "container not removed", workload_uid=observed.uid, handle=str(observed.handle), error=str(error)
    )


def _record(correction: Correction) -> None:
    from portal.core import metrics

    metrics.RECONCILE_CORRECTIONS.labels(kind=correction.kind, workload_kind=correction.workload_kind).inc()
    structlog.get_logger(__name__).info(
        "reconcile correction", correction=correction.kind, workload_kind=correction.workload_kind,
        workload_uid=correction.uid, reason=correction.reason, result=correction.result,
    )  # fmt: skip
    audit_record(
        actor=Actor.system(),
        action=f"reconcile.{correction.kind}",
        target_type=f"{correction.workload_kind}s.{correction.workload_kind}",
        target_id=correction.uid,
        target_repr=f"{correction.workload_kind} {correction.uid}",
        details={"reason": correction.reason, "result": correction.result},
    )
