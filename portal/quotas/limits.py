"""The quota decision, as a pure function: does this request fit under these limits?

`admit` and the admission pass both call `limits_check`, so a limit is enforced the same
way whether a request is admitted at once or from the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from portal.quotas.models import LIMIT_FIELDS, WorkloadKind
from portal.quotas.values import Refusal, Resources

ZERO = Decimal("0")


@dataclass(frozen=True)
class Usage:
    """What a team or a person holds now (open allocations) and used this month (GPU-hours)."""

    workspaces: int = 0
    jobs: int = 0
    cpus: Decimal = ZERO
    memory_gib: Decimal = ZERO
    gpus: int = 0
    gpu_hours: Decimal = ZERO

    def plus(self, *, kind: str, resources: Resources) -> Usage:
        return replace(
            self,
            workspaces=self.workspaces + (kind == WorkloadKind.WORKSPACE),
            jobs=self.jobs + (kind == WorkloadKind.JOB),
            cpus=self.cpus + resources.cpus,
            memory_gib=self.memory_gib + resources.memory_gib,
            gpus=self.gpus + resources.gpus,
        )

    def of(self, dimension: str) -> Decimal | int:
        return getattr(self, USAGE_OF[dimension])


# The usage figure each limit field bounds.
USAGE_OF = {
    "max_workspaces": "workspaces",
    "max_jobs": "jobs",
    "cpus": "cpus",
    "memory_gib": "memory_gib",
    "gpus": "gpus",
    "gpu_hours_per_month": "gpu_hours",
}


def requested(*, kind: str, resources: Resources, dimension: str) -> Decimal | int:
    """How much of one dimension a request adds."""
    return Usage().plus(kind=kind, resources=resources).of(dimension) if dimension != "gpu_hours_per_month" else 0


def limits_check(
    *, limits: Mapping[str, Decimal | int | None], used: Usage, kind: str, resources: Resources, scope: str, name: str
) -> Refusal | None:
    """The first limit the request would exceed, or None if it fits.

    The month's GPU-hours budget cannot be checked against a future duration, so it refuses
    new GPU work once the budget is spent, and never holds back CPU-only work.
    """
    for dimension in LIMIT_FIELDS:
        limit = limits.get(dimension)
        if limit is None:
            continue
        in_use = used.of(dimension)
        if dimension == "gpu_hours_per_month":
            if resources.gpus and in_use >= limit:
                return Refusal(scope, name, dimension, in_use, limit, resources.gpus)
            continue
        wanted = requested(kind=kind, resources=resources, dimension=dimension)
        if wanted and in_use + wanted > limit:
            return Refusal(scope, name, dimension, in_use, limit, wanted)
    return None


def limits_of(quota) -> dict[str, Decimal | int | None]:
    """The limit fields of a TeamQuota or UserQuota row (or nothing, for no row)."""
    if quota is None:
        return {}
    return {field: getattr(quota, field) for field in LIMIT_FIELDS}


def effective_limits(team: Mapping, user: Mapping) -> dict[str, Decimal | int | None]:
    """The tighter of the team's and the person's limit, per dimension (None: no limit)."""
    result: dict[str, Decimal | int | None] = {}
    for field in LIMIT_FIELDS:
        values = [v for v in (team.get(field), user.get(field)) if v is not None]
        result[field] = min(values) if values else None
    return result
