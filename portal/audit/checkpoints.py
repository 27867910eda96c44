"""Checkpoints: the chain head, signed and kept outside the database.

Someone who can write to the database could rebuild the chain from some event on, with
fresh hashes that all link up; only a record held elsewhere shows it. Every hour (beat) the
head's id and hash are signed with HMAC-SHA256 under `DOCKYARD_AUDIT_KEY` and appended to
`DOCKYARD_AUDIT_CHECKPOINT_FILE` and logged on the `dockyard.audit.checkpoint` logger (to
ship off the host). `audit_verify --checkpoints FILE` then checks each one against the chain.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from portal.audit.models import AuditEvent

logger = logging.getLogger("dockyard.audit.checkpoint")


class CheckpointError(Exception):
    """A checkpoint line that cannot be read, or whose signature does not match."""


@dataclass(frozen=True)
class Checkpoint:
    """The chain head at one moment: event `event_id` had hash `hash` at time `at` (ISO, UTC)."""

    event_id: int
    hash: str
    at: str

    def signed_line(self, *, key: str) -> str:
        return json.dumps({**self._payload(), "sig": self.signature(key=key)}, sort_keys=True)

    def signature(self, *, key: str) -> str:
        message = json.dumps(self._payload(), sort_keys=True, separators=(",", ":")).encode()
        return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()

    def _payload(self) -> dict:
        return {"id": self.event_id, "hash": self.hash, "at": self.at}


def checkpoint_create(*, key: str | None = None, path: str | None = None) -> Checkpoint | None:
    """Signs the current chain head and writes it out; None while the log is empty.

    Reads only committed events and takes no lock: a checkpoint a moment behind the head
    proves as much as one exactly at it.
    """
    head = AuditEvent.objects.order_by("-id").values_list("id", "hash").first()
    if head is None:
        return None
    checkpoint = Checkpoint(event_id=head[0], hash=head[1], at=timezone.now().isoformat())
    line = checkpoint.signed_line(key=key or settings.DOCKYARD_AUDIT_KEY)
    target = settings.DOCKYARD_AUDIT_CHECKPOINT_FILE if path is None else path
    if target:
        _append_line(Path(target), line)
    logger.info("%s", line)
    return checkpoint


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_APPEND: two writers (beat and someone running the command) never interleave a line.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(descriptor, (line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def checkpoint_read(*, lines: Iterable[str], key: str | None = None) -> list[Checkpoint]:
    """Parses checkpoint lines (JSON, one a line; blank lines skipped), checking each signature."""
    key = key or settings.DOCKYARD_AUDIT_KEY
    checkpoints = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            checkpoints.append(_parse_line(line, number=number, key=key))
    return checkpoints


def _parse_line(line: str, *, number: int, key: str) -> Checkpoint:
    try:
        record = json.loads(line)
        checkpoint = Checkpoint(event_id=int(record["id"]), hash=str(record["hash"]), at=str(record["at"]))
        signature = str(record["sig"])
    except (ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"checkpoint line {number} is not a checkpoint ({error})") from None
    if not hmac.compare_digest(signature, checkpoint.signature(key=key)):
        raise CheckpointError(
            f"checkpoint line {number} (event #{checkpoint.event_id}) is not signed with DOCKYARD_AUDIT_KEY"
        )
    return checkpoint
