"""Moving a workload between states: one function, one transaction, one event, one audit row."""

from __future__ import annotations

import time

from django.db import transaction
from django.utils import timezone

from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.runtime.base import WAITING_FOR_CAPACITY, Observed, Progress, RuntimeBackend, RuntimeError_
from portal.workloads.models import Workload, WorkloadEvent


class IllegalTransition(Exception):
    """The workload is not in a state this move may start from (someone else moved it)."""

    def __init__(self, workload: Workload, to: str):
        super().__init__(f"This {workload.KIND} is {workload.state}; it cannot become {to} now.")
        self.current = workload.state
        self.to = to


def workload_transition(
    *,
    workload: Workload,
    to: str,
    allowed: dict[str, set[str]],
    actor: Actor,
    step: str,
    message: str,
    detail: str = "",
    action: str = "",
    fields: dict | None = None,
    audit_details: dict | None = None,
    level: str = WorkloadEvent.Level.INFO,
) -> Workload:
    """Locks the row, checks `state -> to` is in `allowed`, applies it with `fields`, and
    writes the user-facing event and (if `action`) the audit event, all in one transaction.

    Raises IllegalTransition instead of overwriting a state another process set.
    """
    model = type(workload)
    with transaction.atomic():
        locked = model.objects.select_for_update().get(pk=workload.pk)
        if to not in allowed.get(locked.state, set()):
            raise IllegalTransition(locked, to)
        now = timezone.now()
        previous = locked.state
        changes = {"state": to, "state_changed_at": now, **(fields or {})}
        for key, value in changes.items():
            setattr(locked, key, value)
        locked.save(update_fields=list(changes))
        workload_event_add(workload=locked, step=step, message=message, detail=detail, level=level)
        if action:
            audit_record(
                actor=actor,
                action=action,
                target=locked,
                team=locked.team,
                outcome=Outcome.ERROR if level == WorkloadEvent.Level.ERROR else Outcome.OK,
                details={"from": previous, "to": to, **(audit_details or {})},
            )
    return locked


def workload_event_add(
    *,
    workload: Workload,
    step: str,
    message: str,
    detail: str = "",
    percent: float | None = None,
    level: str = WorkloadEvent.Level.INFO,
) -> WorkloadEvent:
    """Records progress the owner sees, without changing state (e.g. pulling 40%)."""
    return WorkloadEvent.objects.create(
        kind=workload.KIND,
        uid=workload.pk,
        step=step,
        state=workload.state,
        message=message[:500],
        detail=detail,
        percent=percent,
        level=level,
    )


def workload_note_waiting(*, workload: Workload, observed: Observed) -> WorkloadEvent | None:
    """Tells the owner why a started workload does not run yet (the scheduler's verdict, the
    image pull, a batch queue), once per change of that reason."""
    text = observed.message or observed.reason
    if not text:
        return None
    text = f"Waiting: {text}"[:500]
    last = (
        WorkloadEvent.objects.filter(kind=workload.KIND, uid=workload.pk)
        .order_by("-id").values_list("message", flat=True).first()
    )  # fmt: skip
    if last == text:
        return None
    stuck = observed.reason and observed.reason not in WAITING_FOR_CAPACITY
    level = WorkloadEvent.Level.ERROR if stuck else WorkloadEvent.Level.INFO
    return workload_event_add(workload=workload, step="scheduling", message=text, level=level)


def workload_admitted_message(workload: Workload) -> str:
    """The "admitted" event people see: what the workload holds."""
    gpus = f", {workload.gpus} GPU(s)" if workload.gpus else ""
    return f"Admitted: {float(workload.cpus):g} CPU, {float(workload.memory_gib):g} GiB{gpus}"


# A pull reports progress many times a second; the owner's page gets a step at most this often
# (seconds), or when another tenth of the image has arrived.
PULL_EVENT_EVERY_S = 2.0


def workload_image_ensure(*, workload: Workload, backend: RuntimeBackend) -> None:
    """Makes the workload's pinned image available before its start. An image the catalog
    pulled that is no longer on the engine is pulled again by its reference, the owner seeing
    "Pulling image: 42%" as catalog pulls show it; the pull must give the pinned digest."""
    progress = _PullProgress(workload)
    try:
        backend.ensure_image(workload.image_digest, on_progress=progress)
        return
    except RuntimeError_ as error:
        ref = workload.image_revision.pull_ref
        if error.reason != "image_missing" or not ref:
            raise
    info = backend.ensure_image(ref, on_progress=progress)
    if info.digest != workload.image_digest:
        raise RuntimeError_(
            f"{ref} is now {info.digest}, not the pinned {workload.image_digest}",
            reason="image_changed",
            permanent=True,
            user_message=f"{ref} now names a different image than the one this {workload.KIND} was "
            "pinned to; pull it again in the catalog and start anew.",
        )
    workload_event_add(workload=workload, step="image", message="Pulling image: 100%", percent=100.0)


class _PullProgress:
    """Turns a pull's progress into the owner's events, a few per pull rather than hundreds."""

    def __init__(self, workload: Workload):
        self.workload = workload
        self.shown: float | None = None
        self.shown_at = 0.0

    def __call__(self, progress: Progress) -> None:
        if progress.percent is None or progress.percent >= 100:
            return
        now = time.monotonic()
        tenth = self.shown is None or int(progress.percent // 10) > int(self.shown // 10)
        if not tenth and (now - self.shown_at < PULL_EVENT_EVERY_S or int(progress.percent) == int(self.shown)):
            return
        self.shown, self.shown_at = progress.percent, now
        workload_event_add(
            workload=self.workload, step="image", message=f"Pulling image: {progress.percent:.0f}%",
            percent=progress.percent,
        )  # fmt: skip
