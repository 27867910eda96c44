"""Notebook workspaces: a JupyterLab per person and name, on its own origin."""

from __future__ import annotations

from django.db import models

from portal.workloads.models import Workload


class WorkspaceState(models.TextChoices):
    QUEUED = "queued", "Waiting for capacity"  # set by workspace_create when the user chose to wait
    PENDING = "pending", "Pending"  # admitted; the start task is queued
    STARTING = "starting", "Starting"  # container made; waiting for Jupyter to answer
    RUNNING = "running", "Running"  # Jupyter answered /api/status through its endpoint
    STOPPING = "stopping", "Stopping"  # stop requested; the stop task is queued
    STOPPED = "stopped", "Stopped"  # container gone, home volume kept, allocation closed
    FAILED = "failed", "Failed"  # a step failed; error_step and error_message say which and why

    @classmethod
    def active(cls) -> tuple[str, ...]:
        """States that hold quota and may have a container."""
        return (cls.PENDING, cls.STARTING, cls.RUNNING, cls.STOPPING)


S = WorkspaceState
# The only moves a workspace can make; anything else raises IllegalTransition (API: 409).
TRANSITIONS: dict[str, set[str]] = {
    S.QUEUED: {S.PENDING, S.STOPPED, S.FAILED},
    S.PENDING: {S.STARTING, S.STOPPING, S.FAILED},
    S.STARTING: {S.RUNNING, S.STOPPING, S.FAILED},
    S.RUNNING: {S.STOPPING, S.STOPPED, S.FAILED},  # stopped: its engine restarted (see reconcile)
    S.STOPPING: {S.STOPPED, S.FAILED},
    S.STOPPED: {S.PENDING, S.QUEUED},
    S.FAILED: {S.PENDING, S.QUEUED, S.STOPPING, S.STOPPED},
}


class Workspace(Workload):
    """A person's named JupyterLab. Its home (/home/jovyan) is a volume kept across stops.

    `jupyter_token` is known only to Dockyard: the proxy adds it to requests server-side.
    """

    KIND = "workspace"

    name = models.CharField(max_length=63)
    state = models.CharField(max_length=12, choices=WorkspaceState.choices, default=WorkspaceState.PENDING)
    jupyter_token = models.CharField(max_length=64, editable=False)
    endpoint = models.CharField(max_length=100, blank=True, help_text="host:port of Jupyter, set when running.")
    ready_deadline = models.DateTimeField(null=True, blank=True)
    cull_at = models.DateTimeField(null=True, blank=True, help_text="When it stops if nothing changes.")
    cull_explanation = models.CharField(max_length=200, blank=True)
    gpu_idle_since = models.DateTimeField(null=True, blank=True)
    delete_requested = models.BooleanField(default=False)
    delete_data = models.BooleanField(default=False)
    # Set when the workspace reproduces a job: its env, secrets, parameters (as PARAM_*) and
    # code (read-only at /code), on the job's exact image digest.
    env = models.JSONField(default=dict, blank=True)
    secret_env = models.TextField(blank=True, help_text="Encrypted (portal.core.secrets).")
    secret_env_names = models.JSONField(default=list, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    code = models.ForeignKey("jobs.CodeArchive", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    source_job = models.ForeignKey("jobs.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="workspace_name_unique_per_owner")]
        indexes = [models.Index(fields=["owner", "state"], name="workspace_owner_state")]

    def __str__(self) -> str:
        return f"{self.owner.username}/{self.name}"

    @property
    def is_active(self) -> bool:
        return self.state in WorkspaceState.active()


class WorkspaceShare(models.Model):
    """A teammate the owner lets use their workspace (open it, run code in it)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="shares")
    user = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="workspace_shares")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user__username"]
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="workspace_share_unique")]

    def __str__(self) -> str:
        return f"{self.workspace} shared with {self.user}"


class WorkspacePolicy(models.Model):
    """How long a team's workspaces may sit idle (or run at all) before Dockyard stops them.

    Staff and the team's admins change it. Teams without a row get the defaults.
    """

    team = models.OneToOneField("accounts.Team", on_delete=models.CASCADE, related_name="workspace_policy")
    idle_timeout_s = models.PositiveIntegerField(default=3600, help_text="No busy kernel, no activity, no tab open.")
    gpu_idle_timeout_s = models.PositiveIntegerField(default=1800, help_text="GPUs at 0% (even with a tab open).")
    max_lifetime_s = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: no maximum.")

    def __str__(self) -> str:
        return f"workspace policy of {self.team}"
