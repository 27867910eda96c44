"""Every change to a workspace: create, start, stop, delete, and the steps the worker takes.

Pages, the API and tasks call these; each is audited, and each moves state only through
`workload_transition`.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.accounts.models import Membership, Team, User
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
from portal.core.secrets import secrets_open
from portal.quotas.models import Allocation, ResourceProfile
from portal.quotas.services.admission import (
    admission_never_fits,
    admit,
    allocation_device_ids,
    allocations_device_ids,
    release,
)
from portal.quotas.services.queue import queue_cancel, queue_enqueue
from portal.quotas.services.quota import team_runtime_limits
from portal.quotas.values import AdmissionRequest, Refusal, Resources, WorkloadRef
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import Endpoint, FileDrop, Mount, State, WorkloadSpec
from portal.workloads.models import NODE_MAX, WorkloadEvent
from portal.workloads.services import (
    IllegalTransition,
    workload_admitted_message,
    workload_event_add,
    workload_image_ensure,
    workload_note_waiting,
    workload_transition,
)
from workspaces.culling import CullDecision, Policy, cull_decide
from workspaces.models import TRANSITIONS, Workspace, WorkspacePolicy, WorkspaceShare, WorkspaceState

if TYPE_CHECKING:
    from jobs.models import CodeArchive, Job

NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
HOME = "/home/jovyan"
S = WorkspaceState


class QuotaRefused(PermissionDenied):
    """Admission said no; the message names the limit and the numbers."""

    def __init__(self, refusal: Refusal):
        super().__init__(f"Not started: {refusal.message}.")
        self.refusal = refusal


def _transition(workspace: Workspace, to: str, **kwargs) -> Workspace:
    return workload_transition(workload=workspace, to=to, allowed=TRANSITIONS, **kwargs)


# --- What people do ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceSource:
    """What a workspace runs: an image revision (pinned by digest), maybe an environment
    revision, and, when it reproduces a job, that job's env, secrets, parameters and code."""

    image: Image
    revision: ImageRevision
    environment_revision: EnvironmentRevision | None = None
    env: dict = field(default_factory=dict)
    sealed_secret_env: str = ""
    secret_env_names: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    code: CodeArchive | None = None
    source_job: Job | None = None
    digest: str = ""  # a reproduced job's exact digest; else the revision's
    secrets_left_out: tuple[str, ...] = ()  # a reproduced job's secrets this person may not have

    def fields(self) -> dict:
        return {
            "image": self.image, "image_revision": self.revision, "image_digest": self.digest or self.revision.digest,
            "environment_revision": self.environment_revision, "env": self.env, "secret_env": self.sealed_secret_env,
            "secret_env_names": list(self.secret_env_names), "parameters": self.parameters, "code": self.code,
            "source_job": self.source_job,
        }  # fmt: skip

    def audit_details(self) -> dict:
        details = {"image": self.image.slug, "digest": self.digest or self.revision.digest}
        if self.environment_revision is not None:
            details["environment"] = self.environment_revision.ref
        if self.source_job is not None:
            details["reproduces"] = str(self.source_job.pk)
        if self.secrets_left_out:
            details["left_out"] = list(self.secrets_left_out)  # a key saying "secret" would be masked
        return details


def workspace_create(
    *, owner: User, team: Team, name: str, profile: ResourceProfile | None, actor: Actor, image: Image | None = None,
    environment_revision: EnvironmentRevision | None = None, wait: bool = False,
) -> Workspace:  # fmt: skip
    """Admits and creates a workspace, then queues its start. Refusals are audited, nothing made.

    It runs an image, or an environment revision (whose default profile is used when none is
    given); with neither, the team's default environment. With `wait`, a workspace that does
    not fit now is created `queued` and waits its turn in the admission queue instead; it
    starts by itself once a pass admits it.
    """
    _require_member(owner, team)
    name = _clean_name(owner, name)
    source = _source_for(owner=owner, team=team, image=image, environment_revision=environment_revision)
    if profile is None and source.environment_revision is not None:
        profile = source.environment_revision.profile
    return _create(owner=owner, team=team, name=name, source=source, profile=profile, actor=actor, wait=wait)


