"""Bringing workspaces in line with their containers (see portal.workloads.reconcile)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from portal.audit.services import Actor
from portal.quotas.services.admission import release
from portal.quotas.values import WorkloadRef
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import Observed, State
from portal.workloads.reconcile import Correction, Look, observed_handle, redrive
from portal.workloads.services import IllegalTransition, workload_transition
from workspaces import services
from workspaces.models import TRANSITIONS, Workspace, WorkspaceState

S = WorkspaceState
KIND = Workspace.KIND


class WorkspaceReconciler:
    kind = KIND

    def check(self, look: Look) -> list[Correction]:
        corrections = []
        for workspace in Workspace.objects.filter(state__in=S.active()).select_related("owner", "team", "image"):
            try:
                correction = self._check(workspace, look.observed.get(workspace.uid), look)
            except (IllegalTransition, RuntimeError_):
                continue  # moved meanwhile, or the engine hiccuped: the next pass looks again
            if correction is not None:
                corrections.append(correction)
        return corrections

    def _check(self, workspace: Workspace, observed: Observed | None, look: Look) -> Correction | None:
        uid, state = workspace.uid, workspace.state
        if state == S.RUNNING:
            if observed is None or observed.state == State.MISSING:
                return workspace_lost(workspace, "the container disappeared", engine_restarted=False)
            if observed.state == State.EXITED:
                return workspace_lost(workspace, _exit_text(observed), engine_restarted=look.engine_restarted(observed),
                                      observed=observed)  # fmt: skip
            return None
        if not look.past_grace(workspace.state_changed_at):
            return None  # a task is probably still at it
        if state == S.PENDING:
            if observed is not None and observed.state != State.EXITED:
                # The worker made the container (maybe not started it) and died: finish its step.
                services.workspace_run_start(workspace_id=uid)
                result = Workspace.objects.get(pk=uid).state
                return Correction("missed", KIND, uid, "pending, but its container exists", result)
            if redrive(uid=uid, step="start", task=_task("start_task")):
                return Correction("redrive", KIND, uid, "pending with no container", "start queued again")
            return None
        if state == S.STARTING:
            # The readiness checks may have been lost with a worker: look once now (this also
            # fails the workspace if its container ended or its deadline passed).
            outcome = services.workspace_check_ready(workspace_id=uid)
            if outcome is None:
                return None
            result = "running" if outcome else Workspace.objects.get(pk=uid).state
            return Correction("stuck", KIND, uid, "starting with no readiness check", result)
        if state == S.STOPPING and redrive(uid=uid, step="stop", task=_task("stop_task")):
            return Correction("redrive", KIND, uid, "stopping for too long", "stop queued again")
        return None

    def wants(self, uids: set[str]) -> set[str]:
        rows = Workspace.objects.filter(pk__in=uids, state__in=S.active()).values_list("pk", flat=True)
        return {str(pk) for pk in rows}

    def orphan(self, observed: Observed, look: Look) -> Correction | None:
        get_backend().remove(observed_handle(observed), keep_data=True)  # a failure is reported as nothing done
        row = Workspace.objects.filter(pk=observed.uid).values_list("state", flat=True).first()
        reason = f"the workspace is {row}" if row else "the workspace no longer exists"
        return Correction("orphan", KIND, observed.uid, reason, "container removed, home volume kept")


def workspace_lost(
    workspace: Workspace, text: str, *, engine_restarted: bool, observed: Observed | None = None
) -> Correction:
    """A running workspace whose container is gone or ended. After an engine restart it is
    stopped (its home kept; one click starts it again); otherwise it failed, with the reason."""
    if not engine_restarted:
        oom = observed is not None and observed.reason == "OOMKilled"
        error = RuntimeError_(
            text,
            reason=observed.reason if observed else "container_missing",
            permanent=True,
            user_message="JupyterLab ran out of memory and was stopped. Pick a larger profile."
            if oom
            else f"The workspace stopped unexpectedly: {text}. Your files are kept; start it again.",
        )
        services.workspace_fail(workspace=workspace, step="running", error=error)
        return Correction("gone" if observed is None else "exited", KIND, workspace.uid, text, "failed")
    with transaction.atomic():
        workload_transition(
            workload=workspace, to=S.STOPPED, allowed=TRANSITIONS, actor=Actor.system(), step="stopped",
            message="stopped: the container engine restarted; your files are kept. Start it again.",
            action="workspace.stop", audit_details={"reason": "engine restarted"},
            fields={"stopped_at": timezone.now(), "endpoint": "", "cull_at": None, "gpu_idle_since": None},
        )  # fmt: skip
        release(workload=WorkloadRef(kind=KIND, uid=workspace.pk), actor=Actor.system(), reason="engine restarted")
    try:
        backend = get_backend()
        backend.remove(backend.handle_for(workspace.uid), keep_data=True)
    except RuntimeError_:
        pass  # the next pass removes it as an orphan
    return Correction("exited", KIND, workspace.uid, "engine restarted", "stopped")


def _exit_text(observed: Observed) -> str:
    if observed.reason == "OOMKilled":
        return "out of memory (OOMKilled)"
    return f"the container exited with code {observed.exit_code}"


def _task(name: str):
    from workspaces import tasks

    return getattr(tasks, name)
