"""Deciding when an idle workspace stops, and saying why, before and after.

Pure: the decision takes what Jupyter and NVML report and the team's policy, and returns
when the workspace will stop and a sentence its owner reads on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone


@dataclass(frozen=True)
class Activity:
    """What Jupyter's own API says: a busy kernel, open connections, the last activity."""

    busy: bool
    connections: int
    last_activity: datetime | None


@dataclass(frozen=True)
class Policy:
    idle_timeout_s: int
    gpu_idle_timeout_s: int
    max_lifetime_s: int | None


@dataclass(frozen=True)
class CullDecision:
    cull_now: bool
    cull_at: datetime | None
    explanation: str  # "kept: kernel busy", "will stop at 15:02: idle since 14:02", ...
    reason: str  # why it stops, for the audit log and the page once stopped
    gpu_idle_since: datetime | None


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _minutes(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes else f"{round(seconds)} s"


def cull_decide(
    *,
    now: datetime,
    started_at: datetime,
    activity: Activity | None,
    gpu_utilisation: dict[str, int] | None,
    gpu_idle_since: datetime | None,
    policy: Policy,
) -> CullDecision:
    """When (if ever) this workspace stops, and why. A busy kernel is never stopped for
    idleness; GPUs idle past their own timeout stop it even with a browser tab open."""
    deadlines: list[tuple[datetime, str, str]] = []  # (when, explanation, reason)
    if policy.max_lifetime_s:
        end = started_at + timedelta(seconds=policy.max_lifetime_s)
        life = _minutes(policy.max_lifetime_s)
        deadlines.append((end, f"maximum lifetime of {life}", f"stopped: reached its maximum lifetime of {life}"))
    busy = activity is not None and activity.busy
    gpu_idle_since = _gpu_idle_since(now=now, utilisation=gpu_utilisation, since=gpu_idle_since, busy=busy)
    if not busy and activity is not None:
        if activity.connections == 0:
            idle_since = max(filter(None, [activity.last_activity, started_at]))
            end = idle_since + timedelta(seconds=policy.idle_timeout_s)
            deadlines.append(
                (
                    end,
                    f"idle since {_clock(idle_since)}",
                    f"stopped: idle for {_minutes((now - idle_since).total_seconds())}",
                )
            )
        if gpu_idle_since is not None:
            end = gpu_idle_since + timedelta(seconds=policy.gpu_idle_timeout_s)
            idle_for = _minutes((now - gpu_idle_since).total_seconds())
            deadlines.append((end, f"GPUs idle since {_clock(gpu_idle_since)}", f"stopped: GPUs idle for {idle_for}"))
    if not deadlines:
        kept = "kept: kernel busy" if busy else "kept: open in a browser"
        if activity is None:
            kept = "kept: Jupyter's activity could not be read"
        return CullDecision(False, None, kept, "", gpu_idle_since)
    cull_at, why, reason = min(deadlines, key=lambda d: d[0])
    if busy and "lifetime" not in why:
        return CullDecision(False, None, "kept: kernel busy", "", gpu_idle_since)
    explanation = f"will stop at {_clock(cull_at)}: {why}"
    return CullDecision(cull_at <= now, cull_at, explanation, reason, gpu_idle_since)


def _gpu_idle_since(
    *, now: datetime, utilisation: dict[str, int] | None, since: datetime | None, busy: bool
) -> datetime | None:
    if not utilisation or busy or any(value > 0 for value in utilisation.values()):
        return None
    return since or now