def workspace_reproduce(
    *, job, by: User, actor: Actor, name: str = "", profile: ResourceProfile | None = None, wait: bool = False
) -> Workspace:
    """A workspace to rerun or debug a finished job interactively: the job's exact image
    digest (and environment revision), its code read-only at /code, its parameters as PARAM_*
    and its env. For members of the job's team who may launch the environment it ran on.
    The secrets typed into the job go only to its owner: anyone else starts without them, and
    the workspace records which names were left out."""
    from jobs.models import JobState

    if not Membership.objects.filter(user=by, team=job.team, user__is_active=True).exists():
        raise PermissionDenied(f"Only members of {job.team.slug} can open its jobs in a workspace.")
    if job.state not in JobState.final():
        raise ValidationError(f"{job.name} is {job.state}; a job opens in a workspace once it has finished.")
    if job.environment_revision is not None:
        environment_require_launchable(revision=job.environment_revision, user=by, team=job.team)
    own = job.owner_id == by.pk
    source = WorkspaceSource(
        image=job.image, revision=job.image_revision, environment_revision=job.environment_revision,
        env=dict(job.env), sealed_secret_env=job.secret_env if own else "",
        secret_env_names=tuple(job.secret_env_names) if own else (), parameters=dict(job.parameters), code=job.code,
        source_job=job, digest=job.image_digest, secrets_left_out=() if own else tuple(job.secret_env_names),
    )  # fmt: skip
    if not source.image.default_command:
        raise ValidationError(
            f"{job.name} ran on {source.image.slug}, which has no JupyterLab: it cannot open in a workspace."
        )
    name = _clean_name(by, name or _free_name(by, f"{job.name}-repro"))
    return _create(
        owner=by, team=job.team, name=name, source=source, profile=profile or job.profile, actor=actor, wait=wait
    )


def _free_name(owner: User, wanted: str) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", wanted.lower()).strip("-")[:56].strip("-") or "workspace"
    taken = set(Workspace.objects.filter(owner=owner, name__startswith=base).values_list("name", flat=True))
    return next(n for n in [base, *(f"{base}-{i}" for i in range(2, 1000))] if n not in taken)


def _source_for(
    *, owner: User, team: Team, image: Image | None, environment_revision: EnvironmentRevision | None
) -> WorkspaceSource:
    if image is None and environment_revision is None:
        environment_revision = environment_team_default(team=team)
        if environment_revision is None:
            raise ValidationError({"image": "Choose an image or an environment."})
    if environment_revision is not None:
        environment_require_launchable(revision=environment_revision, user=owner, team=team)
        image = environment_revision.environment.image
        source = WorkspaceSource(
            image=image, revision=environment_revision.image_revision, environment_revision=environment_revision
        )
    else:
        if not Image.objects.visible_to(owner).filter(pk=image.pk).exists():
            raise ValidationError({"image": f"{image.slug} is not available to you."})
        source = WorkspaceSource(image=image, revision=image_require_startable(image=image))
    if not image.default_command:
        raise ValidationError({"image": f"{image.slug} does not start JupyterLab: it is for jobs only."})
    return source


