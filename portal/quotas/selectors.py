"""Reading quotas and usage: what is held now, CPU- and GPU-hours per month, chart series.

Usage is computed from allocations (open ones counted up to now), grouped in the database;
each function here costs a fixed number of queries however many rows it covers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db.models import Count, DateTimeField, DurationField, ExpressionWrapper, F, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from portal.accounts.models import Membership, Role, Team, User
from portal.quotas.limits import ZERO, Usage, effective_limits, limits_of
from portal.quotas.models import (
    LIMIT_FIELDS,
    Allocation,
    GpuDevice,
    QueuedRequest,
    QueueState,
    ResourceProfile,
    TeamQuota,
    UserQuota,
    WorkloadKind,
)
from portal.quotas.values import DIMENSION_LABELS

HOUR = Decimal(3600)
Key = tuple[int, int]  # (team_id, user_id)


# --- Months -----------------------------------------------------------------------------------


def month_bounds(*, month: date | None = None) -> tuple[datetime, datetime]:
    """Start and end of a calendar month in the portal's time zone (this month by default)."""
    first = (month or timezone.localdate()).replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    zone = timezone.get_current_timezone()
    return (
        datetime.combine(first, datetime.min.time(), tzinfo=zone),
        datetime.combine(following, datetime.min.time(), tzinfo=zone),
    )


def month_parse(*, text: str) -> date:
    """`2025-03` → 1 March 2025; raises ValueError for anything else."""
    return datetime.strptime(text, "%Y-%m").date()


# --- Hours ------------------------------------------------------------------------------------


@dataclass
class Hours:
    cpu_hours: Decimal = ZERO
    gpu_hours: Decimal = ZERO

    def add(self, other: Hours) -> None:
        self.cpu_hours += other.cpu_hours
        self.gpu_hours += other.gpu_hours


def _overlapping(*, start: datetime, end: datetime) -> QuerySet[Allocation]:
    return Allocation.objects.filter(opened_at__lt=end).filter(Q(closed_at__isnull=True) | Q(closed_at__gt=start))


def _held_within(*, start: datetime, end: datetime, now: datetime) -> ExpressionWrapper:
    """How long an allocation was open within [start, end), open ones counted up to now."""
    moment = DateTimeField()
    return ExpressionWrapper(
        Least(Coalesce(F("closed_at"), Value(now, output_field=moment)), Value(end, output_field=moment))
        - Greatest(F("opened_at"), Value(start, output_field=moment)),
        output_field=DurationField(),
    )


def hours_by_team_user(
    *, start: datetime, end: datetime, team_ids: Iterable[int] | None = None, gpu_only: bool = False
) -> dict[Key, Hours]:
    """CPU- and GPU-hours per (team, person) within [start, end), in one query.

    The database sums durations per distinct size (CPUs, GPUs); multiplying by the size
    happens here, which keeps the arithmetic the same on PostgreSQL and SQLite.
    """
    now = timezone.now()
    rows = _overlapping(start=start, end=min(end, now))
    if team_ids is not None:
        rows = rows.filter(team_id__in=list(team_ids))
    if gpu_only:
        rows = rows.filter(gpus__gt=0)
    rows = rows.values("team_id", "user_id", "cpus", "gpus").annotate(
        held=Sum(_held_within(start=start, end=end, now=now))
    )
    result: dict[Key, Hours] = defaultdict(Hours)
    for row in rows.order_by():
        hours = Decimal(row["held"].total_seconds()) / HOUR if row["held"] else ZERO
        result[(row["team_id"], row["user_id"])].add(Hours(row["cpus"] * hours, row["gpus"] * hours))
    return dict(result)


def gpu_hours_by_team(*, since: datetime, team_ids: Iterable[int] | None = None) -> dict[int, Decimal]:
    """GPU-hours per team from `since` until now: the fair-share measure of the queue."""
    totals: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for (team_id, _), hours in hours_by_team_user(
        start=since, end=timezone.now(), team_ids=team_ids, gpu_only=True
    ).items():
        totals[team_id] += hours.gpu_hours
    return dict(totals)


# --- What is held now -------------------------------------------------------------------------


