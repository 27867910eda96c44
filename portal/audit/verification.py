"""Walking the hash chain: the first altered, missing or rewritten event, if any.

Each event's stored `prev_hash` must equal the stored `hash` of the event before it, and its
stored `hash` must equal the hash recomputed from its contents. Both are checks between
neighbours, so a long chain is cut into ranges walked side by side, one process each.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context

from django.db import connection, connections, transaction
from django.db.models import Max

from portal.audit.checkpoints import Checkpoint
from portal.audit.hashing import GENESIS_HASH, HASHED_FIELDS, PG_ISO_FORMAT, values_hash
from portal.audit.models import AuditEvent

# Rows fetched per round trip from the server-side cursor: memory stays flat at any length.
VERIFY_CHUNK_SIZE = 10_000
# Shorter walks stay in this process: starting a process costs more than it saves.
MIN_EVENTS_PER_JOB = 100_000
_PREV_HASH = HASHED_FIELDS.index("prev_hash")
_DETAILS = HASHED_FIELDS.index("details")
_HASH = len(HASHED_FIELDS)

Problem = tuple[str, int]  # a sentence, and the id of the event it is about


@dataclass(frozen=True)
class ChainReport:
    """What a walk found: how many events held up, and the first problem (None if none)."""

    since: int
    verified: int
    checkpoints: int
    problem: str | None = None
    problem_event_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def last_id(self) -> int:
        return self.since + self.verified - 1


def chain_verify(
    *, since: int = 1, checkpoints: Sequence[Checkpoint] = (), jobs: int = 1, min_per_job: int = MIN_EVENTS_PER_JOB
) -> ChainReport:
    """Checks every event from `since` to the head: ids without gaps, links, hashes, checkpoints.

    Reports the first problem by event id. Checkpoints below `since` are checked against
    their own event only (its contents still hash to the signed value). Events appended
    while the walk runs are left for the next one.
    """
    since = max(since, 1)
    head = AuditEvent.objects.aggregate(head=Max("id"))["head"] or 0
    problem = _checkpoints_outside_problem(checkpoints, since=since, head=head)
    if problem:
        return ChainReport(since, 0, 0, *problem)
    if head < since:
        return ChainReport(since, 0, len(checkpoints))
    ranges = _ranges(since, head, jobs=_jobs(jobs, head - since + 1, min_per_job), checkpoints=checkpoints)
    problems = [problem for problem in _walk_all(ranges) if problem]
    if problems:
        text, event_id = min(problems, key=lambda p: p[1])
        return ChainReport(since, event_id - since, 0, text, event_id)
    return ChainReport(since, head - since + 1, len(checkpoints))


def _jobs(wanted: int, events: int, min_per_job: int) -> int:
    if connection.in_atomic_block:
        # Other processes cannot see this transaction's rows (nor may its connection close).
        return 1
    return max(1, min(wanted, math.ceil(events / min_per_job)))


def _ranges(since: int, head: int, *, jobs: int, checkpoints: Sequence[Checkpoint]) -> list[tuple]:
    size = math.ceil((head - since + 1) / jobs)
    ranges = []
    for start in range(since, head + 1, size):
        end = min(start + size - 1, head)
        inside = sorted((c for c in checkpoints if start <= c.event_id <= end), key=lambda c: c.event_id)
        ranges.append((start, end, inside))
    return ranges


def _walk_all(ranges: list[tuple]) -> list[Problem | None]:
    if len(ranges) == 1:
        return [_walk_range(*ranges[0])]
    # Forked workers must not share this process's database connection: close it first,
    # and each worker opens its own. With a connection pool, the pool itself (its sockets,
    # its threads) is dropped too: a child using the parent's pooled sockets would garble
    # both sides' conversations with the server. Each side makes a new pool when it needs one.
    connections.close_all()
    for conn in connections.all(initialized_only=True):
        if conn.settings_dict.get("OPTIONS", {}).get("pool") and hasattr(conn, "close_pool"):
            conn.close_pool()
    with get_context("fork").Pool(len(ranges)) as pool:
        return pool.starmap(_walk_range_in_worker, ranges)


def _walk_range_in_worker(start: int, end: int, checkpoints: list[Checkpoint]) -> Problem | None:
    try:
        return _walk_range(start, end, checkpoints)
    finally:
        connections.close_all()


def _walk_range(start: int, end: int, checkpoints: list[Checkpoint]) -> Problem | None:
    with transaction.atomic():
        # Inside a transaction the server-side cursor needs no WITH HOLD copy of the result.
        prev_hash = _hash_before(start)
        if prev_hash is None:
            return f"event #{start - 1} is missing", start - 1
        return _walk(_rows(start, end), start=start, end=end, prev_hash=prev_hash, pending=deque(checkpoints))


def _walk(rows: Iterator[tuple], *, start: int, end: int, prev_hash: str, pending: deque) -> Problem | None:
    expected = start
    for row in rows:
        problem = _row_problem(row, expected=expected, prev_hash=prev_hash)
        while problem is None and pending and pending[0].event_id == expected:
            problem = _checkpoint_problem(pending.popleft(), row[_HASH])
        if problem:
            return problem, expected
        prev_hash, expected = row[_HASH], expected + 1
    if expected <= end:
        return f"event #{expected} is missing (the chain stops at #{expected - 1})", expected
    return None


def _row_problem(row: tuple, *, expected: int, prev_hash: str) -> str | None:
    if row[0] != expected:
        return f"event #{expected} is missing (the chain goes from #{expected - 1} to #{row[0]})"
    if row[_PREV_HASH] != prev_hash:
        return f"event #{expected} does not link to event #{expected - 1} (its prev_hash differs)"
    if values_hash(row[:_HASH]) != row[_HASH]:
        return f"event #{expected} was altered: its hash does not match its contents"
    return None


def _checkpoint_problem(checkpoint: Checkpoint, stored_hash: str) -> str | None:
    if stored_hash == checkpoint.hash:
        return None
    return (
        f"event #{checkpoint.event_id} does not match the checkpoint taken at {checkpoint.at}: "
        "the chain was rewritten up to it"
    )


def _checkpoints_outside_problem(checkpoints: Sequence[Checkpoint], *, since: int, head: int) -> Problem | None:
    """Checkpoints the walk will not reach: before `since`, or past the head."""
    for checkpoint in sorted(checkpoints, key=lambda c: c.event_id):
        if checkpoint.event_id > head:
            return (
                f"event #{checkpoint.event_id} is missing: the checkpoint taken at {checkpoint.at} saw it, "
                f"but the chain ends at #{head} (events were removed from the end)"
            ), checkpoint.event_id
        if checkpoint.event_id < since:
            problem = _single_event_problem(checkpoint)
            if problem:
                return problem, checkpoint.event_id
    return None


def _single_event_problem(checkpoint: Checkpoint) -> str | None:
    row = next(_rows(checkpoint.event_id, checkpoint.event_id), None)
    if row is None:
        return f"event #{checkpoint.event_id} is missing (the checkpoint taken at {checkpoint.at} saw it)"
    if values_hash(row[:_HASH]) != row[_HASH]:
        return f"event #{checkpoint.event_id} was altered: its hash does not match its contents"
    return _checkpoint_problem(checkpoint, row[_HASH])


def _hash_before(start: int) -> str | None:
    if start == 1:
        return GENESIS_HASH
    return AuditEvent.objects.filter(id=start - 1).values_list("hash", flat=True).first()


def _rows(start: int, end: int) -> Iterator[tuple]:
    """Events `start` to `end` in id order, as HASHED_FIELDS values then `hash`."""
    if connection.vendor == "postgresql":
        return _postgresql_rows(start, end)
    events = AuditEvent.objects.filter(id__gte=start, id__lte=end).order_by("id")
    return events.values_list(*HASHED_FIELDS, "hash").iterator(chunk_size=VERIFY_CHUNK_SIZE)


def _postgresql_rows(start: int, end: int) -> Iterator[tuple]:
    # The fast path for long chains: PostgreSQL formats the timestamps (in its own process,
    # on another core) and rows skip the ORM. `details` still goes through json.loads, so it
    # is hashed exactly as canonical_bytes hashes it.
    columns = ", ".join(_PG_COLUMNS.get(name, name) for name in (*HASHED_FIELDS, "hash"))
    sql = f"SELECT {columns} FROM {AuditEvent._meta.db_table} WHERE id BETWEEN %s AND %s ORDER BY id"  # noqa: S608
    loads = json.loads
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, [start, end])
        while rows := cursor.fetchmany(VERIFY_CHUNK_SIZE):
            for row in rows:
                yield (*row[:_DETAILS], loads(row[_DETAILS]), *row[_DETAILS + 1 :])


_PG_COLUMNS = {
    "created_at": f"to_char(created_at AT TIME ZONE 'UTC', '{PG_ISO_FORMAT}')",
    "details": "details::text",
}
