"""What workspaces and jobs have in common, and the event stream users watch."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

NODE_MAX = 255  # a multi-node job's node names, comma-separated, are cut to this


class Workload(models.Model):
    """Fields every workload has. `id` is the uid: in container names, labels, notebook hosts.

    `state` moves only through `portal.workloads.services.workload_transition`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="+")
    image = models.ForeignKey("catalog.Image", on_delete=models.PROTECT, related_name="+")
    image_revision = models.ForeignKey("catalog.ImageRevision", on_delete=models.PROTECT, related_name="+")
    image_digest = models.CharField(max_length=100)
    environment_revision = models.ForeignKey(
        "catalog.EnvironmentRevision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    profile = models.ForeignKey("quotas.ResourceProfile", on_delete=models.PROTECT, related_name="+")
    cpus = models.DecimalField(max_digits=6, decimal_places=2)
    memory_gib = models.DecimalField(max_digits=8, decimal_places=2)
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_device_ids = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=12)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    error_step = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    error_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    node = models.CharField(max_length=NODE_MAX, blank=True, help_text="Where it ran (Kubernetes: the node name(s)).")

    KIND = ""

    class Meta:
        abstract = True

    @property
    def uid(self) -> str:
        return str(self.id)


class WorkloadEvent(models.Model):
    """One step in a workload's life, as its owner sees it on the page (progress, failures)."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        ERROR = "error", "Error"

    kind = models.CharField(max_length=16)
    uid = models.UUIDField()
    created_at = models.DateTimeField(auto_now_add=True)
    step = models.CharField(max_length=40)
    state = models.CharField(max_length=12, blank=True)
    message = models.CharField(max_length=500)
    detail = models.TextField(blank=True)
    percent = models.FloatField(null=True, blank=True)
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["kind", "uid", "id"], name="workload_event_stream")]

    def __str__(self) -> str:
        return f"{self.kind} {self.uid}: {self.step} {self.message}"
