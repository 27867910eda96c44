"""Reading jobs and experiments: who may see which, queue places, comparisons."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from jobs import spec
from jobs.models import Experiment, Job, JobAttempt, JobState
from portal.accounts.models import Team
from portal.workloads.models import WorkloadEvent

RELATED = ("owner", "team", "image", "profile", "code", "experiment")


def job_visible_to(*, user) -> QuerySet[Job]:
    """Jobs of the teams a person belongs to (a team's runs are visible to its members); staff see all."""
    jobs = Job.objects.select_related(*RELATED)
    if user.is_staff:
        return jobs
    return jobs.filter(team__in=Team.objects.visible_to(user))


def job_list(
    *, user, state: str = "", team: str = "", experiment=None, mine: bool = False, series: bool = False
) -> QuerySet[Job]:
    """Newest first. Metric series (up to DOCKYARD_JOB_METRICS_MAX_SERIES times MAX_POINTS points
    a job) are left out unless `series`: lists show last values only."""
    jobs = job_visible_to(user=user).annotate(attempt_count=Count("attempts"))
    if not series:
        jobs = jobs.defer("metrics")
    if state:
        jobs = jobs.filter(state=state)
    if team:
        jobs = jobs.filter(team__slug=team)
    if experiment:
        jobs = jobs.filter(experiment_id=experiment)
    if mine:
        jobs = jobs.filter(owner=user)
    return jobs.order_by("-created_at")


def experiment_visible_to(*, user) -> QuerySet[Experiment]:
    experiments = Experiment.objects.select_related("owner", "team").annotate(job_count=Count("jobs"))
    if user.is_staff:
        return experiments
    return experiments.filter(team__in=Team.objects.visible_to(user))


def job_queue_positions(*, jobs) -> dict:
    """Place in the admission queue of each waiting job (1 = next)."""
    from portal.quotas.selectors import queue_positions

    return queue_positions(uids=[j.pk for j in jobs if j.state == JobState.QUEUED and j.retry_at is None])


def job_wait_reason(*, job: Job) -> str:
    """Why a queued job waits: the limit it would hit now, or the retry backoff."""
    from jobs.services import job_admission_request
    from portal.quotas.services.admission import admit_preview

    if job.state != JobState.QUEUED:
        return ""
    if job.retry_at is not None:
        return f"waiting to retry (attempt {job.attempt + 1} at {job.retry_at:%H:%M:%S} UTC)"
    refusal = admit_preview(request=job_admission_request(job))
    return refusal.message if refusal else "fits now; waiting for the next admission pass"


def job_events(*, job: Job) -> QuerySet[WorkloadEvent]:
    return WorkloadEvent.objects.filter(kind=Job.KIND, uid=job.pk).order_by("id")


def job_attempts(*, job: Job) -> QuerySet[JobAttempt]:
    return JobAttempt.objects.filter(job=job).order_by("number")


def job_attempts_brief(*, job: Job) -> QuerySet[JobAttempt]:
    """Attempts without their logs (for pages and the API's detail)."""
    return job_attempts(job=job).defer("log")


def experiment_table(*, experiment: Experiment, jobs: list[Job]) -> dict:
    """Parameters and last metric values of each job, the metric columns, and the best job per
    metric (min for losses and errors, max otherwise, unless the experiment says)."""
    parameter_names = sorted({name for job in jobs for name in job.parameters})
    metric_names = sorted({name for job in jobs for name in job.metrics_last})
    best = {}
    for name in metric_names:
        scored = [(job.metrics_last[name], job.pk) for job in jobs if name in job.metrics_last]
        goal = spec.metric_goal(name, experiment.metric_goals)
        best[name] = (min if goal == "min" else max)(scored)[1] if scored else None
    return {
        "parameters": parameter_names,
        "metrics": metric_names,
        "goals": {name: spec.metric_goal(name, experiment.metric_goals) for name in metric_names},
        "best": best,
    }
