"""Staff-only pages: a plain 403 for everyone else who is signed in."""

from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied


def staff_required(view):
    @wraps(view)
    @login_required
    def guarded(request, *args, **kwargs):
        if not request.user.is_staff:
            raise PermissionDenied("This page is for platform admins.")
        return view(request, *args, **kwargs)

    return guarded
