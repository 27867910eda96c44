"""Value objects passed into and out of admission: what is asked for, and why it was refused."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from portal.accounts.models import Team, User
    from portal.quotas.models import ResourceProfile


@dataclass(frozen=True)
class WorkloadRef:
    """A workspace or job, named by kind and UUID; the quotas app never loads it."""

    kind: str
    uid: UUID

    def __str__(self) -> str:
        return f"{self.kind} {self.uid}"


@dataclass(frozen=True)
class Resources:
    """CPUs, memory and GPUs one workload asks for. `gpu_model` blank means any model."""

    cpus: Decimal
    memory_gib: Decimal
    gpus: int = 0
    gpu_model: str = ""

    @classmethod
    def of_profile(cls, profile: ResourceProfile) -> Resources:
        return cls(cpus=profile.cpus, memory_gib=profile.memory_gib, gpus=profile.gpus, gpu_model=profile.gpu_model)


@dataclass(frozen=True)
class AdmissionRequest:
    """Everything `admit` and `queue_enqueue` need to know about a workload."""

    workload: WorkloadRef
    team: Team
    user: User
    resources: Resources
    profile: ResourceProfile | None = None


# How each limit is named to people, in refusals, on the usage page and in the API.
DIMENSION_LABELS = {
    "max_workspaces": "running workspaces",
    "max_jobs": "running jobs",
    "cpus": "CPUs",
    "memory_gib": "memory (GiB)",
    "gpus": "GPUs",
    "gpu_hours_per_month": "GPU-hours this month",
}


@dataclass(frozen=True)
class Refusal:
    """Why a request was not admitted: the limit it hit and the numbers behind it.

    `scope` is "team", "user" or "inventory" (no node has the GPUs free, whatever the quota).
    """

    scope: str
    name: str
    dimension: str
    used: Decimal | int
    limit: Decimal | int
    requested: Decimal | int

    @property
    def message(self) -> str:
        if self.scope == "inventory":
            return f"no node has {self.requested} {self.name or 'GPUs'} free ({self.used} free in all)"
        verb = "used" if self.dimension == "gpu_hours_per_month" else "in use"
        label = DIMENSION_LABELS[self.dimension]
        return f"{self.scope} {self.name}: {label} {_plain(self.used)} of {_plain(self.limit)} {verb}"

    @property
    def is_capacity(self) -> bool:
        """True when only the shared GPU inventory stood in the way, not a quota."""
        return self.scope == "inventory"

    def as_dict(self) -> dict:
        return {
            "scope": self.scope,
            "name": self.name,
            "limit": self.dimension,
            "used": self.used,
            "limit_value": self.limit,
            "requested": self.requested,
            "message": self.message,
        }

    def __str__(self) -> str:
        return self.message


def _plain(value: Decimal | int) -> str:
    # 8.00 reads as 8 and 2.50 as 2.5: people compare the numbers, not the storage precision.
    if isinstance(value, Decimal):
        value = value.quantize(Decimal("0.1")) if value != value.to_integral_value() else value.to_integral_value()
        return format(value.normalize(), "f")
    return str(value)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the runtime reports it (NVML on Docker hosts, node status on Kubernetes)."""

    index: int
    uuid: str
    model: str
    memory_mib: int = 0
    healthy: bool = True


@dataclass(frozen=True)
class NodeInfo:
    """One node as the runtime's `capacity()` reports it."""

    name: str
    backend: str
    cpus: Decimal | None = None
    memory_gib: Decimal | None = None
    gpus: tuple[GpuInfo, ...] = ()
