"""Training jobs: a command run to completion in a container, retried, timed, measured."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from portal.workloads.models import Workload


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"  # waiting in the admission queue (or for a retry's backoff)
    ADMITTED = "admitted", "Admitted"  # allocation open; the start task is queued
    STARTING = "starting", "Starting"  # image and container being made for the current attempt
    RUNNING = "running", "Running"  # the current attempt's container runs
    SUCCEEDED = "succeeded", "Succeeded"  # exit code 0
    FAILED = "failed", "Failed"  # non-zero exit (or OOMKilled) with no retries left, or could not start
    CANCELLED = "cancelled", "Cancelled"  # someone cancelled it
    TIMED_OUT = "timed_out", "Timed out"  # ran past its timeout and was killed

    @classmethod
    def final(cls) -> tuple[str, ...]:
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED, cls.TIMED_OUT)

    @classmethod
    def active(cls) -> tuple[str, ...]:
        """States that hold an allocation (and may have a container)."""
        return (cls.ADMITTED, cls.STARTING, cls.RUNNING)


S = JobState
# The only moves a job can make; anything else raises IllegalTransition (API: 409).
# running → queued is a retry (after the backoff, the job waits its turn again).
TRANSITIONS: dict[str, set[str]] = {
    S.QUEUED: {S.ADMITTED, S.CANCELLED, S.FAILED},
    S.ADMITTED: {S.STARTING, S.CANCELLED, S.FAILED},
    S.STARTING: {S.RUNNING, S.CANCELLED, S.FAILED},
    S.RUNNING: {S.SUCCEEDED, S.FAILED, S.QUEUED, S.CANCELLED, S.TIMED_OUT},
}


class CodeArchive(models.Model):
    """Code a job runs, unpacked read-only at /code: an uploaded zip or tar, or a snapshot of a
    workspace folder (taken as a tar when the job was submitted). Kept by its SHA-256."""

    class Format(models.TextChoices):
        TAR = "tar", "tar"
        ZIP = "zip", "zip"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    sha256 = models.CharField(max_length=64, db_index=True)
    size_bytes = models.BigIntegerField()
    format = models.CharField(max_length=4, choices=Format.choices)
    file = models.FileField(upload_to="code/")
    source = models.CharField(max_length=300, help_text='"upload: train.zip" or "workspace: alice/ws:src".')
    file_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.source} ({self.sha256[:12]})"


class Experiment(models.Model):
    """A sweep: one spec run at every point of a parameter grid, or at random samples."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="+")
    sweep = models.JSONField(help_text='{"grid": {...}} or {"random": {"samples": N, "ranges": {...}, "seed": S}}.')
    metric_goals = models.JSONField(default=dict, blank=True, help_text='{"loss": "min", "accuracy": "max"}.')
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class Job(Workload):
    """One training run. Its spec (image digest, code, command, parameters, env, profile) is
    recorded so that a rerun is identical; attempts keep their own logs and exit codes."""

    KIND = "job"

    name = models.CharField(max_length=100)
    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.QUEUED)
    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, null=True, blank=True, related_name="jobs")
    rerun_of = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="reruns")
    command = models.JSONField(help_text="The arguments as submitted ({name} placeholders not yet filled).")
    shell = models.BooleanField(default=False, help_text="Submitted as one shell string, run by sh -c.")
    parameters = models.JSONField(default=dict, blank=True)
    env = models.JSONField(default=dict, blank=True)
    secret_env = models.TextField(blank=True, help_text="Encrypted (portal.core.secrets).")
    secret_env_names = models.JSONField(default=list, blank=True)
    code = models.ForeignKey(CodeArchive, on_delete=models.PROTECT, null=True, blank=True, related_name="jobs")
    priority = models.SmallIntegerField(default=0)
    timeout_s = models.PositiveIntegerField(null=True, blank=True)
    max_retries = models.PositiveSmallIntegerField(default=0)
    nodes = models.PositiveSmallIntegerField(
        default=1, help_text="Pods that train together (Kubernetes); cpus, memory and gpus are per pod."
    )
    attempt = models.PositiveSmallIntegerField(default=0, help_text="Number of the current or last attempt.")
    retry_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="When the running attempt times out.")
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=100, blank=True, help_text="e.g. OOMKilled, timeout, cancelled.")
    metrics = models.JSONField(default=dict, blank=True, help_text="{name: [[step, value], ...]}.")
    metrics_last = models.JSONField(default=dict, blank=True, help_text="{name: last value}.")
    metrics_read_at = models.DateTimeField(null=True, blank=True)
    outputs_copied = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "state"], name="job_owner_state"),
            models.Index(fields=["team", "state"], name="job_team_state"),
            models.Index(fields=["state"], name="job_state"),
        ]

    def __str__(self) -> str:
        return f"{self.owner.username}/{self.name}"

    @property
    def is_final(self) -> bool:
        return self.state in JobState.final()


class JobAttempt(models.Model):
    """One run of a job's container: its times, how it ended, and its log (kept after the
    container is gone)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    reason = models.CharField(max_length=100, blank=True)
    log = models.TextField(blank=True)
    log_truncated = models.BooleanField(default=False)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="job_attempt_unique")]

    def __str__(self) -> str:
        return f"{self.job} attempt {self.number}"


class JobOutput(models.Model):
    """A file the job left under /output, copied into Dockyard's storage when it ended."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="outputs")
    path = models.CharField(max_length=1000, help_text="Relative to /output.")
    size_bytes = models.BigIntegerField()
    file = models.FileField(upload_to="outputs/", max_length=300)

    class Meta:
        ordering = ["job", "path"]
        constraints = [models.UniqueConstraint(fields=["job", "path"], name="job_output_unique")]

    def __str__(self) -> str:
        return f"{self.job}: {self.path}"
