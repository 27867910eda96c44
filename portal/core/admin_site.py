"""The Django admin site, for platform admins (staff) only, with every change audited."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction

from portal.audit.services import Actor, audit_record


class DockyardAdminSite(admin.AdminSite):
    site_header = "Dockyard administration"
    site_title = "Dockyard admin"
    index_title = "Platform administration"
    site_url = "/"

    def admin_view(self, view, cacheable=False):
        inner = super().admin_view(view, cacheable)

        def guarded(request, *args, **kwargs):
            # Signed-in people who are not staff get a plain 403, not the admin's login form.
            if request.user.is_authenticated and not request.user.is_staff:
                raise PermissionDenied("The admin pages are for platform admins.")
            return inner(request, *args, **kwargs)

        guarded.__dict__.update(inner.__dict__)
        return guarded


class AuditedAdminMixin:
    """Writes an audit event for every add, change and delete made in the admin site.

    Django calls `log_addition`/`log_change` inside the transaction of the change (including
    password changes and inline edits, which arrive in the change message), so each event
    commits or rolls back with the change it describes. Deletes are audited where they happen.
    """

    audit_noun = ""  # e.g. "user": actions become user.create, user.update, user.delete
    audit_actions: dict[str, str] = {}  # overrides per verb, e.g. {"create": "team.member_add"}

    def audit_team(self, obj):
        return None

    def _audit(self, request, obj, verb: str, details: dict) -> None:
        audit_record(
            actor=Actor.from_request(request),
            action=self.audit_actions.get(verb, f"{self.audit_noun}.{verb}"),
            target=obj,
            team=self.audit_team(obj),
            details={"via": "admin", **details},
        )

    def log_addition(self, request, obj, message):
        self._audit(request, obj, "create", {"changes": message})
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, obj, "update", {"changes": message})
        return super().log_change(request, obj, message)

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._audit(request, obj, "delete", {})
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._audit(request, obj, "delete", {})
            super().delete_queryset(request, queryset)