def open_usage_by_team_user(*, team_ids: Iterable[int] | None = None) -> dict[Key, Usage]:
    """Open allocations summed per (team, person), in one query (the index on team, closed_at)."""
    rows = Allocation.objects.filter(closed_at__isnull=True)
    if team_ids is not None:
        rows = rows.filter(team_id__in=list(team_ids))
    rows = rows.values("team_id", "user_id").annotate(
        workspaces=Count("id", filter=Q(workload_kind=WorkloadKind.WORKSPACE)),
        jobs=Count("id", filter=Q(workload_kind=WorkloadKind.JOB)),
        cpus=Sum("cpus"),
        memory_gib=Sum("memory_gib"),
        gpus=Sum("gpus"),
    )
    return {
        (r["team_id"], r["user_id"]): Usage(r["workspaces"], r["jobs"], r["cpus"], r["memory_gib"], r["gpus"])
        for r in rows.order_by()
    }


def usage_combine(*, held: Usage | None, gpu_hours: Decimal = ZERO) -> Usage:
    held = held or Usage()
    return Usage(held.workspaces, held.jobs, held.cpus, held.memory_gib, held.gpus, gpu_hours)


def usage_total(usages: Iterable[Usage]) -> Usage:
    total = Usage()
    for u in usages:
        total = Usage(
            total.workspaces + u.workspaces,
            total.jobs + u.jobs,
            total.cpus + u.cpus,
            total.memory_gib + u.memory_gib,
            total.gpus + u.gpus,
            total.gpu_hours + u.gpu_hours,
        )
    return total


@dataclass(frozen=True)
class UsageBook:
    """Held resources and this month's hours for a set of teams, read once and looked up often."""

    held: dict[Key, Usage]
    month: dict[Key, Hours]

    @classmethod
    def load(cls, *, team_ids: Iterable[int]) -> UsageBook:
        team_ids = list(team_ids)
        start, end = month_bounds()
        return cls(
            held=open_usage_by_team_user(team_ids=team_ids),
            month=hours_by_team_user(start=start, end=end, team_ids=team_ids),
        )

    def of_user(self, *, team_id: int, user_id: int) -> Usage:
        hours = self.month.get((team_id, user_id), Hours())
        return usage_combine(held=self.held.get((team_id, user_id)), gpu_hours=hours.gpu_hours)

    def of_team(self, *, team_id: int) -> Usage:
        keys = {k for k in (*self.held, *self.month) if k[0] == team_id}
        return usage_total(self.of_user(team_id=team_id, user_id=user_id) for _, user_id in keys)

    def hours_of_user(self, *, team_id: int, user_id: int) -> Hours:
        return self.month.get((team_id, user_id), Hours())


# --- Quota status (the API's quotas/me and the usage page) ------------------------------------


@dataclass(frozen=True)
class DimensionStatus:
    dimension: str
    label: str
    limit: Decimal | int | None  # the effective limit: the tighter of team and person
    used: Decimal | int  # the person's own use
    team_limit: Decimal | int | None
    team_used: Decimal | int
    user_limit: Decimal | int | None
    remaining: Decimal | int | None  # what the person can still start, given both limits


@dataclass(frozen=True)
class QuotaStatus:
    team: Team
    user: User
    role: str
    dimensions: list[DimensionStatus]
    month_cpu_hours: Decimal
    month_gpu_hours: Decimal

    def dimension(self, name: str) -> DimensionStatus:
        return next(d for d in self.dimensions if d.dimension == name)


def quota_status_for(*, user: User) -> list[QuotaStatus]:
    """The person's limits, use and headroom in each of their teams (five queries)."""
    memberships = list(Membership.objects.filter(user=user).select_related("team").order_by("team__slug"))
    return _statuses([(m.team, user, m.role) for m in memberships])


def quota_status_for_members(*, team: Team) -> list[QuotaStatus]:
    """Every member's limits and use in one team, for its team admins (five queries)."""
    memberships = Membership.objects.filter(team=team).select_related("team", "user").order_by("user__username")
    return _statuses([(m.team, m.user, m.role) for m in memberships])


