"""Job and experiment pages: list, submit, the live job page, cancel, rerun, compare, sweeps.

Logs and metrics on the job page are read by static scripts from the REST API (the session
cookie is enough for GET); everything else is rendered here, and htmx polls the live parts.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from jobs import selectors, services
from jobs.forms import CODE_UPLOAD, CODE_WORKSPACE, JobForm
from jobs.models import Experiment, Job, JobState
from portal.accounts.models import Team
from portal.audit.services import Actor
from portal.catalog.environments.services import environment_team_default
from portal.core.forms import form_add_validation_error
from portal.runtime import RuntimeError_
from portal.workloads.services import IllegalTransition

# The list shows the newest jobs that match its filters; the API pages through more.
LIST_LIMIT = 100
# How many of the team's recent jobs the "Compare with" menu offers.
COMPARE_CHOICES = 50
SPEC_LABELS = {
    "name": "Name", "image": "Image", "environment": "Team environment", "image_digest": "Image digest",
    "profile": "Size", "command": "Command",
    "shell": "Shell string", "parameters": "Parameters", "env": "Environment", "secret_env": "Secret environment",
    "code_sha256": "Code SHA-256", "code_source": "Code source", "priority": "Priority",
    "timeout_s": "Timeout (s)", "max_retries": "Retries",
}  # fmt: skip


# --- Formatting values for the tables -------------------------------------------------------------


def number_text(value) -> str:
    """A metric or parameter as people read it: 6 significant digits for decimals."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def value_text(value) -> str:
    """A recorded spec value on one line: JSON for lists and objects, a dash for nothing."""
    if value is None or value == {} or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def duration_text(total: float) -> str:
    """A run's length as people say it: 42 s, 3 min 5 s, 2 h 10 min."""
    seconds = round(total)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def sort_value(value):
    """What a sortable column orders by: numbers as numbers, everything else as text."""
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int | float) else number_text(value)


# --- Reading --------------------------------------------------------------------------------------


def _job(request: HttpRequest, pk) -> Job:
    try:
        pk = uuid.UUID(str(pk))
    except ValueError:
        raise Http404("No such job.") from None
    job = selectors.job_visible_to(user=request.user).filter(pk=pk).first()
    if job is None:
        raise Http404("No such job.")
    return job


def _experiment(request: HttpRequest, pk) -> Experiment:
    experiment = selectors.experiment_visible_to(user=request.user).filter(pk=pk).first()
    if experiment is None:
        raise Http404("No such experiment.")
    return experiment


def _is_member(request: HttpRequest, team_id) -> bool:
    return any(m.team_id == team_id for m in request.my_memberships)


def _series(jobs) -> list[dict]:
    """Each job's metric series, for charts that overlay several jobs."""
    return [{"id": str(j.pk), "name": j.name, "state": j.state, "metrics": j.metrics} for j in jobs]


# --- The list -------------------------------------------------------------------------------------


def _list_filters(request: HttpRequest) -> dict:
    state = request.GET.get("state", "")
    experiment = request.GET.get("experiment", "")
    try:
        experiment = str(uuid.UUID(experiment)) if experiment else ""
    except ValueError:
        experiment = ""
    return {
        "state": state if state in JobState.values else "",
        "team": request.GET.get("team", "").strip(),
        "experiment": experiment,
        "mine": request.GET.get("mine") in ("1", "on", "true"),
    }


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    filters = _list_filters(request)
    jobs = list(
        selectors.job_list(
            user=request.user, state=filters["state"], team=filters["team"],
            experiment=filters["experiment"] or None, mine=filters["mine"],
        )[:LIST_LIMIT]
    )  # fmt: skip
    positions = selectors.job_queue_positions(jobs=jobs)
    for job in jobs:
        job.queue_position = positions.get(job.pk)
        job.metric_cells = [(name, number_text(value)) for name, value in sorted(job.metrics_last.items())]
    context = {
        "jobs": jobs,
        "filters": filters,
        "polling": any(not job.is_final for job in jobs),
        "limited": len(jobs) == LIST_LIMIT,
    }
    if request.headers.get("HX-Request"):
        return render(request, "jobs/_list_rows.html", context)
    context["states"] = JobState.choices
    context["teams"] = Team.objects.visible_to(request.user).order_by("slug")
    context["experiments"] = list(selectors.experiment_visible_to(user=request.user)[:COMPARE_CHOICES])
    return render(request, "jobs/list.html", context)


# --- Submitting -----------------------------------------------------------------------------------


