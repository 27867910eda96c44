from __future__ import annotations

from django.core.management.base import BaseCommand

from portal.core.demo import DEMO_PASSWORD, DEMO_USERS, seed_demo


class Command(BaseCommand):
    help = "Creates the demo teams and users (idempotent). For demos and development only."

    def add_arguments(self, parser):
        parser.add_argument("--no-builds", action="store_true", help="Do not queue builds of the demo images.")

    def handle(self, *args, no_builds: bool = False, **options):
        changes = seed_demo(build_images=not no_builds)
        self.stdout.write("Demo data: " + (", ".join(changes) if changes else "already in place") + ".")
        names = ", ".join(username for username, *_ in DEMO_USERS)
        self.stdout.write(f"Demo logins ({names}); password for all: {DEMO_PASSWORD}")
