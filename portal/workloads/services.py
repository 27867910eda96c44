"""Moving a workload between states: one function, one transaction, one event, one audit row."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.runtime.base import WAITING_FOR_CAPACITY, Observed
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