def _create(
    *, owner: User, team: Team, name: str, source: WorkspaceSource, profile: ResourceProfile | None, actor: Actor,
    wait: bool,
) -> Workspace:  # fmt: skip
    if profile is None:
        raise ValidationError({"profile": "Choose a size."})
    if not profile.is_active:
        raise ValidationError({"profile": f"The profile {profile.slug} is not offered any more."})
    uid = uuid.uuid4()
    try:
        allocation = _admit(uid=uid, owner=owner, team=team, profile=profile, actor=actor)
    except QuotaRefused as refused:
        if not wait:
            raise
        _require_may_ever_fit(owner=owner, team=team, profile=profile)
        return _create_waiting(
            uid=uid, owner=owner, team=team, name=name, source=source, profile=profile, refusal=refused.refusal,
            actor=actor,
        )  # fmt: skip
    try:
        with transaction.atomic():
            workspace = Workspace.objects.create(
                id=uid,
                owner=owner,
                team=team,
                name=name,
                **source.fields(),
                profile=profile,
                cpus=profile.cpus,
                memory_gib=profile.memory_gib,
                gpus=profile.gpus,
                gpu_device_ids=allocation_device_ids(allocation=allocation),
                state=S.PENDING,
                jupyter_token=secrets.token_hex(32),
            )
            workload_event_add(workload=workspace, step="admitted", message=workload_admitted_message(workspace))
            _note_secrets_left_out(workspace, source)
            audit_record(
                actor=actor,
                action="workspace.create",
                target=workspace,
                team=team,
                details={"name": name, **source.audit_details(), "profile": profile.slug},
            )
            _queue_start(workspace)
    except IntegrityError:
        release(workload=WorkloadRef(kind=Workspace.KIND, uid=uid), actor=actor, reason="create failed")
        raise ValidationError({"name": f"You already have a workspace called {name}."}) from None
    return workspace


def _create_waiting(
    *, uid, owner, team, name, source: WorkspaceSource, profile, refusal: Refusal, actor: Actor
) -> Workspace:
    with transaction.atomic():
        workspace = Workspace.objects.create(
            id=uid, owner=owner, team=team, name=name, **source.fields(), profile=profile, cpus=profile.cpus,
            memory_gib=profile.memory_gib, gpus=profile.gpus, state=S.QUEUED, jupyter_token=secrets.token_hex(32),
        )  # fmt: skip
        queue_enqueue(request=_request(uid=uid, owner=owner, team=team, profile=profile), actor=actor)
        workload_event_add(workload=workspace, step="queued", message=f"Waiting for capacity: {refusal.message}")
        _note_secrets_left_out(workspace, source)
        audit_record(
            actor=actor,
            action="workspace.create",
            target=workspace,
            team=team,
            details={"name": name, **source.audit_details(), "profile": profile.slug, "waiting": refusal.message},
        )
    return workspace


def _require_may_ever_fit(*, owner: User, team: Team, profile: ResourceProfile) -> None:
    """Waiting is for what fits once others finish: a size over a limit, or bigger than any
    node's GPUs, would wait for ever, so it is refused at once, naming the limit."""
    refusal = admission_never_fits(request=_request(uid=None, owner=owner, team=team, profile=profile))
    if refusal is not None:
        raise ValidationError({"profile": f"{profile.slug} can never run here: {refusal.message}."})


def _note_secrets_left_out(workspace: Workspace, source: WorkspaceSource) -> None:
    if source.secrets_left_out:
        names = ", ".join(source.secrets_left_out)
        workload_event_add(
            workload=workspace, step="secrets",
            message=f"Started without the job's secrets ({names}): they go only to the job's owner",
        )  # fmt: skip


def workspaces_admitted(admitted: list[tuple[WorkloadRef, int]]) -> None:
    """Called after an admission pass admitted waiting workspaces: each goes on to start. Reads
    them all (and their GPUs) in two queries, however many the pass admitted."""
    queued = Workspace.objects.filter(pk__in=[w.uid for w, _ in admitted], state=S.QUEUED).select_related("team")
    workspaces = {str(w.pk): w for w in queued}
    devices = allocations_device_ids(allocation_ids=[allocation_id for _, allocation_id in admitted])
    for workload, allocation_id in admitted:
        workspace = workspaces.get(str(workload.uid))
        if workspace is None:
            continue  # cancelled meanwhile; release gives the capacity back
        workspace = _transition(
            workspace,
            S.PENDING,
            actor=Actor.system(),
            step="admitted",
            message=workload_admitted_message(workspace),
            action="workspace.start",
            audit_details={"after_waiting": True},
            fields={"gpu_device_ids": devices[allocation_id]},
        )
        _queue_start(workspace)


