"""Reading people, teams and tokens: the querysets every view uses."""

from __future__ import annotations

from django.db.models import QuerySet

from portal.accounts.models import ApiToken, Membership, Team, User


def membership_list_for(*, user: User) -> QuerySet[Membership]:
    """A person's own memberships, with their teams, in one query."""
    return Membership.objects.filter(user=user).select_related("team").order_by("team__slug")


def team_member_list(*, team: Team) -> QuerySet[Membership]:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__username")


def token_list_for(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")
