"""Admin pages for profiles, quotas and the GPU inventory; every change is audited.

Allocations and the queue are read-only here: they change only through admission, so that
the limits and the one-open-allocation-per-device rule are always checked.
"""

from __future__ import annotations

from django.contrib import admin, messages

from portal.audit.services import Actor
from portal.core.admin_site import AuditedAdminMixin
from portal.quotas.models import (
    Allocation,
    AllocationGpu,
    GpuDevice,
    GpuNode,
    QueuedRequest,
    ResourceProfile,
    TeamQuota,
    UserQuota,
)
from portal.quotas.services import gpu_device_drain

LIMITS = ["max_workspaces", "max_jobs", "cpus", "memory_gib", "gpus", "gpu_hours_per_month"]


@admin.register(ResourceProfile)
class ResourceProfileAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_noun = "profile"
    list_display = ["slug", "name", "cpus", "memory_gib", "gpus", "gpu_model", "is_active", "position"]
    list_editable = ["is_active", "position"]
    search_fields = ["slug", "name"]


@admin.register(TeamQuota)
class TeamQuotaAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_actions = {"create": "quota.update", "update": "quota.update", "delete": "quota.delete"}
    list_display = ["team", *LIMITS, "updated_at"]
    search_fields = ["team__slug"]
    autocomplete_fields = ["team"]

    def audit_team(self, obj):
        return obj.team


@admin.register(UserQuota)
class UserQuotaAdmin(AuditedAdminMixin, admin.ModelAdmin):
    audit_actions = {"create": "quota.update", "update": "quota.update", "delete": "quota.delete"}
    list_display = ["team", "user", *LIMITS, "updated_at"]
    list_filter = ["team"]
    search_fields = ["team__slug", "user__username"]
    autocomplete_fields = ["team", "user"]

    def audit_team(self, obj):
        return obj.team


class GpuDeviceInline(admin.TabularInline):
    model = GpuDevice
    extra = 0
    fields = ["index", "uuid", "model", "memory_mib", "health", "drained"]
    readonly_fields = ["drained"]


@admin.action(description="Drain selected devices (no new work)")
def drain(modeladmin, request, queryset):
    count = gpu_device_drain(devices=queryset, drained=True, actor=Actor.from_request(request))
    modeladmin.message_user(request, f"{count} device(s) drained.", messages.SUCCESS)


@admin.action(description="Undrain selected devices")
def undrain(modeladmin, request, queryset):
    count = gpu_device_drain(devices=queryset, drained=False, actor=Actor.from_request(request))
    modeladmin.message_user(request, f"{count} device(s) back in service.", messages.SUCCESS)


@admin.action(description="Drain every device of the selected nodes")
def drain_nodes(modeladmin, request, queryset):
    devices = GpuDevice.objects.filter(node__in=queryset)
    count = gpu_device_drain(devices=devices, drained=True, actor=Actor.from_request(request))
    modeladmin.message_user(request, f"{count} device(s) drained.", messages.SUCCESS)


@admin.register(GpuNode)
class GpuNodeAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Staff declare nodes here (source "declared"); discovered nodes come from the runtime."""

    audit_noun = "gpu_node"
    list_display = ["name", "backend", "source", "cpus", "memory_gib", "last_seen_at"]
    list_filter = ["backend", "source"]
    search_fields = ["name"]
    inlines = [GpuDeviceInline]
    actions = [drain_nodes]


@admin.register(GpuDevice)
class GpuDeviceAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Draining goes through the actions, which take the inventory lock and audit it."""

    audit_noun = "gpu_device"
    list_display = ["__str__", "model", "memory_mib", "health", "drained", "uuid", "last_seen_at"]
    list_filter = ["health", "drained", "model", "node"]
    search_fields = ["uuid", "node__name", "model"]
    readonly_fields = ["drained", "last_seen_at"]
    actions = [drain, undrain]


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AllocationGpuInline(admin.TabularInline):
    model = AllocationGpu
    extra = 0
    readonly_fields = ["device", "closed_at"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Allocation)
class AllocationAdmin(ReadOnlyAdmin):
    list_display = [
        "workload_kind",
        "workload_uid",
        "team",
        "user",
        "cpus",
        "memory_gib",
        "gpus",
        "opened_at",
        "closed_at",
    ]
    list_filter = ["workload_kind", "team", ("closed_at", admin.EmptyFieldListFilter)]
    search_fields = ["workload_uid", "user__username", "team__slug"]
    inlines = [AllocationGpuInline]


@admin.register(QueuedRequest)
class QueuedRequestAdmin(ReadOnlyAdmin):
    list_display = ["workload_kind", "workload_uid", "team", "user", "gpus", "priority", "state", "enqueued_at"]
    list_filter = ["state", "workload_kind", "team"]
    search_fields = ["workload_uid", "user__username", "team__slug"]