def workspace_start(*, workspace: Workspace, actor: Actor) -> Workspace:
    """Starts a stopped or failed workspace again, with the same image revision and home, for
    an owner who is still an active member of its team."""
    if not Membership.objects.filter(user=workspace.owner, team=workspace.team, user__is_active=True).exists():
        raise PermissionDenied(
            f"{workspace.name} cannot start: {workspace.owner.username} is no longer a member of {workspace.team.slug}."
        )
    if workspace.state not in (S.STOPPED, S.FAILED):
        raise_conflict(workspace, "start")
    profile = workspace.profile
    allocation = _admit(uid=workspace.pk, owner=workspace.owner, team=workspace.team, profile=profile, actor=actor)
    workspace = _transition(
        workspace,
        S.PENDING,
        actor=actor,
        step="admitted",
        message=workload_admitted_message(workspace),
        action="workspace.start",
        fields={
            "gpu_device_ids": allocation_device_ids(allocation=allocation),
            "error_step": "",
            "error_message": "",
            "error_detail": "",
        },
    )
    _queue_start(workspace)
    return workspace


def workspace_stop(
    *, workspace: Workspace, actor: Actor, reason: str = "", action: str = "workspace.stop"
) -> Workspace:
    if workspace.state == S.STOPPING:
        return workspace
    if workspace.state == S.QUEUED:
        with transaction.atomic():
            queue_cancel(workload=WorkloadRef(kind=Workspace.KIND, uid=workspace.pk), actor=actor)
            return _transition(
                workspace, S.STOPPED, actor=actor, step="stopped", message=reason or "Stopped waiting",
                action=action, audit_details={"reason": reason} if reason else None,
            )  # fmt: skip
    if workspace.state not in (S.PENDING, S.STARTING, S.RUNNING, S.FAILED):
        raise_conflict(workspace, "stop")
    workspace = _transition(
        workspace,
        S.STOPPING,
        actor=actor,
        step="stopping",
        message=reason or "Stopping",
        action=action,
        fields={"endpoint": ""},
        audit_details={"reason": reason} if reason else None,
    )
    _queue_stop(workspace)
    return workspace


def workspace_delete(*, workspace: Workspace, delete_data: bool, actor: Actor) -> None:
    """Stops (if needed) and removes the workspace; its home volume goes only if asked."""
    with transaction.atomic():
        locked = Workspace.objects.select_for_update().get(pk=workspace.pk)
        locked.delete_requested, locked.delete_data = True, delete_data
        locked.save(update_fields=["delete_requested", "delete_data"])
        audit_record(
            actor=actor,
            action="workspace.delete",
            target=locked,
            team=locked.team,
            details={"name": locked.name, "delete_data": delete_data},
        )
        if locked.state == S.STOPPING:
            return
        if locked.state in (S.STOPPED, S.QUEUED):
            _queue_stop(locked)
            return
        _transition(locked, S.STOPPING, actor=actor, step="stopping", message="Deleting")
        _queue_stop(locked)


def workspace_share(*, workspace: Workspace, user: User, by: User, actor: Actor) -> WorkspaceShare:
    """Lets a teammate open and use the workspace. Only its owner may share it."""
    details = {"user": user.username, "workspace": workspace.name}
    _require_owner(workspace=workspace, by=by, actor=actor, action="workspace.share", details=details)
    if user.pk == workspace.owner_id:
        raise ValidationError({"user": "That is the workspace's owner."})
    if not Membership.objects.filter(user=user, team=workspace.team).exists():
        raise ValidationError({"user": f"{user.username} is not a member of {workspace.team.slug}."})
    with transaction.atomic():
        share, created = WorkspaceShare.objects.get_or_create(workspace=workspace, user=user)
        if created:
            audit_record(actor=actor, action="workspace.share", target=workspace, team=workspace.team, details=details)
    return share


