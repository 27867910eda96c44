"""The choke point for team permissions in views: look a team up by what the person may do."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404

from portal.accounts.models import Team
from portal.accounts.services import user_can_manage_team


def team_visible_or_404(*, user, slug: str) -> Team:
    """A team the person belongs to (or any, for staff); outsiders get 404, not a hint."""
    return get_object_or_404(Team.objects.visible_to(user), slug=slug)


def team_manageable_or_403(*, user, slug: str) -> Team:
    """A team the person may manage: 404 if they cannot see it, 403 if they only belong to it."""
    team = team_visible_or_404(user=user, slug=slug)
    if not user_can_manage_team(user=user, team=team):
        raise PermissionDenied(f"Only team admins of {team.slug} can manage its members.")
    return team
