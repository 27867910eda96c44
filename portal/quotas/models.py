"""Quotas, the GPU inventory, allocations of resources to workloads, and the waiting queue.

A workload (a workspace or a job, defined in their own apps) is referred to here only by its
kind and UUID, so admission knows nothing about how workloads run.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Exists, OuterRef, Q

from portal.accounts.models import Team, slug_validator
from portal.quotas.values import WorkloadRef

CPU_FIELD = {"max_digits": 8, "decimal_places": 2, "validators": [MinValueValidator(Decimal("0"))]}
MEMORY_FIELD = {"max_digits": 10, "decimal_places": 2, "validators": [MinValueValidator(Decimal("0"))]}


class WorkloadKind(models.TextChoices):
    WORKSPACE = "workspace", "Workspace"
    JOB = "job", "Job"


class ResourceProfile(models.Model):
    """An admin-defined size people pick when they start work (e.g. `small`, `gpu-1`).

    What a profile costs against quota is exactly its CPUs, memory and GPUs.
    """

    slug = models.SlugField(max_length=40, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)
    cpus = models.DecimalField(**CPU_FIELD)
    memory_gib = models.DecimalField("memory (GiB)", **MEMORY_FIELD)
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True, help_text="Blank: any model.")
    is_active = models.BooleanField(default=True, help_text="Inactive profiles are hidden from people.")
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in lists (smallest first).")

    class Meta:
        ordering = ["position", "gpus", "cpus", "slug"]

    def __str__(self) -> str:
        return self.slug


class Limits(models.Model):
    """The limit fields shared by team quotas and per-user limits; null means no limit."""

    max_workspaces = models.PositiveIntegerField(null=True, blank=True, help_text="Running workspaces.")
    max_jobs = models.PositiveIntegerField(null=True, blank=True, help_text="Running jobs.")
    cpus = models.DecimalField(null=True, blank=True, **CPU_FIELD)
    memory_gib = models.DecimalField("memory (GiB)", null=True, blank=True, **MEMORY_FIELD)
    gpus = models.PositiveIntegerField(null=True, blank=True)
    gpu_hours_per_month = models.DecimalField(null=True, blank=True, max_digits=10, decimal_places=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


LIMIT_FIELDS = ("max_workspaces", "max_jobs", "cpus", "memory_gib", "gpus", "gpu_hours_per_month")


class TeamQuota(Limits):
    """A team's limits. Its row is also the lock that serialises admissions for the team.

    A team without a row has no limits; admission creates the row (all null) to lock it.
    """

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="quota")

    def __str__(self) -> str:
        return f"quota of {self.team}"


class UserQuota(Limits):
    """One person's limits inside one team; the tighter of this and the team's applies."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="user_quotas")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quotas")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="userquota_team_user_unique")]

    def __str__(self) -> str:
        return f"quota of {self.user} in {self.team}"


class GpuNode(models.Model):
    """A machine with GPUs: a Docker host or a Kubernetes node, discovered or declared."""

    class Source(models.TextChoices):
        DISCOVERED = "discovered", "Discovered"  # written by gpu_inventory_sync from the runtime
        DECLARED = "declared", "Declared"  # entered by staff in the admin; sync leaves it alone

    name = models.CharField(max_length=200, unique=True)
    backend = models.CharField(max_length=20, default="docker", help_text="docker or kubernetes.")
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.DECLARED)
    cpus = models.DecimalField(null=True, blank=True, **CPU_FIELD)
    memory_gib = models.DecimalField("memory (GiB)", null=True, blank=True, **MEMORY_FIELD)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class GpuHealth(models.TextChoices):
    HEALTHY = "healthy", "Healthy"  # usable
    UNHEALTHY = "unhealthy", "Unhealthy"  # reported failing by the runtime; never allocated
    MISSING = "missing", "Missing"  # no longer reported by the runtime; never allocated


class GpuDeviceQuerySet(models.QuerySet):
    def allocatable(self) -> GpuDeviceQuerySet:
        """Devices that may take new work: healthy, not drained, with no open allocation."""
        busy = AllocationGpu.objects.filter(device=OuterRef("pk"), closed_at__isnull=True)
        return self.filter(health=GpuHealth.HEALTHY, drained=False).exclude(Exists(busy))