def workspace_unshare(*, workspace: Workspace, user: User, by: User, actor: Actor) -> None:
    """Takes access back. The proxy refuses the teammate within DOCKYARD_PROXY_AUTH_CACHE_S,
    open WebSockets included."""
    details = {"user": user.username, "workspace": workspace.name}
    _require_owner(workspace=workspace, by=by, actor=actor, action="workspace.unshare", details=details)
    with transaction.atomic():
        deleted, _ = WorkspaceShare.objects.filter(workspace=workspace, user=user).delete()
        if deleted:
            audit_record(
                actor=actor, action="workspace.unshare", target=workspace, team=workspace.team, details=details
            )


def workspaces_membership_ended(*, user: User, team: Team, actor: Actor, reason: str) -> None:
    """A person lost their place in `team`: the team's workspaces shared with them are theirs no
    more, and their own workspaces there stop (queued ones stop waiting), each with the reason
    on its page and in the audit log. Runs in the caller's transaction; stops go on commit."""
    shares = WorkspaceShare.objects.filter(user=user, workspace__team=team).select_related("workspace")
    for share in shares:
        details = {"user": user.username, "workspace": share.workspace.name, "reason": reason}
        audit_record(actor=actor, action="workspace.unshare", target=share.workspace, team=team, details=details)
    shares.delete()
    live = (S.QUEUED, S.PENDING, S.STARTING, S.RUNNING)
    for workspace in Workspace.objects.filter(owner=user, team=team, state__in=live).select_related("team"):
        try:
            workspace_stop(workspace=workspace, actor=actor, reason=f"stopped: {reason}")
        except IllegalTransition:
            continue  # moved on meanwhile (failed, or already stopping)


def _require_owner(*, workspace: Workspace, by: User, actor: Actor, action: str, details: dict) -> None:
    if by.pk == workspace.owner_id:
        return
    audit_record(
        actor=actor, action=action, target=workspace, team=workspace.team, outcome=Outcome.DENIED, details=details
    )
    raise PermissionDenied("Only the workspace's owner can share it.")


def raise_conflict(workspace: Workspace, verb: str):
    raise IllegalTransition(workspace, {"start": S.PENDING, "stop": S.STOPPING}.get(verb, verb))


def _require_member(owner: User, team: Team) -> None:
    if not Membership.objects.filter(user=owner, team=team).exists():
        raise ValidationError({"team": f"You are not a member of {team.slug}."})


def _clean_name(owner: User, name: str) -> str:
    name = name.strip().lower()
    if not NAME.match(name):
        raise ValidationError(
            {"name": "Use 1 to 63 lowercase letters, digits and dashes, starting and ending with a letter or digit."}
        )
    if Workspace.objects.filter(owner=owner, name=name).exists():
        raise ValidationError({"name": f"You already have a workspace called {name}."})
    return name


def _request(*, uid, owner: User, team: Team, profile: ResourceProfile) -> AdmissionRequest:
    return AdmissionRequest(
        workload=WorkloadRef(kind=Workspace.KIND, uid=uid),
        team=team,
        user=owner,
        resources=Resources.of_profile(profile),
        profile=profile,
    )


def _admit(*, uid, owner: User, team: Team, profile: ResourceProfile, actor: Actor) -> Allocation:
    outcome = admit(request=_request(uid=uid, owner=owner, team=team, profile=profile), actor=actor)
    if isinstance(outcome, Refusal):
        raise QuotaRefused(outcome)
    return outcome


def _queue_start(workspace: Workspace) -> None:
    from workspaces.tasks import start_task

    start_task.delay_on_commit(str(workspace.pk))


def _queue_stop(workspace: Workspace) -> None:
    from workspaces.tasks import stop_task

    stop_task.delay_on_commit(str(workspace.pk))


# --- What the worker does ------------------------------------------------------------------------


