"""Shared fixtures: the people every test talks about, and API clients acting as them.

alice is team admin of `demo`, bob a member of `demo`, carol team admin of `research`,
dave belongs to no team (the outsider), and root is a platform admin (staff).
"""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.accounts.models import Role
from tests.factories import MembershipFactory, TeamFactory, UserFactory


@pytest.fixture
def demo_team(db):
    return TeamFactory(slug="demo", name="Demo team")


@pytest.fixture
def research_team(db):
    return TeamFactory(slug="research", name="Research")


@pytest.fixture
def alice(demo_team):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, team=demo_team, role=Role.TEAM_ADMIN)
    return user


@pytest.fixture
def bob(demo_team):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, team=demo_team, role=Role.MEMBER)
    return user


@pytest.fixture
def carol(research_team):
    user = UserFactory(username="carol")
    MembershipFactory(user=user, team=research_team, role=Role.TEAM_ADMIN)
    return user


@pytest.fixture
def dave(db):
    return UserFactory(username="dave")


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def api():
    """Returns a function giving an API client signed in as a user (or anonymous)."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def web(client):
    """Returns a function giving Django's test client logged in as a user (session cookie)."""

    def make(user):
        client.force_login(user)
        return client

    return make
