"""`manage.py audit_verify [--since ID] [--checkpoints FILE]`: check the audit hash chain."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from portal.audit.checkpoints import CheckpointError, checkpoint_read
from portal.audit.verification import chain_verify


class Command(BaseCommand):
    help = (
        "Walks the audit log's hash chain. Exits 0 printing how many events were verified, "
        "or 1 naming the first event that was altered, is missing, or contradicts a checkpoint."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", type=int, default=1, metavar="ID", help="Start at event ID (default: 1).")
        parser.add_argument(
            "--jobs",
            type=int,
            default=min(os.cpu_count() or 1, 8),
            help="Processes that walk parts of a long chain side by side (default: one per CPU, at most 8).",
        )
        parser.add_argument(
            "--checkpoints",
            type=Path,
            metavar="FILE",
            help="Signed checkpoints (JSON lines from audit_checkpoint): each must match the chain.",
        )

    def handle(self, *args, since: int, jobs: int, checkpoints: Path | None, **options) -> None:
        report = chain_verify(since=since, checkpoints=self._checkpoints(checkpoints), jobs=jobs)
        if not report.ok:
            raise CommandError(f"Audit chain broken: {report.problem}.")
        if report.verified == 0:
            self.stdout.write(f"Verified 0 events: the audit log has none from #{report.since} on.")
            return
        matched = f"; {report.checkpoints} checkpoints match" if checkpoints else ""
        self.stdout.write(
            f"Verified {report.verified} events (#{report.since} to #{report.last_id}){matched}.",
            self.style.SUCCESS,
        )

    def _checkpoints(self, path: Path | None) -> list:
        if path is None:
            return []
        try:
            with path.open(encoding="utf-8") as lines:
                return checkpoint_read(lines=lines)
        except OSError as error:
            raise CommandError(f"Cannot read checkpoints from {path}: {error.strerror}.") from None
        except CheckpointError as error:
            raise CommandError(f"Checkpoints in {path} cannot be trusted: {error}.") from None
