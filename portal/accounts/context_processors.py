from __future__ import annotations


def teams(request) -> dict:
    """The signed-in person's teams and active team, for the page header."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    active = request.active_membership
    return {"my_memberships": request.my_memberships, "active_membership": active if active else None}