@login_required
def job_create(request: HttpRequest) -> HttpResponse:
    active = request.active_membership
    initial = {"team": active.team.slug if active else None}
    if request.GET.get("image"):
        initial["image"] = request.GET["image"]  # e.g. from an environment's page: <slug>@<revision>
    elif active and (default := environment_team_default(team=active.team)) is not None:
        initial["image"] = default.ref
    form = JobForm(request.POST or None, request.FILES or None, user=request.user, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            submitted = _submit(request, form)
        except ValidationError as error:
            form_add_validation_error(error, form)
        except RuntimeError_ as error:
            form.add_error("code_workspace", error.user_message)
        else:
            if isinstance(submitted, Experiment):
                messages.success(request, f"{submitted.name}: {submitted.jobs.count()} jobs queued.")
                return redirect("experiment-detail", pk=submitted.pk)
            return redirect("job-detail", pk=submitted.pk)
    return render(request, "jobs/create.html", {"form": form}, status=400 if form.errors else 200)


def _submit(request: HttpRequest, form: JobForm) -> Job | Experiment:
    data, actor = form.cleaned_data, Actor.from_request(request)
    code = None
    if data["code_from"] in (CODE_UPLOAD, CODE_WORKSPACE):
        # Check the spec before storing code, so that a refused spec leaves no archive behind.
        services.job_spec_check(owner=request.user, job_spec=form.job_spec())
        code = _code(request, form)
    job_spec = form.job_spec(code=code)
    if data["sweep"]:
        return services.experiment_submit(
            owner=request.user, name=data["name"], job_spec=job_spec, sweep=data["sweep"],
            metric_goals=data["metric_goals"], actor=actor,
        )  # fmt: skip
    return services.job_submit(owner=request.user, job_spec=job_spec, actor=actor)


def _code(request: HttpRequest, form: JobForm):
    data = form.cleaned_data
    if data["code_from"] == CODE_UPLOAD:
        upload = data["code"]
        return services.code_archive_upload(owner=request.user, team=data["team"], upload=upload, filename=upload.name)
    return services.code_archive_from_workspace(
        owner=request.user, workspace=data["code_workspace"], path=data["code_path"]
    )


# --- One job --------------------------------------------------------------------------------------


def _live_context(request: HttpRequest, job: Job) -> dict:
    """What the polled parts of the job page show: state, queue place, attempts, outputs, events."""
    return {
        "job": job,
        "queue_position": selectors.job_queue_positions(jobs=[job]).get(job.pk),
        "wait_reason": selectors.job_wait_reason(job=job),
        "attempts": list(selectors.job_attempts_brief(job=job)),
        "events": list(selectors.job_events(job=job)),
        "outputs": list(job.outputs.all()) if job.is_final else [],
        "may_manage": not job.is_final and services.job_may_manage(job=job, user=request.user),
        "may_rerun": _is_member(request, job.team_id),
        "duration": duration_text((job.stopped_at - job.started_at).total_seconds())
        if job.started_at and job.stopped_at
        else "",
    }


@login_required
def job_detail(request: HttpRequest, pk) -> HttpResponse:
    job = _job(request, pk)
    context = _live_context(request, job)
    if request.headers.get("HX-Request"):
        return render(request, "jobs/_live.html", {**context, "oob": True})
    context["record"] = services.job_spec_record(job)
    context["may_open_in_workspace"] = (
        job.is_final and _is_member(request, job.team_id) and bool(job.image.default_command)
    )
    context["command_text"] = job.command[0] if job.shell else value_text(job.command)
    context["compare_choices"] = (
        selectors.job_visible_to(user=request.user)
        .filter(team=job.team)
        .exclude(pk=job.pk)
        .select_related(None)
        .only("id", "name", "created_at", "state")[:COMPARE_CHOICES]
    )
    return render(request, "jobs/detail.html", context)


@require_POST
@login_required
def job_cancel(request: HttpRequest, pk) -> HttpResponse:
    """Owner, team admins and staff (others get 403, and the refusal is audited)."""
    job = _job(request, pk)
    try:
        services.job_cancel(job=job, by=request.user, actor=Actor.from_request(request))
    except IllegalTransition as conflict:
        messages.error(request, str(conflict))
    else:
        messages.success(request, f"{job.name} is cancelled.")
    return redirect("job-detail", pk=job.pk)


@require_POST
@login_required
def job_rerun(request: HttpRequest, pk) -> HttpResponse:
    """Members of the job's team: a new job with exactly the recorded spec."""
    job = _job(request, pk)
    try:
        rerun = services.job_rerun(job=job, by=request.user, actor=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("job-detail", pk=job.pk)
    messages.success(request, f"Rerun of {job.name} queued, with the same image digest, code and parameters.")
    return redirect("job-detail", pk=rerun.pk)


@require_POST
@login_required
def job_open_in_workspace(request: HttpRequest, pk) -> HttpResponse:
    """Members of the job's team: a workspace with the job's exact image digest (or environment
    revision), its code at /code, its parameters as PARAM_* and its env."""
    from workspaces.services import QuotaRefused, workspace_reproduce

    job = _job(request, pk)
    try:
        workspace = workspace_reproduce(job=job, by=request.user, actor=Actor.from_request(request))
    except (ValidationError, QuotaRefused) as error:
        messages.error(request, " ".join(getattr(error, "messages", [str(error)])))
        return redirect("job-detail", pk=job.pk)
    messages.success(request, f"{workspace.name} is starting with {job.name}'s image, code and parameters.")
    return redirect("workspace-detail", pk=workspace.pk)


# --- Comparing two jobs ---------------------------------------------------------------------------


def spec_rows(a: dict, b: dict) -> list[dict]:
    """The two recorded specs side by side, one row per field, marking the rows that differ."""
    keys = [*SPEC_LABELS, *sorted((set(a) | set(b)) - set(SPEC_LABELS))]
    return [
        {"label": SPEC_LABELS.get(key, key), "a": value_text(a.get(key)), "b": value_text(b.get(key)),
         "differs": a.get(key) != b.get(key)}
        for key in keys
    ]  # fmt: skip


def metric_rows(a: Job, b: Job) -> list[dict]:
    names = sorted(set(a.metrics_last) | set(b.metrics_last))
    return [
        {"name": name, "a": number_text(a.metrics_last[name]) if name in a.metrics_last else "—",
         "b": number_text(b.metrics_last[name]) if name in b.metrics_last else "—",
         "differs": a.metrics_last.get(name) != b.metrics_last.get(name)}
        for name in names
    ]  # fmt: skip


@login_required
def job_compare(request: HttpRequest) -> HttpResponse:
    a = _job(request, request.GET.get("a", ""))
    if not request.GET.get("b"):
        return redirect(reverse("job-detail", args=[a.pk]) + "#compare")
    b = _job(request, request.GET["b"])
    record_a, record_b = services.job_spec_record(a), services.job_spec_record(b)
    record_a["code_source"] = a.code.source if a.code else None
    record_b["code_source"] = b.code.source if b.code else None
    context = {
        "a": a,
        "b": b,
        "rows": spec_rows(record_a, record_b),
        "metrics": metric_rows(a, b),
        "series": {"active": False, "jobs": _series([a, b])},
    }
    return render(request, "jobs/compare.html", context)


# --- Experiments ----------------------------------------------------------------------------------


@login_required
def experiment_list(request: HttpRequest) -> HttpResponse:
    experiments = selectors.experiment_visible_to(user=request.user)[:200]
    return render(request, "jobs/experiment_list.html", {"experiments": experiments})


def experiment_rows(jobs: list[Job], table: dict) -> list[dict]:
    """One row per job: its parameters, then its metrics' last values, the best ones marked."""
    rows = []
    for job in jobs:
        parameters = [_cell(job.parameters, name) for name in table["parameters"]]
        metrics = [
            {**_cell(job.metrics_last, name), "best": table["best"].get(name) == job.pk} for name in table["metrics"]
        ]
        rows.append({"job": job, "parameters": parameters, "metrics": metrics})
    return rows


def _cell(values: dict, name: str) -> dict:
    if name not in values:
        return {"text": "—", "sort": ""}
    return {"text": number_text(values[name]), "sort": sort_value(values[name])}


def _experiment_context(request: HttpRequest, experiment: Experiment) -> dict:
    jobs = list(selectors.job_list(user=request.user, experiment=experiment.pk, series=True).order_by("created_at"))
    table = selectors.experiment_table(experiment=experiment, jobs=jobs)
    return {
        "experiment": experiment,
        "jobs": jobs,
        "table": table,
        "rows": experiment_rows(jobs, table),
        "metric_columns": [(name, table["goals"][name]) for name in table["metrics"]],
        "active": any(not job.is_final for job in jobs),
    }


@login_required
def experiment_detail(request: HttpRequest, pk) -> HttpResponse:
    context = _experiment_context(request, _experiment(request, pk))
    if request.headers.get("HX-Request"):
        return render(request, "jobs/_experiment_table.html", context)
    context["series"] = {"active": context["active"], "jobs": _series(context["jobs"])}
    context["sweep_text"] = value_text(context["experiment"].sweep)
    return render(request, "jobs/experiment_detail.html", context)


@login_required
def experiment_series(request: HttpRequest, pk) -> JsonResponse:
    """Every job's metric series in one answer, for the overlaid charts (polled while jobs run)."""
    experiment = _experiment(request, pk)
    jobs = list(selectors.job_list(user=request.user, experiment=experiment.pk, series=True).order_by("created_at"))
    return JsonResponse({"active": any(not job.is_final for job in jobs), "jobs": _series(jobs)})
