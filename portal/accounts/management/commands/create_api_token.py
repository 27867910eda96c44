from __future__ import annotations

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from portal.accounts.models import User
from portal.accounts.services import token_create
from portal.audit.services import Actor


class Command(BaseCommand):
    help = "Creates an API token for a user and prints it (the only time it can be seen)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for (default: cli).")
        parser.add_argument("--days", type=int, default=None, help="Expire after this many days (default: never).")

    def handle(self, *args, username: str, name: str, days: int | None, **options):
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user called {username!r}.")
        if days is not None and days <= 0:
            raise CommandError("--days must be a positive number of days.")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        _, raw = token_create(user=user, name=name, expires_at=expires_at, actor=Actor.system())
        self.stdout.write(raw)
