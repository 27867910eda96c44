"""Demo resource profiles and team quotas for `seed_demo` (idempotent: converges to these rows)."""

from __future__ import annotations

from decimal import Decimal

from portal.accounts.models import Team
from portal.quotas.models import LIMIT_FIELDS, ResourceProfile, TeamQuota

DEMO_PROFILES = [
    # slug, name, CPUs, memory GiB, GPUs, description
    ("small", "Small", 1, 2, 0, "For notebooks and light data work."),
    ("medium", "Medium", 2, 4, 0, "For heavier pandas and scikit-learn work."),
    ("gpu-1", "One GPU", 4, 16, 1, "For training and inference on one GPU."),
]

DEMO_QUOTAS = {
    # team: max_workspaces, max_jobs, CPUs, memory GiB, GPUs, GPU-hours per month
    "demo": (10, 10, 16, 64, 2, 200),
    "research": (20, 20, 64, 256, 8, 2000),
}


def seed_quotas(changes: list[str], teams: dict[str, Team]) -> None:
    for position, (slug, name, cpus, memory, gpus, description) in enumerate(DEMO_PROFILES):
        _profile(slug, position, changes, name=name, cpus=cpus, memory_gib=memory, gpus=gpus, description=description)
    for slug, values in DEMO_QUOTAS.items():
        _quota(teams[slug], dict(zip(LIMIT_FIELDS, values, strict=True)), changes)


def _profile(slug: str, position: int, changes: list[str], **wanted) -> None:
    wanted = {**wanted, "position": position, "is_active": True, "gpu_model": ""}
    profile = ResourceProfile.objects.filter(slug=slug).first() or ResourceProfile(slug=slug)
    if profile.pk is None or _differs(profile, wanted):
        for name, value in wanted.items():
            setattr(profile, name, value)
        profile.save()
        changes.append(f"profile {slug}")


def _quota(team: Team, wanted: dict, changes: list[str]) -> None:
    quota = TeamQuota.objects.filter(team=team).first() or TeamQuota(team=team)
    if quota.pk is None or _differs(quota, wanted):
        for name, value in wanted.items():
            setattr(quota, name, value)
        quota.save()
        changes.append(f"quota of {team.slug}")


def _differs(row, wanted: dict) -> bool:
    return any(_normal(getattr(row, name)) != _normal(value) for name, value in wanted.items())


def _normal(value):
    return Decimal(value) if isinstance(value, int | float | Decimal) and not isinstance(value, bool) else value
