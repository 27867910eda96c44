"""Which team the person is working in right now (shown in the header, used by forms)."""

from __future__ import annotations

from django.utils.functional import SimpleLazyObject

from portal.accounts.selectors import membership_list_for

ACTIVE_TEAM_SESSION_KEY = "dockyard_active_team"


def _memberships(request) -> list:
    if not request.user.is_authenticated:
        return []
    return list(membership_list_for(user=request.user))


def _active_membership(request):
    memberships = request.my_memberships
    wanted = request.session.get(ACTIVE_TEAM_SESSION_KEY)
    for membership in memberships:
        if membership.team_id == wanted:
            return membership
    return memberships[0] if memberships else None


class ActiveTeamMiddleware:
    """Sets `request.my_memberships` and `request.active_membership`, lazily: no query unless
    a page asks for them, and one query however often they are used."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.my_memberships = SimpleLazyObject(lambda: _memberships(request))
        request.active_membership = SimpleLazyObject(lambda: _active_membership(request))
        return self.get_response(request)
