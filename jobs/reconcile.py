"""Bringing jobs in line with their containers (see portal.workloads.reconcile)."""

from __future__ import annotations

from jobs import services
from jobs.models import Job, JobState
from portal.quotas.models import Allocation
from portal.runtime import RuntimeError_
from portal.runtime.base import Observed, State
from portal.workloads.reconcile import Correction, Look, observed_handle, redrive
from portal.workloads.services import IllegalTransition

S = JobState
KIND = Job.KIND


class JobReconciler:
    kind = KIND

    def check(self, look: Look) -> list[Correction]:
        corrections = []
        for job in Job.objects.filter(state__in=S.active()):
            try:
                correction = self._check(job, look.observed.get(job.uid), look)
            except (IllegalTransition, RuntimeError_):
                continue  # moved meanwhile, or the engine hiccuped: the next pass looks again
            if correction is not None:
                corrections.append(correction)
        holding = Allocation.objects.filter(workload_kind=KIND, closed_at__isnull=True).values_list("workload_uid")
        for job in Job.objects.filter(pk__in=holding, state__in=S.final()):
            if job.uid not in look.observed and look.past_grace(job.state_changed_at):
                services.job_settle(job_id=job.uid)  # nothing left to stop: just release
                corrections.append(Correction("stuck", KIND, job.uid, f"{job.state} but holding quota", "released"))
        return corrections

    def _check(self, job: Job, observed: Observed | None, look: Look) -> Correction | None:
        uid, state = job.uid, job.state
        if state == S.RUNNING:
            if observed is not None and observed.state in (State.RUNNING, State.CREATED):
                return None  # the watch pass handles timeouts
            cause = "engine restarted" if look.engine_restarted(observed) else ""
            result = services.job_settle(job_id=uid, cause=cause)
            kind = "gone" if observed is None else "exited"
            return Correction(kind, KIND, uid, cause or _exit_text(observed), result or "")
        if not look.past_grace(job.state_changed_at):
            return None  # the start task is probably still at it
        if state == S.STARTING and observed is not None:
            services.job_run_start(job_id=uid)  # finds the container the lost task made
            return Correction("missed", KIND, uid, "starting, but its container exists", Job.objects.get(pk=uid).state)
        if redrive(uid=uid, step="start", task=_start_task()):
            return Correction("redrive", KIND, uid, f"{state} with no container", "start queued again")
        return None

    def wants(self, uids: set[str]) -> set[str]:
        rows = Job.objects.filter(pk__in=uids, state__in=S.active()).values_list("pk", flat=True)
        return {str(pk) for pk in rows}

    def orphan(self, observed: Observed, look: Look) -> Correction | None:
        """A container of an ended (or retrying) job: settled, which keeps its log first."""
        job = Job.objects.filter(pk=observed.uid).first()
        if job is not None:
            services.job_settle(job_id=job.uid)
        services.job_container_remove(uid=observed.uid, handle=observed_handle(observed))
        reason = f"the job is {job.state}" if job else "the job no longer exists"
        return Correction("orphan", KIND, observed.uid, reason, "container removed, output volume kept")


def _exit_text(observed: Observed | None) -> str:
    if observed is None:
        return "the container disappeared"
    return f"the container exited with code {observed.exit_code}"


def _start_task():
    from jobs.tasks import start_task

    return start_task
