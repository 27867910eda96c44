from __future__ import annotations

from django.contrib import admin

from portal.core.admin_site import AuditedAdminMixin
from workspaces.models import WorkspacePolicy


@admin.register(WorkspacePolicy)
class WorkspacePolicyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Staff set each team's idle timeouts and maximum lifetime here (team admins via the API)."""

    audit_actions = {
        "create": "workspace.policy_update",
        "update": "workspace.policy_update",
        "delete": "workspace.policy_update",
    }
    list_display = ["team", "idle_timeout_s", "gpu_idle_timeout_s", "max_lifetime_s"]

    def audit_team(self, obj):
        return obj.team
