"""Demo data for `make run`: people, teams and roles a new user can sign in with.

Idempotent: running it again converges to the same rows (passwords reset to the demo one).
"""

from __future__ import annotations

from django.db import transaction

from portal.accounts.models import Membership, Role, Team, User
from portal.audit.services import Actor, audit_record
from portal.catalog.demo import seed_catalog
from portal.quotas.demo import seed_quotas

DEMO_PASSWORD = "dockyard-demo"  # noqa: S105  (demo-only; printed by `make run` and in the README)

DEMO_TEAMS = {"demo": "Demo team", "research": "Research"}
DEMO_USERS = [
    # username, staff, [(team, role)]
    ("admin", True, []),
    ("alice", False, [("demo", Role.TEAM_ADMIN)]),
    ("bob", False, [("demo", Role.MEMBER)]),
    ("carol", False, [("research", Role.TEAM_ADMIN)]),
]


def seed_demo(*, build_images: bool = True) -> list[str]:
    """Creates or corrects the demo rows; returns what it changed, for the command's output.

    With build_images, queues builds of the demo images that have none (on the `builds` queue).
    """
    changes: list[str] = []
    with transaction.atomic():
        teams = {slug: _team(slug, name, changes) for slug, name in DEMO_TEAMS.items()}
        for username, staff, memberships in DEMO_USERS:
            user = _user(username, staff, changes)
            for slug, role in memberships:
                _membership(user, teams[slug], role, changes)
        seed_quotas(changes, teams)
        seed_catalog(changes, build=build_images)
        if changes:
            audit_record(actor=Actor.system(), action="demo.seed", details={"changes": changes})
    return changes


def _team(slug: str, name: str, changes: list[str]) -> Team:
    team, created = Team.objects.update_or_create(slug=slug, defaults={"name": name})
    if created:
        changes.append(f"team {slug}")
    return team


def _user(username: str, staff: bool, changes: list[str]) -> User:
    user, created = User.objects.get_or_create(username=username, defaults={"email": f"{username}@example.com"})
    if created or user.is_staff != staff or user.is_superuser != staff or not user.check_password(DEMO_PASSWORD):
        user.is_staff = user.is_superuser = staff
        user.is_active = True
        user.set_password(DEMO_PASSWORD)
        user.save()
        changes.append(f"user {username}")
    return user


def _membership(user: User, team: Team, role: str, changes: list[str]) -> None:
    membership, created = Membership.objects.get_or_create(user=user, team=team, defaults={"role": role})
    if created or membership.role != role:
        membership.role = role
        membership.save(update_fields=["role"])
        changes.append(f"{user.username} in {team.slug} as {role}")