def workspace_spec(workspace: Workspace) -> WorkloadSpec:
    """The container for a workspace: its image digest, size, GPUs, home volume and Jupyter;
    its environment's env and start-up script; and, when it reproduces a job, the job's env,
    parameters (PARAM_*) and code (read-only at /code, put in place as for the job)."""
    from jobs import archives
    from jobs import spec as job_rules

    revision = workspace.environment_revision
    env = {
        **environment_workload_env(revision),
        **workspace.env,
        **secrets_open(workspace.secret_env),
        **job_rules.parameter_env(workspace.parameters),
        "JUPYTER_TOKEN": workspace.jupyter_token,
    }
    files = ()
    if workspace.code is not None:
        with workspace.code.file.open("rb") as handle:
            files = (FileDrop(path="/", archive=archives.code_tar(handle)),)
    return WorkloadSpec(
        uid=workspace.uid,
        kind=Workspace.KIND,
        owner=workspace.owner.username,
        team=workspace.team.slug,
        image=workspace.image_digest,
        command=environment_workload_command(revision, tuple(workspace.image.default_command)),
        env=env,
        working_dir=HOME,
        cpus=float(workspace.cpus),
        memory_mib=int(workspace.memory_gib * 1024),
        gpu_device_ids=tuple(workspace.gpu_device_ids),
        gpus=workspace.gpus,
        gpu_model=workspace.profile.gpu_model,
        team_limits=team_runtime_limits(team=workspace.team),
        mounts=(Mount(name="home", target=HOME),),
        ports=(settings.DOCKYARD_JUPYTER_PORT,),
        labels=dict(settings.DOCKYARD_WORKLOAD_LABELS),
        files=files,
    )


def workspace_run_start(*, workspace_id: str) -> bool:
    """Makes sure the image is there and the container runs; True if it is now starting."""
    workspace = (
        Workspace.objects.select_related("owner", "team", "image", "environment_revision", "code")
        .filter(pk=workspace_id)
        .first()
    )
    if workspace is None or workspace.state != S.PENDING:
        return False  # already done, stopped meanwhile, or deleted: nothing to do
    backend = get_backend()
    try:
        workload_image_ensure(workload=workspace, backend=backend)  # pulls again (with progress) if it went
        workload_event_add(workload=workspace, step="image", message="Image ready", percent=100)
        backend.start(workspace_spec(workspace))
    except RuntimeError_ as error:
        if not error.permanent:
            raise
        workspace_fail(workspace=workspace, step="container", error=error)
        return False
    deadline = timezone.now() + timedelta(seconds=settings.DOCKYARD_WORKSPACE_START_TIMEOUT_S)
    try:
        _transition(
            workspace,
            S.STARTING,
            actor=Actor.system(),
            step="container",
            message="Container created; waiting for Jupyter",
            fields={"started_at": timezone.now(), "ready_deadline": deadline},
        )
    except IllegalTransition:
        return False  # stopped meanwhile (its stop removes the container), or the reconciler moved it on
    return True


def workspace_check_ready(*, workspace_id: str) -> bool | None:
    """One look at a starting workspace: True when running, False when it failed, None to look again."""
    from workspaces.jupyter import jupyter_status

    workspace = Workspace.objects.select_related("owner", "team").filter(pk=workspace_id).first()
    if workspace is None or workspace.state != S.STARTING:
        return False
    backend = get_backend()
    observed = backend.inspect(backend.handle_for(workspace.uid))
    if observed.state in (State.EXITED, State.MISSING):
        tail = "\n".join(list(_log_tail(backend, workspace)))
        error = RuntimeError_(
            f"container {observed.state}: {observed.reason} (exit code {observed.exit_code})",
            reason=observed.reason or "exited",
            permanent=True,
            user_message=_exit_message(observed.reason),
        )
        workspace_fail(workspace=workspace, step="jupyter", error=error, detail=tail)
        return False
    endpoint = observed.endpoints.get(settings.DOCKYARD_JUPYTER_PORT)
    if endpoint is not None and jupyter_status(endpoint=endpoint, token=workspace.jupyter_token):
        _observe_launch(workspace)
        _transition(
            workspace,
            S.RUNNING,
            actor=Actor.system(),
            step="running",
            message="Running" + (f" on {observed.node}" if observed.node else ""),
            fields={"endpoint": f"{endpoint.host}:{endpoint.port}", "node": observed.node[:NODE_MAX]},
        )
        return True
    if observed.state == State.CREATED:  # its pod waits: scheduling, pulling the image
        workload_note_waiting(workload=workspace, observed=observed)
    if timezone.now() > workspace.ready_deadline:
        held_up = f" It was still waiting: {observed.message or observed.reason}." if observed.reason else ""
        error = RuntimeError_(
            "Jupyter did not answer in time",
            reason="start_timeout",
            permanent=True,
            user_message=(
                f"JupyterLab did not start within {settings.DOCKYARD_WORKSPACE_START_TIMEOUT_S} seconds.{held_up}"
            )[:500],
        )
        workspace_fail(
            workspace=workspace, step="jupyter", error=error, detail="\n".join(_log_tail(backend, workspace))
        )
        return False
    return None


