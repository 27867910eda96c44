from __future__ import annotations

from django.core.management.base import BaseCommand

from portal.core.demo import DEMO_PASSWORD, DEMO_USERS, seed_demo


class Command(BaseCommand):
    help = "Creates the demo teams and users (idempotent). For demos and development only."

    def handle(self, *args, **options):
        changes = seed_demo()
        self.stdout.write("Demo data: " + (", ".join(changes) if changes else "already in place") + ".")
        names = ", ".join(username for username, *_ in DEMO_USERS)
        self.stdout.write(f"Demo logins ({names}); password for all: {DEMO_PASSWORD}")