class GpuDevice(models.Model):
    """One GPU on a node. A drained device keeps its current work but gets no new work."""

    node = models.ForeignKey(GpuNode, on_delete=models.CASCADE, related_name="devices")
    index = models.PositiveSmallIntegerField(help_text="Index on the node, as the driver numbers it.")
    uuid = models.CharField("UUID", max_length=100, unique=True)
    model = models.CharField(max_length=100, help_text="e.g. NVIDIA A100-SXM4-80GB")
    memory_mib = models.PositiveIntegerField("memory (MiB)", default=0)
    health = models.CharField(max_length=12, choices=GpuHealth.choices, default=GpuHealth.HEALTHY)
    drained = models.BooleanField(default=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    objects = GpuDeviceQuerySet.as_manager()

    class Meta:
        ordering = ["node__name", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="gpudevice_node_index_unique")]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.index}"


class Allocation(models.Model):
    """Resources held by one workload from admission until release.

    Open while `closed_at` is null. Usage (CPU-hours, GPU-hours) is computed from these rows,
    so they are never deleted.
    """

    workload_kind = models.CharField(max_length=16, choices=WorkloadKind.choices)
    workload_uid = models.UUIDField()
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="allocations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="allocations")
    profile = models.ForeignKey(ResourceProfile, on_delete=models.SET_NULL, null=True, blank=True)
    cpus = models.DecimalField(**CPU_FIELD)
    memory_gib = models.DecimalField("memory (GiB)", **MEMORY_FIELD)
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True)
    opened_at = models.DateTimeField(db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    close_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            # A workload holds at most one open allocation, so a retried admission is a no-op.
            models.UniqueConstraint(
                fields=["workload_kind", "workload_uid"],
                condition=Q(closed_at__isnull=True),
                name="allocation_one_open_per_workload",
            ),
        ]
        indexes = [models.Index(fields=["team", "closed_at"], name="allocation_team_open_idx")]

    def __str__(self) -> str:
        return f"{self.workload_kind} {self.workload_uid}"

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def workload_ref(self) -> WorkloadRef:
        return WorkloadRef(self.workload_kind, self.workload_uid)


class AllocationGpu(models.Model):
    """One device held by one allocation.

    `closed_at` is copied from the allocation so that the partial unique index can say "a
    device has at most one open allocation" on this table alone: double allocation is then
    impossible even if admission code were wrong.
    """

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="gpu_rows")
    device = models.ForeignKey(GpuDevice, on_delete=models.PROTECT, related_name="allocations")
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device"], condition=Q(closed_at__isnull=True), name="allocationgpu_one_open_per_device"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} for allocation {self.allocation_id}"


class QueueState(models.TextChoices):
    WAITING = "waiting", "Waiting"  # enqueued; admission passes consider it
    ADMITTED = "admitted", "Admitted"  # an admission pass opened its allocation
    CANCELLED = "cancelled", "Cancelled"  # the workload gave up (stopped, deleted) before admission


class QueuedRequest(models.Model):
    """Work that did not fit when asked and waits for an admission pass.

    Order: `priority` (higher first), then fair share (the team with the fewest recent
    GPU-hours first), then `enqueued_at`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workload_kind = models.CharField(max_length=16, choices=WorkloadKind.choices)
    workload_uid = models.UUIDField()
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="queued_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="queued_requests")
    profile = models.ForeignKey(ResourceProfile, on_delete=models.SET_NULL, null=True, blank=True)
    cpus = models.DecimalField(**CPU_FIELD)
    memory_gib = models.DecimalField("memory (GiB)", **MEMORY_FIELD)
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_model = models.CharField(max_length=100, blank=True)
    priority = models.SmallIntegerField(default=0)
    state = models.CharField(max_length=12, choices=QueueState.choices, default=QueueState.WAITING)
    enqueued_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    allocation = models.OneToOneField(Allocation, on_delete=models.SET_NULL, null=True, blank=True)

    class Meta:
        ordering = ["-priority", "enqueued_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workload_kind", "workload_uid"],
                condition=Q(state="waiting"),
                name="queuedrequest_one_waiting_per_workload",
            ),
        ]
        # The admission pass reads every waiting row: a partial index keeps that cheap
        # however long the history of decided rows grows.
        indexes = [models.Index(fields=["enqueued_at"], condition=Q(state="waiting"), name="queue_waiting_idx")]

    def __str__(self) -> str:
        return f"{self.workload_kind} {self.workload_uid} ({self.state})"