def _observe_launch(workspace: Workspace) -> None:
    """Records how long this start took, from admission to Jupyter answering."""
    from portal.core.metrics import WORKSPACE_LAUNCH

    admitted = (
        WorkloadEvent.objects.filter(kind=Workspace.KIND, uid=workspace.pk, step="admitted")
        .order_by("-id").values_list("created_at", flat=True).first()
    )  # fmt: skip
    if admitted is not None:
        WORKSPACE_LAUNCH.observe((timezone.now() - admitted).total_seconds())


def _exit_message(reason: str) -> str:
    if reason == "OOMKilled":
        return "JupyterLab ran out of memory while starting. Pick a larger profile."
    return "JupyterLab stopped while starting. The container's log says why."


def _log_tail(backend, workspace: Workspace, lines: int = 40):
    try:
        return list(backend.logs(backend.handle_for(workspace.uid), tail=lines))
    except RuntimeError_:
        return []


def workspace_fail(*, workspace: Workspace, step: str, error: RuntimeError_, detail: str = "") -> None:
    """Marks the workspace failed at `step`, releases its quota, removes its container."""
    detail = (str(error) + ("\n\n" + detail if detail else ""))[:20000]
    with transaction.atomic():
        _transition(
            workspace,
            S.FAILED,
            actor=Actor.system(),
            step=step,
            message=error.user_message,
            detail=detail,
            action="workspace.fail",
            audit_details={"step": step, "reason": error.reason},
            level=WorkloadEvent.Level.ERROR,
            fields={
                "error_step": step,
                "error_message": error.user_message[:500],
                "error_detail": detail,
                "stopped_at": timezone.now(),
                "endpoint": "",
            },
        )
        release(workload=WorkloadRef(kind=Workspace.KIND, uid=workspace.pk), actor=Actor.system(), reason="failed")
    try:
        backend = get_backend()
        backend.remove(backend.handle_for(workspace.uid), keep_data=True)
    except RuntimeError_:
        pass  # the reconciler removes what is left


def workspace_run_stop(*, workspace_id: str) -> None:
    """Stops and removes the container, releases quota; deletes the row if deletion was asked."""
    workspace = Workspace.objects.select_related("team").filter(pk=workspace_id).first()
    if workspace is None:
        return
    backend = get_backend()
    handle = backend.handle_for(workspace.uid)
    if workspace.state == S.STOPPING:
        backend.stop(handle, grace_s=settings.DOCKYARD_WORKSPACE_STOP_GRACE_S)
    if workspace.state in (S.STOPPING, S.STOPPED, S.FAILED, S.QUEUED):
        backend.remove(handle, keep_data=not (workspace.delete_requested and workspace.delete_data))
    with transaction.atomic():
        release(workload=WorkloadRef(kind=Workspace.KIND, uid=workspace.pk), actor=Actor.system(), reason="stopped")
        if workspace.state == S.STOPPING:
            workspace = _transition(
                workspace,
                S.STOPPED,
                actor=Actor.system(),
                step="stopped",
                message=f"{_stop_reason(workspace)}; your files are kept",
                fields={"stopped_at": timezone.now(), "endpoint": "", "cull_at": None, "gpu_idle_since": None},
            )
        if workspace.delete_requested and workspace.state in (S.STOPPED, S.FAILED, S.QUEUED):
            audit_record(
                actor=Actor.system(),
                action="workspace.remove",
                target_type="workspaces.workspace",
                target_id=workspace.uid,
                target_repr=str(workspace),
                team=workspace.team,
                details={"data_deleted": workspace.delete_data},
            )
            Workspace.objects.filter(pk=workspace.pk).delete()