def _statuses(entries: list[tuple[Team, User, str]]) -> list[QuotaStatus]:
    team_ids = {team.pk for team, _, _ in entries}
    team_quotas = {q.team_id: q for q in TeamQuota.objects.filter(team_id__in=team_ids)}
    user_quotas = {
        (q.team_id, q.user_id): q
        for q in UserQuota.objects.filter(team_id__in=team_ids, user_id__in={u.pk for _, u, _ in entries})
    }
    book = UsageBook.load(team_ids=team_ids)
    team_usage = {team_id: book.of_team(team_id=team_id) for team_id in team_ids}
    result = []
    for team, user, role in entries:
        mine = book.of_user(team_id=team.pk, user_id=user.pk)
        team_limits = limits_of(team_quotas.get(team.pk))
        user_limits = limits_of(user_quotas.get((team.pk, user.pk)))
        hours = book.hours_of_user(team_id=team.pk, user_id=user.pk)
        dimensions = _dimensions(team_limits, user_limits, mine, team_usage[team.pk])
        result.append(QuotaStatus(team, user, role, dimensions, hours.cpu_hours, hours.gpu_hours))
    return result


def _dimensions(team_limits: dict, user_limits: dict, mine: Usage, team_used: Usage) -> list[DimensionStatus]:
    effective = effective_limits(team_limits, user_limits)
    rows = []
    for name in LIMIT_FIELDS:
        headroom = [
            limit - used
            for limit, used in ((team_limits.get(name), team_used.of(name)), (user_limits.get(name), mine.of(name)))
            if limit is not None
        ]
        rows.append(
            DimensionStatus(
                dimension=name,
                label=DIMENSION_LABELS[name],
                limit=effective[name],
                used=mine.of(name),
                team_limit=team_limits.get(name),
                team_used=team_used.of(name),
                user_limit=user_limits.get(name),
                remaining=max(min(headroom), 0) if headroom else None,
            )
        )
    return rows


@dataclass(frozen=True)
class TeamStatus:
    """A team's limits and its total use, for the staff view of every team."""

    team: Team
    limits: dict
    used: Usage
    month_cpu_hours: Decimal
    dimensions: list[DimensionStatus] = field(default_factory=list)


def team_status_list(*, teams: QuerySet[Team]) -> list[TeamStatus]:
    """Every team's quota and use (four queries)."""
    teams = list(teams)
    team_ids = [t.pk for t in teams]
    quotas = {q.team_id: q for q in TeamQuota.objects.filter(team_id__in=team_ids)}
    book = UsageBook.load(team_ids=team_ids)
    result = []
    for team in teams:
        used = book.of_team(team_id=team.pk)
        limits = limits_of(quotas.get(team.pk))
        cpu_hours = sum((h.cpu_hours for k, h in book.month.items() if k[0] == team.pk), ZERO)
        result.append(TeamStatus(team, limits, used, cpu_hours, _dimensions(limits, {}, used, used)))
    return result


# --- Usage reports (API, CSV) -----------------------------------------------------------------


@dataclass(frozen=True)
class UsageRow:
    team: str
    username: str
    month: str
    cpu_hours: Decimal
    gpu_hours: Decimal


def usage_rows(*, teams: Iterable[Team], month: date, only_user: User | None = None) -> list[UsageRow]:
    """CPU- and GPU-hours per person and team in one month, with every member listed (2 queries)."""
    teams = {t.pk: t for t in teams}
    start, end = month_bounds(month=month)
    hours = hours_by_team_user(start=start, end=end, team_ids=teams)
    users = dict(User.objects.filter(pk__in={user_id for _, user_id in hours}).values_list("pk", "username"))
    label = start.strftime("%Y-%m")
    rows = [
        UsageRow(teams[team_id].slug, users[user_id], label, _round(h.cpu_hours), _round(h.gpu_hours))
        for (team_id, user_id), h in hours.items()
        if only_user is None or user_id == only_user.pk
    ]
    return sorted(rows, key=lambda r: (r.team, r.username))


