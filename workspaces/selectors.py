"""Reading workspaces: who may see, open and manage which."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from portal.accounts.models import User
from portal.workloads.models import WorkloadEvent
from workspaces.models import Workspace, WorkspaceShare

RELATED = ("owner", "team", "image", "profile", "image_revision")


def workspace_list_for(*, user, shared: bool = False) -> QuerySet[Workspace]:
    """A person's own workspaces, or (shared=True) those shared with them; one query."""
    workspaces = Workspace.objects.select_related(*RELATED)
    if shared:
        return workspaces.filter(shares__user=user).order_by("owner__username", "name")
    return workspaces.filter(owner=user).order_by("name")


def workspace_visible_to(*, user) -> QuerySet[Workspace]:
    """Workspaces a person may see: their own and those shared with them (staff see all)."""
    workspaces = Workspace.objects.select_related(*RELATED)
    if user.is_staff:
        return workspaces
    return workspaces.filter(Q(owner=user) | Q(shares__user=user)).distinct()


def workspace_user_may_open(*, user_id: int, workspace: Workspace) -> bool:
    """The one check the proxy and the Open button make: may this person use the notebook?
    An active account, a member of the workspace's team, and its owner or a teammate it is
    shared with. One query, asked afresh at every decision, so a removed member or a
    deactivated account is refused at once."""
    member = User.objects.filter(pk=user_id, is_active=True, memberships__team_id=workspace.team_id)
    if workspace.owner_id != user_id:
        member = member.filter(workspace_shares__workspace_id=workspace.pk)
    return member.exists()


def workspace_secrets_left_out(*, workspace: Workspace) -> list[str]:
    """The secret names of the job this workspace reproduces that it runs without (they were
    someone else's); empty when it reproduces nothing or its owner's own job."""
    if workspace.source_job is None:
        return []
    return sorted(set(workspace.source_job.secret_env_names) - set(workspace.secret_env_names))


def workspace_share_list(*, workspace: Workspace) -> QuerySet[WorkspaceShare]:
    return WorkspaceShare.objects.filter(workspace=workspace).select_related("user").order_by("user__username")


def workspace_events(*, workspace: Workspace) -> QuerySet[WorkloadEvent]:
    return WorkloadEvent.objects.filter(kind=Workspace.KIND, uid=workspace.pk).order_by("id")


def workspace_queue_positions(*, workspaces) -> dict:
    """Place in the admission queue of each waiting workspace (1 = next)."""
    from portal.quotas.selectors import queue_positions

    return queue_positions(uids=[w.pk for w in workspaces if w.state == "queued"])


def workspace_estimated_starts(*, positions: dict) -> dict:
    """A rough start time for each waiting workspace: the k-th in the queue starts when the
    k-th running workspace is expected to end, by its cull deadline if it has one, else by
    how long workspaces have typically run lately (median of the last 200 that ended).
    None where there is nothing to go by."""
    if not positions:
        return {}
    import statistics
    from datetime import timedelta

    from django.utils import timezone

    from portal.quotas.models import Allocation

    spans = list(
        Allocation.objects.filter(workload_kind="workspace", closed_at__isnull=False)
        .order_by("-closed_at")
        .values_list("opened_at", "closed_at")[:200]
    )
    typical = statistics.median((end - start).total_seconds() for start, end in spans) if spans else None
    now = timezone.now()
    ends = []
    for started_at, cull_at in Workspace.objects.filter(state="running").values_list("started_at", "cull_at"):
        if cull_at is not None:
            ends.append(cull_at)
        elif typical is not None and started_at is not None:
            ends.append(max(now, started_at + timedelta(seconds=typical)))
    ends.sort()
    return {uid: ends[position - 1] if position <= len(ends) else None for uid, position in positions.items()}
