"""Reading the audit log: one filter, keyset pages and streams, for the page, export and API."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet

from portal.audit.models import AuditEvent

# Rows per database round trip when streaming an export.
EXPORT_CHUNK_SIZE = 2000


@dataclass(frozen=True)
class AuditFilter:
    """What a staff member asked to see; empty fields do not filter."""

    actor: str = ""  # exact username (or "system", "anonymous")
    team: str = ""  # exact team slug
    action: str = ""  # prefix: "team." matches team.member_add, team.create, ...
    outcome: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True)
class AuditPage:
    """One page, newest first, with the cursors of its neighbours (None: no such page)."""

    events: list[AuditEvent]
    older: int | None  # pass as `before` for the next page
    newer: int | None  # pass as `after` for the previous page


def audit_event_filter(*, filters: AuditFilter) -> QuerySet[AuditEvent]:
    """The events matching `filters`, newest first.

    Each equality filter has a (column, id) index (see the model), so a filtered page is one
    index range scan; the prefix uses `action`'s pattern index.
    """
    events = AuditEvent.objects.all()
    if filters.actor:
        events = events.filter(actor_name=filters.actor)
    if filters.team:
        events = events.filter(team_slug=filters.team)
    if filters.action:
        events = events.filter(action__startswith=filters.action)
    if filters.outcome:
        events = events.filter(outcome=filters.outcome)
    if filters.since:
        events = events.filter(created_at__gte=filters.since)
    if filters.until:
        events = events.filter(created_at__lt=filters.until)
    return events.order_by("-id")


def audit_event_page(
    *, filters: AuditFilter, limit: int, before: int | None = None, after: int | None = None
) -> AuditPage:
    """A page of at most `limit` events by keyset: older than `before`, or newer than `after`.

    One query whatever the page's depth (no OFFSET, no COUNT): it asks for one row more
    than the page, to know whether another page follows.
    """
    events = audit_event_filter(filters=filters)
    if after is not None:
        rows = list(events.filter(id__gt=after).order_by("id")[: limit + 1])
        more_newer, rows = len(rows) > limit, rows[:limit][::-1]
        return AuditPage(rows, older=rows[-1].id if rows else None, newer=rows[0].id if more_newer else None)
    if before is not None:
        events = events.filter(id__lt=before)
    rows = list(events[: limit + 1])
    more_older, rows = len(rows) > limit, rows[:limit]
    newer = rows[0].id if rows and before is not None else None
    return AuditPage(rows, older=rows[-1].id if more_older else None, newer=newer)


def audit_event_stream(*, filters: AuditFilter) -> Iterator[AuditEvent]:
    """Every matching event, newest first, fetched in chunks: memory stays flat at any size."""
    return audit_event_filter(filters=filters).iterator(chunk_size=EXPORT_CHUNK_SIZE)