def usage_rows_visible_to(*, user: User, teams: list[Team], month: date) -> list[UsageRow]:
    """Everyone's rows in teams the person manages (all, for staff); elsewhere only their own."""
    if user.is_staff:
        managed = {t.pk for t in teams}
    else:
        managed = set(Membership.objects.filter(user=user, role=Role.TEAM_ADMIN).values_list("team_id", flat=True))
    slugs_managed = {t.slug for t in teams if t.pk in managed}
    rows = usage_rows(teams=teams, month=month)
    return [r for r in rows if r.team in slugs_managed or r.username == user.get_username()]


def _round(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def usage_visible_teams(*, user: User) -> QuerySet[Team]:
    """Teams whose usage a person may read: theirs, or all for staff."""
    return Team.objects.visible_to(user)


def usage_sees_everyone(*, user: User, team: Team) -> bool:
    """Staff and team admins read every member's usage; members only their own."""
    if user.is_staff:
        return True
    return Membership.objects.filter(user=user, team=team, role=Role.TEAM_ADMIN).exists()


# --- Charts -----------------------------------------------------------------------------------


def daily_gpu_hours(*, team_ids: Iterable[int] | None, days: int) -> dict:
    """GPU-hours per team and day over the last `days` days, split at midnight (one query).

    Returns {"days": ["2025-03-01", ...], "teams": {"demo": [1.5, 0, ...], ...}}.
    """
    now = timezone.now()
    first = timezone.localdate() - timedelta(days=days - 1)
    zone = timezone.get_current_timezone()
    day_starts = [datetime.combine(first + timedelta(days=i), datetime.min.time(), tzinfo=zone) for i in range(days)]
    rows = _overlapping(start=day_starts[0], end=now).filter(gpus__gt=0)
    if team_ids is not None:
        rows = rows.filter(team_id__in=list(team_ids))
    series: dict[str, list[float]] = {}
    for slug, gpus, opened, closed in rows.values_list("team__slug", "gpus", "opened_at", "closed_at").order_by():
        line = series.setdefault(slug, [0.0] * days)
        _spread(line, day_starts, gpus, opened, closed or now)
    return {
        "days": [d.date().isoformat() for d in day_starts],
        "teams": {slug: [round(v, 2) for v in values] for slug, values in sorted(series.items())},
    }


def _spread(line: list[float], day_starts: list[datetime], gpus: int, opened: datetime, closed: datetime) -> None:
    """Adds an allocation's GPU-hours to each day it overlaps."""
    for i, start in enumerate(day_starts):
        end = day_starts[i + 1] if i + 1 < len(day_starts) else start + timedelta(days=1)
        overlap = (min(closed, end) - max(opened, start)).total_seconds()
        if overlap > 0:
            line[i] += gpus * overlap / 3600


def gpu_utilisation_daily(*, days: int) -> dict:
    """Allocated GPU-hours over available GPU-hours per day, as a percentage (two queries).

    Available is the devices in the inventory now (healthy or not) times 24 hours: a device
    added mid-month counts as if it had always been there, which errs on the low side.
    """
    total = GpuDevice.objects.count()
    allocated = daily_gpu_hours(team_ids=None, days=days)
    per_day = [sum(values[i] for values in allocated["teams"].values()) for i in range(days)]
    # Today has only had the hours since midnight to be used in.
    today = timezone.localtime()
    elapsed_today = (today - today.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 3600
    capacities = [total * 24.0] * (days - 1) + [total * max(elapsed_today, 1 / 60)]
    return {
        "days": allocated["days"],
        "devices": total,
        "percent": [round(100 * h / c, 1) if c else 0 for h, c in zip(per_day, capacities, strict=True)],
    }


def profile_list() -> QuerySet[ResourceProfile]:
    return ResourceProfile.objects.filter(is_active=True)


def queue_positions(*, uids) -> dict:
    """Place in the admission queue of each of these waiting workloads (1 = next), in one query.

    The queue is ordered by priority, then fair share between teams, then age; this counts
    the waiting requests ahead by priority and age, so it is a guide, not a promise.
    """
    wanted = set(uids)
    if not wanted:
        return {}
    entries = QueuedRequest.objects.filter(state=QueueState.WAITING).order_by("-priority", "enqueued_at")
    order = entries.values_list("workload_uid", flat=True)
    return {uid: place for place, uid in enumerate(order, start=1) if uid in wanted}