def _stop_reason(workspace: Workspace) -> str:
    """What the stop event said (e.g. "stopped: idle for 60 min"), for the final event."""
    from portal.workloads.models import WorkloadEvent

    last = WorkloadEvent.objects.filter(kind=Workspace.KIND, uid=workspace.pk, step="stopping").order_by("-id").first()
    message = last.message if last else ""
    return message if message.startswith("stopped:") else "Stopped"


def workspace_record_open(*, workspace: Workspace, user: User, ip: str | None) -> None:
    """A ticket was used to open the workspace in a browser."""
    audit_record(
        actor=Actor.for_user(user, ip=ip),
        action="workspace.open",
        target=workspace,
        team=workspace.team,
        details={"name": workspace.name},
    )


# --- Culling ----------------------------------------------------------------------------------------


def workspace_policy_for(*, team: Team) -> Policy:
    row = WorkspacePolicy.objects.filter(team=team).first() or WorkspacePolicy(team=team)
    return Policy(row.idle_timeout_s, row.gpu_idle_timeout_s, row.max_lifetime_s)


def workspace_cull_check(*, workspace_id, now=None, gpu_reader=None) -> CullDecision | None:
    """Looks at one running workspace: records when it will stop and why, and stops it when
    that time has come (audited as workspace.cull with the reason)."""
    from portal.runtime import gpus
    from workspaces.jupyter import jupyter_activity

    workspace = Workspace.objects.select_related("team").filter(pk=workspace_id, state=S.RUNNING).first()
    if workspace is None or not workspace.endpoint:
        return None
    now = now or timezone.now()
    host, _, port = workspace.endpoint.rpartition(":")
    activity = jupyter_activity(endpoint=Endpoint(host=host, port=int(port)), token=workspace.jupyter_token)
    reader = gpu_reader or gpus.utilisation
    utilisation = reader(list(workspace.gpu_device_ids)) if workspace.gpu_device_ids else None
    decision = cull_decide(
        now=now,
        started_at=workspace.started_at or workspace.created_at,
        activity=activity,
        gpu_utilisation=utilisation,
        gpu_idle_since=workspace.gpu_idle_since,
        policy=workspace_policy_for(team=workspace.team),
    )
    Workspace.objects.filter(pk=workspace.pk, state=S.RUNNING).update(
        cull_at=decision.cull_at, cull_explanation=decision.explanation, gpu_idle_since=decision.gpu_idle_since
    )
    if decision.cull_now:
        workspace_stop(workspace=workspace, actor=Actor.system(), reason=decision.reason, action="workspace.cull")
    return decision


def workspace_policy_set(*, team: Team, changes: dict, by: User, actor: Actor) -> WorkspacePolicy:
    """Staff, and the team's admins, set how long its workspaces may idle or live."""
    from portal.accounts.services import user_can_manage_team

    if not user_can_manage_team(user=by, team=team):
        audit_record(actor=actor, action="workspace.policy_update", team=team, outcome=Outcome.DENIED, details=changes)
        raise PermissionDenied(f"Only team admins of {team.slug} can change its workspace policy.")
    with transaction.atomic():
        policy, _ = WorkspacePolicy.objects.select_for_update().get_or_create(team=team)
        for key, value in changes.items():
            setattr(policy, key, value)
        policy.save()
        audit_record(actor=actor, action="workspace.policy_update", target=policy, team=team, details=changes)
    return policy
