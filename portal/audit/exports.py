"""Audit events as data: one record shape for the API and exports, and streamed CSV/JSON lines."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import TypedDict

from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.core.streaming import stream_body

# Rows joined into one piece of the response body: fewer, larger writes to the client.
ROWS_PER_CHUNK = 500
# A spreadsheet runs a cell starting with one of these as a formula; audit values come from
# people (a failed login's username), so CSV cells get a leading quote to stay text.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class EventRecord(TypedDict):
    id: int
    created_at: str
    actor_type: str
    actor_name: str
    actor_id: int | None
    token_name: str
    ip: str | None
    action: str
    target_type: str
    target_id: str
    target_repr: str
    team_slug: str
    team_id: int | None
    outcome: str
    details: dict
    prev_hash: str
    hash: str


RECORD_FIELDS = list(EventRecord.__annotations__)


def event_record(event: AuditEvent) -> EventRecord:
    record = {name: getattr(event, name) for name in RECORD_FIELDS}
    record["created_at"] = event.created_at.isoformat()
    return record  # type: ignore[return-value]


def csv_chunks(events: Iterable[AuditEvent]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(RECORD_FIELDS)
    for count, event in enumerate(events, start=1):
        record = event_record(event)
        record["details"] = json.dumps(record["details"], sort_keys=True)
        writer.writerow([_cell(record[name]) for name in RECORD_FIELDS])
        if count % ROWS_PER_CHUNK == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def _cell(value):
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _drain(buffer: io.StringIO) -> bytes:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text.encode()


def jsonl_chunks(events: Iterable[AuditEvent]) -> Iterator[bytes]:
    lines: list[str] = []
    for event in events:
        lines.append(json.dumps(event_record(event), ensure_ascii=False) + "\n")
        if len(lines) == ROWS_PER_CHUNK:
            yield "".join(lines).encode()
            lines = []
    yield "".join(lines).encode()


def streamed_download(request: HttpRequest, chunks: Iterator[bytes], *, extension: str, content_type: str):
    """A download streamed as it is read from the database, never held whole in memory.

    Each chunk is read in the request's own thread, where the database cursor was opened.
    """
    response = StreamingHttpResponse(stream_body(request, chunks), content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="dockyard-audit-{stamp}.{extension}"'
    response["Cache-Control"] = "no-store"
    return response
