from __future__ import annotations

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.test import RequestFactory

from portal.accounts.models import Membership, Team, User
from portal.core.demo import DEMO_PASSWORD


def snapshot() -> dict:
    return {
        "users": sorted(User.objects.values_list("username", "is_staff", "is_superuser", "password")),
        "teams": sorted(Team.objects.values_list("slug", "name")),
        "memberships": sorted(Membership.objects.values_list("team__slug", "user__username", "role")),
    }


@pytest.mark.django_db
def test_seed_demo_twice_leaves_the_same_data():
    call_command("seed_demo")
    first = snapshot()
    call_command("seed_demo")

    assert snapshot() == first
    assert first["memberships"] == [
        ("demo", "alice", "team_admin"),
        ("demo", "bob", "member"),
        ("research", "carol", "team_admin"),
    ]
    assert [u for u, staff, *_ in first["users"] if staff] == ["admin"]
    assert authenticate(RequestFactory().post("/accounts/login/"), username="bob", password=DEMO_PASSWORD) is not None


@pytest.mark.django_db
def test_seed_demo_repairs_a_changed_demo_role():
    call_command("seed_demo")
    Membership.objects.filter(user__username="bob").update(role="team_admin")

    call_command("seed_demo")

    assert Membership.objects.get(user__username="bob").role == "member"
