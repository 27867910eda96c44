"""Reading workspaces: who may see, open and manage which."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.workloads.models import WorkloadEvent
from workspaces.models import Workspace


def workspace_list_for(*, user) -> QuerySet[Workspace]:
    """A person's own workspaces, with what the list page shows, in one query."""
    return (
        Workspace.objects.filter(owner=user)
        .select_related("owner", "team", "image", "profile", "image_revision")
        .order_by("name")
    )


def workspace_visible_to(*, user) -> QuerySet[Workspace]:
    """Workspaces a person may see: their own (staff see all)."""
    workspaces = Workspace.objects.select_related("owner", "team", "image", "profile", "image_revision")
    return workspaces if user.is_staff else workspaces.filter(owner=user)


def workspace_user_may_open(*, user_id: int, workspace: Workspace) -> bool:
    """The one check the proxy and the Open button make: may this person use the notebook?"""
    return workspace.owner_id == user_id


def workspace_events(*, workspace: Workspace) -> QuerySet[WorkloadEvent]:
    return WorkloadEvent.objects.filter(kind=Workspace.KIND, uid=workspace.pk).order_by("id")
