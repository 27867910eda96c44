"""The quotas REST API: who may read and set what, and what it costs in queries."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.audit.models import AuditEvent
from portal.quotas.models import ResourceProfile, TeamQuota, UserQuota
from portal.quotas.services import admit
from tests.factories import MembershipFactory
from tests.quotas.conftest import SYSTEM, ask, team_limits, user_limits

pytestmark = pytest.mark.django_db


def test_profiles_list_what_each_size_costs(api, bob, django_assert_num_queries):
    ResourceProfile.objects.create(slug="gpu-1", name="One GPU", cpus=4, memory_gib=16, gpus=1, position=2)
    ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=2, position=0)
    ResourceProfile.objects.create(slug="old", name="Old", cpus=1, memory_gib=1, is_active=False)
    client = api(bob)

    with django_assert_num_queries(1):
        response = client.get("/api/v1/profiles/")

    assert response.status_code == 200
    assert [(p["slug"], p["cpus"], p["memory_gib"], p["gpus"]) for p in response.json()] == [
        ("small", 1, 2, 0),
        ("gpu-1", 4, 16, 1),
    ]


def test_quotas_me_shows_limit_used_and_remaining_per_team(api, bob, carol, demo_team, research_team):
    MembershipFactory(team=research_team, user=bob)
    team_limits(demo_team, gpus=4, cpus=Decimal(8))
    user_limits(demo_team, bob, cpus=Decimal(2))
    admit(request=ask(demo_team, bob, cpus="1.5"), actor=SYSTEM)

    response = api(bob).get("/api/v1/quotas/me")

    assert response.status_code == 200
    by_team = {t["team"]: {d["dimension"]: d for d in t["dimensions"]} for t in response.json()}
    assert set(by_team) == {"demo", "research"}
    cpus = by_team["demo"]["cpus"]
    assert (cpus["limit"], cpus["used"], cpus["remaining"], cpus["team_limit"]) == (2, 1.5, 0.5, 8)
    assert by_team["demo"]["gpus"]["remaining"] == 4
    assert by_team["research"]["gpus"]["limit"] is None


def test_quotas_me_costs_a_fixed_number_of_queries(api, bob, research_team, django_assert_num_queries):
    client = api(bob)
    client.get("/api/v1/quotas/me/")
    MembershipFactory(team=research_team, user=bob)
    with django_assert_num_queries(5):
        response = client.get("/api/v1/quotas/me/")
    assert len(response.json()) == 2


def test_staff_sets_a_team_quota_and_it_is_audited(api, root, demo_team):
    response = api(root).put("/api/v1/quotas/teams/demo/", {"gpus": 8, "gpu_hours_per_month": "500"}, format="json")

    assert response.status_code == 200
    assert response.json()["gpus"] == 8 and response.json()["gpu_hours_per_month"] == 500
    event = AuditEvent.objects.get(action="quota.update")
    assert event.details["changed"]["gpus"] == [None, 8]


def test_null_removes_a_limit(api, root, demo_team):
    team_limits(demo_team, gpus=2)

    response = api(root).put("/api/v1/quotas/teams/demo/", {"gpus": None}, format="json")

    assert response.json()["gpus"] is None and TeamQuota.objects.get(team=demo_team).gpus is None


def test_team_admin_cannot_raise_their_own_teams_quota(api, alice, demo_team):
    team_limits(demo_team, gpus=2)

    response = api(alice).put("/api/v1/quotas/teams/demo/", {"gpus": 64}, format="json")

    assert response.status_code == 403
    assert TeamQuota.objects.get(team=demo_team).gpus == 2
    assert AuditEvent.objects.get(action="quota.update").outcome == "denied"


def test_outsider_gets_404_for_another_teams_quota(api, dave, demo_team):
    assert api(dave).put("/api/v1/quotas/teams/demo/", {"gpus": 1}, format="json").status_code == 404


def test_unknown_fields_and_negative_limits_are_refused(api, root, demo_team):
    client = api(root)
    assert client.put("/api/v1/quotas/teams/demo/", {"gpu": 1}, format="json").status_code == 400
    response = client.put("/api/v1/quotas/teams/demo/", {"cpus": -1}, format="json")
    assert response.status_code == 400 and "cpus" in response.json()["errors"]


def test_team_admin_sets_a_member_limit_within_the_team_quota(api, alice, bob, demo_team):
    team_limits(demo_team, gpus=4)
    client = api(alice)

    ok = client.put("/api/v1/quotas/teams/demo/users/bob/", {"gpus": 2, "max_jobs": 3}, format="json")
    too_much = client.put("/api/v1/quotas/teams/demo/users/bob/", {"gpus": 5}, format="json")

    assert ok.status_code == 200 and ok.json()["gpus"] == 2 and ok.json()["username"] == "bob"
    assert too_much.status_code == 400 and "above the team's limit of 4" in too_much.json()["detail"]
    assert UserQuota.objects.get(team=demo_team, user=bob).gpus == 2


def test_member_cannot_set_limits_and_the_refusal_is_audited(api, bob, alice, demo_team):
    response = api(bob).put("/api/v1/quotas/teams/demo/users/bob/", {"gpus": 8}, format="json")

    assert response.status_code == 403
    assert not UserQuota.objects.exists()
    assert AuditEvent.objects.filter(action="quota.update", outcome="denied").count() == 1


def test_team_admin_of_another_team_gets_404(api, carol, bob, demo_team):
    assert api(carol).put("/api/v1/quotas/teams/demo/users/bob/", {"gpus": 1}, format="json").status_code == 404


def test_staff_may_set_a_member_limit_above_the_team_quota(api, root, bob, demo_team):
    team_limits(demo_team, gpus=1)
    response = api(root).put("/api/v1/quotas/teams/demo/users/bob/", {"gpus": 3}, format="json")
    assert response.status_code == 200 and response.json()["gpus"] == 3


def test_usage_lists_everyone_for_team_admins_and_only_yourself_for_members(api, alice, bob, demo_team):
    admit(request=ask(demo_team, alice), actor=SYSTEM)
    admit(request=ask(demo_team, bob), actor=SYSTEM)

    as_admin = api(alice).get("/api/v1/usage/?team=demo")
    as_member = api(bob).get("/api/v1/usage/")

    assert {r["username"] for r in as_admin.json()["rows"]} == {"alice", "bob"}
    assert {r["username"] for r in as_member.json()["rows"]} == {"bob"}
    assert as_member.json()["month"] == as_admin.json()["month"]


def test_usage_month_must_be_well_formed(api, bob):
    response = api(bob).get("/api/v1/usage/?month=March")
    assert response.status_code == 400 and "YYYY-MM" in response.json()["detail"]


def test_usage_costs_a_fixed_number_of_queries(
    api, root, demo_team, research_team, alice, carol, django_assert_num_queries
):
    client = api(root)
    admit(request=ask(demo_team, alice), actor=SYSTEM)
    client.get("/api/v1/usage/")
    admit(request=ask(research_team, carol), actor=SYSTEM)
    with django_assert_num_queries(3):
        response = client.get("/api/v1/usage/")
    assert len(response.json()["rows"]) == 2
