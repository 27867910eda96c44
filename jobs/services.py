"""Every change to a job: submit, cancel, rerun, sweeps, and the steps the worker takes.

Pages, the API and tasks call these; state moves only through `workload_transition`, and
every submission, cancel, rerun, state change and download is audited.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from jobs import archives, spec
from jobs.models import TRANSITIONS, CodeArchive, Experiment, Job, JobAttempt, JobOutput, JobState
from portal.accounts.models import Membership, Team, User
from portal.accounts.services import user_can_manage_team
from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.catalog.environments.services import (
    environment_require_launchable,
    environment_team_default,
    environment_workload_command,
    environment_workload_env,
)
from portal.catalog.models import EnvironmentRevision, Image, ImageRevision
from portal.catalog.services import image_require_startable
from portal.core.locks import exclusive
from portal.core.secrets import secrets_masked, secrets_open, secrets_seal
from portal.quotas.models import Allocation, ResourceProfile
from portal.quotas.services.admission import admission_never_fits, allocations_device_ids, release
from portal.quotas.services.queue import queue_cancel, queue_enqueue
from portal.quotas.services.quota import team_runtime_limits
from portal.quotas.values import AdmissionRequest, Resources, WorkloadRef
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import (
    WAITING_FOR_CAPACITY,
    FileDrop,
    Handle,
    Mount,
    Observed,
    State,
    WorkloadSpec,
    log_tail,
)
from portal.workloads.models import NODE_MAX, WorkloadEvent
from portal.workloads.reconcile import engine_restarted
from portal.workloads.services import (
    IllegalTransition,
    workload_admitted_message,
    workload_event_add,
    workload_image_ensure,
    workload_note_waiting,
    workload_transition,
)

S = JobState
OUTPUT = "/output"
METRICS_FILE = f"{OUTPUT}/metrics.jsonl"
MAX_PRIORITY = 10
WATCH_FLAG = "jobs:watch-pending"


def _transition(job: Job, to: str, **kwargs) -> Job:
    kwargs.setdefault("action", f"job.{to}")
    return workload_transition(workload=job, to=to, allowed=TRANSITIONS, **kwargs)


# --- Submitting -----------------------------------------------------------------------------------


@dataclass
class JobSpec:
    """What a person asks to run; validated by `job_spec_check` before anything is made."""

    name: str
    team: Team
    profile: ResourceProfile
    command: list[str] | str
    image: Image | None = None
    revision: ImageRevision | None = None  # a rerun pins the exact revision it ran
    environment_revision: EnvironmentRevision | None = None  # instead of an image: its build, env and script
    env: dict = field(default_factory=dict)
    secret_env: dict = field(default_factory=dict)
    sealed_secret_env: str = ""  # a rerun copies the stored secrets without reading them
    secret_env_names: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    priority: int = 0
    timeout_s: int | None = None
    max_retries: int = 0
    nodes: int = 1
    code: CodeArchive | None = None


def job_spec_check(*, owner: User, job_spec: JobSpec) -> tuple[ImageRevision, list[str], bool]:
    """Checks everything a person can get wrong, naming the field. Returns the image revision
    to run and the normalised command."""
    _require_member(owner, job_spec.team)
    name = job_spec.name.strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the job a name of 1 to 100 characters."})
    command, shell = spec.command_normalise(job_spec.command)
    job_spec.parameters = spec.parameters_clean(job_spec.parameters)
    job_spec.env = spec.env_clean(job_spec.env)
    job_spec.secret_env = spec.env_clean(job_spec.secret_env, field="secret_env")
    if set(job_spec.env) & set(job_spec.secret_env):
        raise ValidationError({"secret_env": "A variable is either in env or in secret_env, not both."})
    if not -MAX_PRIORITY <= job_spec.priority <= MAX_PRIORITY:
        raise ValidationError({"priority": f"Priority goes from -{MAX_PRIORITY} to {MAX_PRIORITY}."})
    if job_spec.priority > 0 and not user_can_manage_team(user=owner, team=job_spec.team):
        raise ValidationError({"priority": "Only team admins can give jobs a priority above 0."})
    if job_spec.timeout_s is not None and not 1 <= job_spec.timeout_s <= settings.DOCKYARD_JOB_MAX_TIMEOUT_S:
        raise ValidationError(
            {"timeout_s": f"The timeout goes from 1 to {settings.DOCKYARD_JOB_MAX_TIMEOUT_S} seconds."}
        )
    if not 0 <= job_spec.max_retries <= settings.DOCKYARD_JOB_MAX_RETRIES:
        raise ValidationError({"max_retries": f"Retries go from 0 to {settings.DOCKYARD_JOB_MAX_RETRIES}."})
    if not 1 <= job_spec.nodes <= settings.DOCKYARD_JOB_MAX_NODES:
        raise ValidationError({"nodes": f"A job runs on 1 to {settings.DOCKYARD_JOB_MAX_NODES} nodes."})
    if job_spec.nodes > 1 and settings.DOCKYARD_RUNTIME != "kubernetes":
        raise ValidationError({"nodes": "Jobs on several nodes need the Kubernetes runtime; this one runs on Docker."})
    if not job_spec.profile.is_active:
        raise ValidationError({"profile": f"The profile {job_spec.profile.slug} is not offered any more."})
    if job_spec.code is not None and job_spec.code.team_id != job_spec.team.pk:
        raise ValidationError({"code": "That code archive belongs to another team."})
    if job_spec.image is None and job_spec.environment_revision is None and job_spec.revision is None:
        job_spec.environment_revision = environment_team_default(team=job_spec.team)
    if job_spec.environment_revision is not None:
        environment_require_launchable(revision=job_spec.environment_revision, user=owner, team=job_spec.team)
        revision = job_spec.environment_revision.image_revision
    elif job_spec.revision is not None:
        revision = job_spec.revision
    else:
        if job_spec.image is None:
            raise ValidationError({"image": "Choose an image or an environment."})
        if not Image.objects.visible_to(owner).filter(pk=job_spec.image.pk).exists():
            raise ValidationError({"image": f"{job_spec.image.slug} is not available to you."})
        revision = image_require_startable(image=job_spec.image)
    refusal = admission_never_fits(
        request=_request(uid=None, owner=owner, team=job_spec.team, profile=job_spec.profile, nodes=job_spec.nodes)
    )
    if refusal is not None:
        pods = f" x {job_spec.nodes} nodes" if job_spec.nodes > 1 else ""
        raise ValidationError({"profile": f"{job_spec.profile.slug}{pods} can never run here: {refusal.message}."})
    return revision, command, shell


def job_submit(
    *,
    owner: User,
    job_spec: JobSpec,
    actor: Actor,
    experiment: Experiment | None = None,
    rerun_of: Job | None = None,
    checked: tuple | None = None,
) -> Job:
    """Creates the job queued and puts it in the admission queue; it starts when a pass admits
    it (at once if the quota allows). Never refused for current usage, only for what can
    never run (checked by `job_spec_check`)."""
    revision, command, shell = checked or job_spec_check(owner=owner, job_spec=job_spec)
    sealed = job_spec.sealed_secret_env or secrets_seal(job_spec.secret_env)
    secret_names = sorted(job_spec.secret_env) if job_spec.secret_env else list(job_spec.secret_env_names)
    profile = job_spec.profile
    with transaction.atomic():
        job = Job.objects.create(
            owner=owner,
            team=job_spec.team,
            name=job_spec.name.strip(),
            image=revision.image,
            image_revision=revision,
            image_digest=revision.digest,
            environment_revision=job_spec.environment_revision,
            profile=profile,
            cpus=profile.cpus,
            memory_gib=profile.memory_gib,
            gpus=profile.gpus,
            state=S.QUEUED,
            experiment=experiment,
            rerun_of=rerun_of,
            command=command,
            shell=shell,
            parameters=job_spec.parameters,
            env=job_spec.env,
            secret_env=sealed,
            secret_env_names=secret_names,
            code=job_spec.code,
            priority=job_spec.priority,
            timeout_s=job_spec.timeout_s,
            max_retries=job_spec.max_retries,
            nodes=job_spec.nodes,
        )
        queue_enqueue(request=job_admission_request(job), actor=actor,
                      priority=job.priority)  # fmt: skip
        workload_event_add(workload=job, step="queued", message="Submitted; waiting for admission")
        audit_record(
            actor=actor,
            action="job.rerun" if rerun_of else "job.submit",
            target=job,
            team=job.team,
            details={**job_spec_record(job), **({"rerun_of": str(rerun_of.pk)} if rerun_of else {})},
        )
    return job


def job_spec_record(job: Job) -> dict:
    """Everything needed to run the job again identically, secret values masked."""
    return {
        "name": job.name,
        "image": job.image.slug,
        "environment": job.environment_revision.ref if job.environment_revision_id else None,
        "image_digest": job.image_digest,
        "profile": job.profile.slug,
        "command": job.command if not job.shell else job.command[0],
        "shell": job.shell,
        "parameters": job.parameters,
        "env": job.env,
        "secret_env": secrets_masked(job.secret_env_names),
        "code_sha256": job.code.sha256 if job.code else None,
        "priority": job.priority,
        "timeout_s": job.timeout_s,
        "max_retries": job.max_retries,
        "nodes": job.nodes,
    }


def job_rerun(*, job: Job, by: User, actor: Actor) -> Job:
    """A new job with exactly the recorded spec: same image revision (digest), environment
    revision, code archive, command, parameters, env, profile, priority, timeout and retries.
    The secrets typed into the job go only to its owner's reruns: a teammate's rerun runs
    without them, and says which names were left out (its environment's secrets it gets, as
    `job_spec_check` lets only those who may launch that environment rerun it)."""
    if not Membership.objects.filter(user=by, team=job.team, user__is_active=True).exists():
        raise PermissionDenied(f"Only members of {job.team.slug} can rerun its jobs.")
    own = job.owner_id == by.pk
    job_spec = JobSpec(
        name=job.name, team=job.team, profile=job.profile, command=job.command[0] if job.shell else job.command,
        revision=job.image_revision, environment_revision=job.environment_revision, env=dict(job.env),
        sealed_secret_env=job.secret_env if own else "",
        secret_env_names=list(job.secret_env_names) if own else [], parameters=dict(job.parameters),
        priority=min(job.priority, 0) if not user_can_manage_team(user=by, team=job.team) else job.priority,
        timeout_s=job.timeout_s, max_retries=job.max_retries, nodes=job.nodes, code=job.code,
    )  # fmt: skip
    rerun = job_submit(owner=by, job_spec=job_spec, actor=actor, rerun_of=job)
    left_out = job_secrets_left_out(job=rerun)
    if left_out:
        workload_event_add(workload=rerun, step="secrets", message=(
            f"Submitted without the secrets of {job.owner.username}'s job ({', '.join(left_out)}): "
            "they go only to its owner"))  # fmt: skip
    return rerun


def job_secrets_left_out(*, job: Job) -> list[str]:
    """The secret names of the job this one reruns that it runs without (they were someone
    else's); empty for a first run or an owner's rerun."""
    if job.rerun_of_id is None:
        return []
    return sorted(set(job.rerun_of.secret_env_names) - set(job.secret_env_names))


def experiment_submit(
    *, owner: User, name: str, job_spec: JobSpec, sweep: dict, metric_goals: dict | None, actor: Actor
) -> Experiment:
    """One job per point of the sweep, all queued together (or none, if anything is wrong)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the experiment a name of 1 to 100 characters."})
    points = spec.sweep_points(sweep)
    goals = metric_goals or {}
    if not isinstance(goals, dict) or any(v not in ("min", "max") for v in goals.values()):
        raise ValidationError({"metric_goals": 'Map metric names to "min" or "max".'})
    base = dict(job_spec.parameters or {})
    job_spec.parameters = {**base, **points[0]}
    checked = job_spec_check(owner=owner, job_spec=job_spec)
    with transaction.atomic():
        experiment = Experiment.objects.create(
            name=name, owner=owner, team=job_spec.team, sweep=sweep, metric_goals=goals
        )
        audit_record(
            actor=actor, action="experiment.submit", target=experiment, team=job_spec.team,
            details={"name": name, "jobs": len(points), "sweep": sweep},
        )  # fmt: skip
        for index, point in enumerate(points, start=1):
            job_spec.parameters = {**base, **point}
            job_spec.name = f"{name}-{index}"
            job_submit(owner=owner, job_spec=job_spec, actor=actor, experiment=experiment, checked=checked)
    return experiment


def code_archive_upload(*, owner: User, team: Team, upload: IO[bytes], filename: str) -> CodeArchive:
    """Stores an uploaded zip or tar after checking it; the same bytes are stored once per team."""
    _require_member(owner, team)
    facts = archives.archive_inspect(upload)
    existing = CodeArchive.objects.filter(team=team, sha256=facts.sha256).first()
    if existing is not None:
        return existing
    archive = CodeArchive(
        team=team, created_by=owner, sha256=facts.sha256, size_bytes=facts.size_bytes, format=facts.format,
        source=f"upload: {filename}"[:300], file_count=facts.file_count,
    )  # fmt: skip
    archive.file.save(f"{facts.sha256}.{facts.format}", File(upload), save=False)
    archive.save()
    return archive


def code_archive_from_workspace(*, owner: User, workspace, path: str) -> CodeArchive:
    """Snapshots a folder of the person's running workspace now: later edits do not change it."""
    from workspaces.models import WorkspaceState
    from workspaces.services import HOME

    if workspace.owner_id != owner.pk:
        raise ValidationError({"code_workspace": "You can only snapshot your own workspaces."})
    if workspace.state != WorkspaceState.RUNNING:
        raise ValidationError(
            {"code_workspace": f"{workspace.name} is {workspace.state}; start it to snapshot a folder."}
        )
    relative = (path or "").strip().strip("/")
    if ".." in relative.split("/"):
        raise ValidationError({"code_path": "Give a folder inside the workspace's home."})
    backend = get_backend()
    try:
        chunks = backend.archive_get(backend.handle_for(workspace.uid), f"{HOME}/{relative}".rstrip("/"))
        data, count = archives.folder_snapshot(chunks)
    except RuntimeError_ as error:
        if error.reason == "not_found":
            raise ValidationError({"code_path": f"There is no folder {relative or '.'} in {workspace.name}."}) from None
        raise
    digest = hashlib.sha256(data).hexdigest()
    existing = CodeArchive.objects.filter(team=workspace.team, sha256=digest).first()
    if existing is not None:
        return existing
    archive = CodeArchive(
        team=workspace.team, created_by=owner, sha256=digest, size_bytes=len(data), format=CodeArchive.Format.TAR,
        source=f"workspace: {owner.username}/{workspace.name}:{relative or '.'}"[:300], file_count=count,
    )  # fmt: skip
    archive.file.save(f"{digest}.tar", File(io.BytesIO(data)), save=False)
    archive.save()
    return archive


# --- Cancelling -----------------------------------------------------------------------------------


def job_may_manage(*, job: Job, user: User) -> bool:
    """The owner, the team's admins and staff may cancel a job."""
    return job.owner_id == user.pk or user_can_manage_team(user=user, team=job.team)


def job_cancel(*, job: Job, by: User, actor: Actor) -> Job:
    if not job_may_manage(job=job, user=by):
        audit_record(actor=actor, action="job.cancel", target=job, team=job.team, outcome=Outcome.DENIED)
        raise PermissionDenied("Only the job's owner or a team admin can cancel it.")
    fields = {"reason": "cancelled", "retry_at": None, "stopped_at": timezone.now(), "deadline": None}
    with transaction.atomic():
        if job.state == S.QUEUED:
            queue_cancel(workload=_ref(job), actor=actor)
        job = _transition(job, S.CANCELLED, actor=actor, step="cancelled", message=f"Cancelled by {by.username}",
                          fields=fields, action="job.cancel")  # fmt: skip
        if not Allocation.objects.filter(workload_kind=Job.KIND, workload_uid=job.pk, closed_at__isnull=True).exists():
            return job
        _queue_settle(job)  # stops the container (if any), keeps its log and outputs, releases quota
    return job


# --- What the worker does -------------------------------------------------------------------------


def jobs_admitted(admitted: list[tuple[WorkloadRef, int]]) -> None:
    """Called after an admission pass admitted queued jobs: each goes on to start. Reads them
    all (and their GPUs) in two queries, however many the pass admitted."""
    queued = Job.objects.filter(pk__in=[w.uid for w, _ in admitted], state=S.QUEUED).select_related("team")
    jobs = {str(job.pk): job for job in queued}
    devices = allocations_device_ids(allocation_ids=[allocation_id for _, allocation_id in admitted])
    for workload, allocation_id in admitted:
        job = jobs.get(str(workload.uid))
        if job is None:
            continue  # cancelled meanwhile; its release gives the capacity back
        try:
            _transition(job, S.ADMITTED, actor=Actor.system(), step="admitted", message=workload_admitted_message(job),
                        fields={"gpu_device_ids": devices[allocation_id], "retry_at": None})  # fmt: skip
        except IllegalTransition:
            continue
        _queue_start(job)


def job_spec_for_runtime(job: Job) -> WorkloadSpec:
    """The container of the job's current attempt: its pinned image, command with parameters
    filled in (after its environment's start-up script, if any), env (the environment's, then
    the job's; parameters as PARAM_*, secrets decrypted), size, GPUs, /code and /output."""
    environment = job.environment_revision
    env = {
        **environment_workload_env(environment),
        **job.env,
        **secrets_open(job.secret_env),
        **spec.parameter_env(job.parameters),
    }
    env.update({"DOCKYARD_JOB_ID": job.uid, "DOCKYARD_JOB_ATTEMPT": str(job.attempt)})
    files = ()
    if job.code is not None:
        with job.code.file.open("rb") as handle:
            files = (FileDrop(path="/", archive=archives.code_tar(handle)),)
    return WorkloadSpec(
        uid=job.uid,
        kind=Job.KIND,
        owner=job.owner.username,
        team=job.team.slug,
        image=job.image_digest,
        command=environment_workload_command(
            environment, tuple(spec.argv(job.command, shell=job.shell, parameters=job.parameters))
        ),
        env=env,
        working_dir="/code" if job.code is not None else OUTPUT,
        cpus=float(job.cpus),
        memory_mib=int(job.memory_gib * 1024),
        gpu_device_ids=tuple(job.gpu_device_ids),
        gpus=job.gpus,
        gpu_model=job.profile.gpu_model,
        nodes=job.nodes,
        timeout_s=job.timeout_s,
        team_limits=team_runtime_limits(team=job.team),
        mounts=(Mount(name="output", target=OUTPUT),),
        labels=dict(settings.DOCKYARD_WORKLOAD_LABELS),
        files=files,
    )


def job_run_start(*, job_id: str) -> bool:
    """Admitted → starting → running for the next attempt. Idempotent: a second run finds the
    container the first made. True if the job now runs."""
    job = _load(job_id)
    if job is None or job.state not in (S.ADMITTED, S.STARTING):
        return False
    backend = get_backend()
    try:
        if job.state == S.ADMITTED:
            workload_image_ensure(workload=job, backend=backend)  # pulls again (with progress) if it went
            with transaction.atomic():
                number = job.attempt + 1
                JobAttempt.objects.get_or_create(job=job, number=number)
                job = _transition(job, S.STARTING, actor=Actor.system(), step="starting",
                                  message=f"Starting attempt {number}", fields={"attempt": number})  # fmt: skip
        try:
            runtime_spec = job_spec_for_runtime(job)
        except (ValueError, OSError) as error:  # secrets sealed with another key, code file gone
            raise RuntimeError_(
                str(error), reason="spec", permanent=True, user_message=f"The job cannot start: {error}"
            ) from error
        handle = backend.start(runtime_spec)
        observed = Observed(uid=job.uid, state=State.RUNNING) if backend.starts_at_once else backend.inspect(handle)
    except RuntimeError_ as error:
        if not error.permanent:
            raise
        job_fail_to_start(job=job, error=error)
        return False
    except IllegalTransition:
        return False  # cancelled while the image was fetched: nothing was started
    return _observe_start(job, observed)


def _observe_start(job: Job, observed) -> bool:
    """Starting → running once the backend runs the attempt (or already ran it). While its pods
    wait (scheduled nowhere yet, pulling the image, queued in Kueue) the job stays starting, its
    timeout clock not yet going, and the owner sees why; held up by a problem for longer than
    DOCKYARD_JOB_START_TIMEOUT_S, it fails. True if the job now runs."""
    now = timezone.now()
    if observed.state == State.CREATED:
        workload_note_waiting(workload=job, observed=observed)
        stuck = observed.reason and observed.reason not in WAITING_FOR_CAPACITY
        if stuck and (now - job.state_changed_at).total_seconds() >= settings.DOCKYARD_JOB_START_TIMEOUT_S:
            problem = observed.message or observed.reason
            job_fail_to_start(job=job, error=RuntimeError_(
                f"held up by {observed.reason}: {problem}", reason=observed.reason, permanent=True,
                user_message=f"The job could not start: {problem}"[:500]))  # fmt: skip
            return False
        jobs_watch_soon()  # the watch pass moves it on once it runs
        return False
    deadline = now + timedelta(seconds=job.timeout_s) if job.timeout_s else None
    try:
        with transaction.atomic():
            job = _transition(
                job,
                S.RUNNING,
                actor=Actor.system(),
                step="running",
                message=f"Attempt {job.attempt} running" + (f" on {observed.node}" if observed.node else ""),
                fields={"started_at": job.started_at or now, "deadline": deadline, "node": observed.node[:NODE_MAX]},
            )
            JobAttempt.objects.filter(job=job, number=job.attempt).update(started_at=now)
    except IllegalTransition:
        if Job.objects.filter(pk=job.pk, state__in=S.final()).exists():
            _queue_settle(job)  # cancelled while starting: the settle step removes what was made
        return False  # or another pass moved it to running first
    jobs_watch_soon()
    return True


def job_fail_to_start(*, job: Job, error: RuntimeError_) -> None:
    with transaction.atomic():
        JobAttempt.objects.filter(job=job, number=job.attempt, finished_at__isnull=True).update(
            finished_at=timezone.now(), reason=error.reason
        )
        _transition(job, S.FAILED, actor=Actor.system(), step="start", message=error.user_message,
                    detail=str(error), level=WorkloadEvent.Level.ERROR, audit_details={"reason": error.reason},
                    fields={"error_step": "start", "error_message": error.user_message[:500], "reason": error.reason,
                            "stopped_at": timezone.now(), "error_detail": str(error)[:20000]})  # fmt: skip
        release(workload=_ref(job), actor=Actor.system(), reason="failed to start")
    try:
        backend = get_backend()
        backend.remove(backend.handle_for(job.uid), keep_data=True)
    except RuntimeError_:
        pass


@dataclass(frozen=True)
class WatchResult:
    settling: int = 0
    retried: int = 0
    active: int = 0


def jobs_watch() -> WatchResult:
    """One look at every job that may need the worker: running ones whose container ended or
    whose time is up (settled), retries whose backoff is over (queued again), metrics due a
    refresh, and ended jobs that still hold quota. One engine call for all running jobs."""
    now = timezone.now()
    running = list(Job.objects.filter(state=S.RUNNING).values_list("pk", "deadline", "metrics_read_at"))
    starting = list(Job.objects.filter(state=S.STARTING).select_related("owner", "team"))
    settling = retried = 0
    if running or starting:
        backend = get_backend()
        observed = {o.uid: o for o in backend.list_managed(kind=Job.KIND)}
        started_at = backend.engine_started_at()
        interval = timedelta(seconds=settings.DOCKYARD_JOB_METRICS_INTERVAL_S)
        for pk, deadline, metrics_read_at in running:
            seen = observed.get(str(pk))
            ended = seen is None or seen.state == State.EXITED
            if ended or (deadline is not None and now >= deadline):
                cause = "engine restarted" if ended and engine_restarted(seen, started_at) else ""
                settling += _queue_settle_once(pk, cause=cause)
                continue
            if seen.state == State.CREATED:  # suspended again (Kueue preempted it): it says so
                workload_note_waiting(workload=Job.objects.get(pk=pk), observed=seen)
            if metrics_read_at is None or now - metrics_read_at >= interval:
                job_metrics_refresh(job=Job.objects.get(pk=pk))
        for job in starting:
            seen = observed.get(job.uid)
            if seen is None:
                continue  # the start step is still making it (the reconciler re-drives a lost one)
            if seen.state == State.CREATED:
                seen = backend.inspect(backend.handle_for(job.uid))  # with the image pull's progress
            _observe_start(job, seen)
    for job in Job.objects.filter(state=S.QUEUED, retry_at__lte=now).select_related("owner", "team", "profile"):
        with transaction.atomic():
            updated = Job.objects.filter(pk=job.pk, state=S.QUEUED, retry_at__isnull=False).update(retry_at=None)
            if updated:
                queue_enqueue(request=job_admission_request(job),
                              actor=Actor.system(), priority=job.priority)  # fmt: skip
                retried += 1
    ended_holding = Allocation.objects.filter(workload_kind=Job.KIND, closed_at__isnull=True).values_list(
        "workload_uid", flat=True
    )
    for pk in Job.objects.filter(pk__in=ended_holding, state__in=S.final()).values_list("pk", flat=True):
        settling += _queue_settle_once(pk)
    active = (
        Job.objects.filter(state__in=S.active()).count()
        + Job.objects.filter(state=S.QUEUED, retry_at__isnull=False).count()
    )
    return WatchResult(settling=settling, retried=retried, active=active)


def jobs_watch_soon() -> None:
    """Queues a watch pass in DOCKYARD_JOB_WATCH_S (one at a time), after the current commit."""

    def enqueue() -> None:
        from jobs.tasks import watch_task

        if cache.add(WATCH_FLAG, 1, timeout=max(30, settings.DOCKYARD_JOB_WATCH_S * 10)):
            watch_task.apply_async(countdown=settings.DOCKYARD_JOB_WATCH_S)

    transaction.on_commit(enqueue, robust=True)  # a broker or cache outage: beat watches anyway


def job_settle(*, job_id: str, cause: str = "") -> str | None:
    """Ends the current attempt of a job whose container exited, whose time ran out, or which
    was cancelled: keeps its log (and, when the job is over, metrics and outputs), removes the
    container (the output volume stays), moves the job on (succeeded, failed, timed out, or
    queued for a retry after the backoff) and releases its quota. Safe to run any number of
    times (one process at a time per job); returns the state it left the job in, or None when
    there was nothing to do. `cause` names what ended the container when Dockyard knows it
    (e.g. "engine restarted")."""
    with exclusive(f"job-settle:{job_id}", ttl_s=600) as got:
        return _settle(job_id=job_id, cause=cause) if got else None


def _settle(*, job_id: str, cause: str) -> str | None:
    job = _load(job_id)
    if job is None:
        return None
    backend = get_backend()
    handle = backend.handle_for(job.uid)
    now = timezone.now()
    outcome = None
    if job.state == S.RUNNING:
        observed = backend.inspect(handle)
        timed_out = job.deadline is not None and now >= job.deadline and observed.state != State.EXITED
        if observed.state in (State.RUNNING, State.CREATED) and not timed_out:
            return None  # still working
        if timed_out:
            backend.stop(handle, grace_s=settings.DOCKYARD_JOB_STOP_GRACE_S)
            observed = backend.inspect(handle)
        elif not cause and engine_restarted(observed, backend.engine_started_at()):
            cause = "engine restarted"  # whoever queued this settle could not tell; the container can
        outcome = _outcome(job, observed, timed_out=timed_out, cause=cause)
    elif job.state in S.final():
        backend.stop(handle, grace_s=settings.DOCKYARD_JOB_STOP_GRACE_S)
        observed = backend.inspect(handle)
    else:
        return None  # queued, admitted or starting: the start step owns it
    _attempt_finish(job, backend, handle, observed, reason=outcome.reason if outcome else job.reason)
    over = outcome is None or outcome.state != S.QUEUED
    keep_volume = not over
    if over and not job.outputs_copied:
        skipped, metrics = _outputs_copy(job, backend, handle)
        if metrics is not None:
            _metrics_store(job, metrics)  # read with the outputs: no second copy out of the container
        else:
            job_metrics_refresh(job=job, force=True)
        keep_volume = skipped > 0  # everything is in Dockyard's storage now, unless some files were too big
    backend.remove(handle, keep_data=keep_volume)
    with transaction.atomic():
        if outcome is not None:
            try:
                job = _transition(
                    job,
                    outcome.state,
                    actor=Actor.system(),
                    step=outcome.state,
                    message=outcome.message,
                    level=outcome.level,
                    fields=outcome.fields,
                    audit_details={"exit_code": observed.exit_code, "reason": outcome.reason},
                )
            except IllegalTransition:
                job = Job.objects.get(pk=job.pk)  # cancelled meanwhile: that stands
        release(workload=_ref(job), actor=Actor.system(), reason=job.state)
    if job.state == S.QUEUED:
        jobs_watch_soon()  # the watch pass queues the retry when its backoff is over
    cache.delete(_settle_flag(job.pk))
    return job.state


@dataclass(frozen=True)
class _Outcome:
    state: str
    message: str
    reason: str
    fields: dict
    level: str = WorkloadEvent.Level.INFO


def _outcome(job: Job, observed, *, timed_out: bool, cause: str = "") -> _Outcome:
    now = timezone.now()
    exit_code = observed.exit_code
    ended = {"exit_code": exit_code, "stopped_at": now, "deadline": None}
    error = WorkloadEvent.Level.ERROR
    if timed_out:
        message = f"Timed out after {job.timeout_s} s; the container was stopped"
        return _Outcome(
            S.TIMED_OUT, message, "timeout", {**ended, "reason": "timeout", "error_message": message}, error
        )
    if exit_code == 0:
        return _Outcome(S.SUCCEEDED, "Succeeded", "Completed", {**ended, "reason": "Completed"})
    if cause:
        reason, message = cause.replace(" ", "_"), f"Stopped: the container {cause.removeprefix('container ')}"
    elif observed.state == State.MISSING:
        reason, message = "container_missing", "The job's container disappeared"
    elif observed.reason == "OOMKilled":
        reason, message = "OOMKilled", "Ran out of memory (OOMKilled); pick a larger profile"
    else:
        reason, message = observed.reason or "Error", f"Exited with code {exit_code}"
    if job.attempt <= job.max_retries:
        delay = min(
            settings.DOCKYARD_JOB_RETRY_BACKOFF_S * 2 ** (job.attempt - 1), settings.DOCKYARD_JOB_RETRY_BACKOFF_MAX_S
        )
        retry = f"{message}; retry {job.attempt} of {job.max_retries} in {delay:g} s"
        fields = {
            "exit_code": exit_code,
            "reason": reason,
            "deadline": None,
            "retry_at": now + timedelta(seconds=delay),
        }
        return _Outcome(S.QUEUED, retry, reason, fields, error)
    return _Outcome(S.FAILED, message, reason, {**ended, "reason": reason, "error_message": message[:500]}, error)


def _attempt_finish(job: Job, backend, handle, observed, *, reason: str) -> None:
    attempt = JobAttempt.objects.filter(job=job, number=job.attempt).first()
    if attempt is None or attempt.finished_at is not None:
        return
    limit = settings.DOCKYARD_JOB_LOG_MAX_KB * 1024
    try:  # only the end is held while the log streams past
        text, cut = log_tail(backend.logs(handle), max_bytes=limit) if observed.state != State.MISSING else ("", False)
    except RuntimeError_:
        text, cut = "", False
    attempt.log_truncated = cut
    attempt.log = text
    attempt.exit_code = observed.exit_code
    attempt.reason = reason or observed.reason
    attempt.finished_at = observed.finished_at or timezone.now()
    attempt.save()


def job_metrics_refresh(*, job: Job, force: bool = False, max_age_s: float = 0.0) -> dict:
    """Reads /output/metrics.jsonl from the job's container into the job (series and last
    values). Without `force`, only for a running job, and not when read under `max_age_s` ago."""
    if not force and job.state != S.RUNNING:
        return job.metrics
    fresh = job.metrics_read_at and (timezone.now() - job.metrics_read_at).total_seconds() < max_age_s
    if not force and fresh:
        return job.metrics
    backend = get_backend()
    try:
        read = metrics_read_stream(backend.archive_get(backend.handle_for(job.uid), METRICS_FILE))
    except RuntimeError_:
        return job.metrics  # no file yet, or no container
    if read is None:
        return job.metrics
    return _metrics_store(job, read)


def metrics_limits() -> spec.MetricsLimits:
    return spec.MetricsLimits(
        max_bytes=settings.DOCKYARD_JOB_METRICS_MAX_MB * 1024 * 1024,
        max_line=settings.DOCKYARD_JOB_METRICS_MAX_LINE_KB * 1024,
        max_series=settings.DOCKYARD_JOB_METRICS_MAX_SERIES,
        max_points=settings.DOCKYARD_JOB_METRICS_MAX_POINTS,
    )


def metrics_read_stream(chunks) -> spec.MetricsRead | None:
    """metrics.jsonl from a tar stream of it, in bounded memory: past the size limit only the
    file's end is read (and the owner told so). None when the stream holds no file."""
    limits = metrics_limits()
    with archives.tar_single_file_open(chunks, limit=limits.max_bytes) as (handle, size):
        if handle is None:
            return None
        return _metrics_read(handle, size, limits)


def _metrics_read(handle: IO[bytes], size: int, limits: spec.MetricsLimits) -> spec.MetricsRead:
    cut = size > limits.max_bytes
    read = spec.metrics_parse(handle, limits=limits, partial_first=cut)
    if cut:
        read.notes.insert(0, f"metrics.jsonl is {size // (1024 * 1024)} MiB; only its last "
                             f"{limits.max_bytes // (1024 * 1024)} MiB were read.")  # fmt: skip
    return read


def _metrics_store(job: Job, read: spec.MetricsRead) -> dict:
    series, last = read.series, read.last
    Job.objects.filter(pk=job.pk).update(metrics=series, metrics_last=last, metrics_read_at=timezone.now())
    job.metrics, job.metrics_last = series, last
    for note in read.notes:  # told once, not on every read
        if not WorkloadEvent.objects.filter(kind=Job.KIND, uid=job.pk, step="metrics", message=note).exists():
            workload_event_add(workload=job, step="metrics", message=note, level=WorkloadEvent.Level.ERROR)
    return series


def _outputs_copy(job: Job, backend, handle) -> tuple[int, spec.MetricsRead | None]:
    """Copies the files under /output into Dockyard's storage (within the size limit). Returns
    how many files were too big to copy, and metrics.jsonl read, if it was among them."""
    limit, total, skipped = settings.DOCKYARD_JOB_OUTPUT_MAX_MB * 1024 * 1024, 0, 0
    metrics = None
    try:
        chunks = backend.archive_get(handle, OUTPUT)
        for path, info, handle_ in archives.tar_stream_files(chunks):
            if total + info.size > limit:
                skipped += 1
                continue
            total += info.size
            with tempfile.TemporaryFile() as spool:  # big files go through disk, not memory
                shutil.copyfileobj(handle_, spool, 1024 * 1024)
                if path == METRICS_FILE.removeprefix(f"{OUTPUT}/"):
                    limits = metrics_limits()
                    spool.seek(max(0, info.size - limits.max_bytes))
                    metrics = _metrics_read(spool, info.size, limits)
                spool.seek(0)
                name = default_storage.save(f"outputs/{job.pk}/{path}", File(spool))
            JobOutput.objects.update_or_create(job=job, path=path, defaults={"size_bytes": info.size, "file": name})
    except RuntimeError_ as error:
        if error.reason != "not_found":
            raise
    Job.objects.filter(pk=job.pk).update(outputs_copied=True)
    if skipped:
        workload_event_add(workload=job, step="outputs", level=WorkloadEvent.Level.ERROR,
                           message=f"{skipped} output file(s) over the {settings.DOCKYARD_JOB_OUTPUT_MAX_MB} MiB "
                                   "limit were not copied; they stay in the job's output volume")  # fmt: skip
    return skipped, metrics


def job_output_open(*, job: Job, output: JobOutput, user: User, ip: str | None):
    """Opens an output file for download (audited)."""
    audit_record(
        actor=Actor.for_user(user, ip=ip),
        action="job.output_download",
        target=job,
        team=job.team,
        details={"path": output.path, "size_bytes": output.size_bytes},
    )
    return output.file.open("rb")


def job_container_remove(*, uid: str, handle: Handle | None = None) -> None:
    """Removes a job's container (never its output volume): the one `handle` names (as it was
    observed), else the one at the uid's name."""
    backend = get_backend()
    backend.remove(handle or backend.handle_for(uid), keep_data=True)


# --- Helpers --------------------------------------------------------------------------------------


def _load(job_id) -> Job | None:
    return (
        Job.objects.select_related("owner", "team", "image", "profile", "code", "environment_revision")
        .filter(pk=job_id)
        .first()
    )


def _ref(job: Job) -> WorkloadRef:
    return WorkloadRef(kind=Job.KIND, uid=job.pk)


def _request(*, uid, owner: User, team: Team, profile: ResourceProfile, nodes: int = 1) -> AdmissionRequest:
    """What admission counts: the profile once per pod (a job on N nodes holds N times it)."""
    per_pod = Resources.of_profile(profile)
    resources = Resources(per_pod.cpus * nodes, per_pod.memory_gib * nodes, per_pod.gpus * nodes, per_pod.gpu_model)
    return AdmissionRequest(
        workload=WorkloadRef(kind=Job.KIND, uid=uid), team=team, user=owner, resources=resources, profile=profile
    )


def job_admission_request(job: Job) -> AdmissionRequest:
    return _request(uid=job.pk, owner=job.owner, team=job.team, profile=job.profile, nodes=job.nodes)


def _require_member(user: User, team: Team) -> None:
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ValidationError({"team": f"You are not a member of {team.slug}."})


def _queue_start(job: Job) -> None:
    from jobs.tasks import start_task

    start_task.delay_on_commit(str(job.pk))


def _queue_settle(job: Job) -> None:
    from jobs.tasks import settle_task

    settle_task.delay_on_commit(str(job.pk))


def _settle_flag(pk) -> str:
    return f"jobs:settling:{pk}"


def _queue_settle_once(pk, *, cause: str = "") -> int:
    """Queues settling a job unless a settle is already queued for it (from an earlier pass)."""
    from jobs.tasks import settle_task

    if not cache.add(_settle_flag(pk), 1, timeout=60):
        return 0
    settle_task.delay(str(pk), cause)
    return 1
