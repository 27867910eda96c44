"""`manage.py audit_checkpoint`: sign the audit chain head and write it outside the database."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from portal.audit.checkpoints import checkpoint_create


class Command(BaseCommand):
    help = (
        "Signs the audit chain head (event id, hash, time) with DOCKYARD_AUDIT_KEY, appends it to "
        "DOCKYARD_AUDIT_CHECKPOINT_FILE and logs it on the dockyard.audit.checkpoint logger."
    )

    def handle(self, *args, **options) -> None:
        checkpoint = checkpoint_create()
        if checkpoint is None:
            self.stdout.write("The audit log is empty: nothing to checkpoint.")
            return
        where = settings.DOCKYARD_AUDIT_CHECKPOINT_FILE or "the dockyard.audit.checkpoint log"
        self.stdout.write(f"Checkpoint at event #{checkpoint.event_id} ({checkpoint.hash[:12]}…) written to {where}.")
