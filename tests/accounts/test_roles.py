"""Who may do what: members, team admins, outsiders and staff, through pages and the API."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.accounts.models import Membership, Role
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_member_cannot_open_the_team_admin_page(web, bob):
    assert web(bob).get(reverse("team-members", args=["demo"])).status_code == 403


def test_member_cannot_add_people_and_the_attempt_is_recorded_as_denied(web, bob, dave):
    response = web(bob).post(reverse("team-members", args=["demo"]), {"username": "dave", "role": "member"})

    assert response.status_code == 403
    assert not Membership.objects.filter(user=dave).exists()
    event = AuditEvent.objects.get(action="team.member_add")
    assert (event.actor_name, event.outcome, event.team_slug) == ("bob", "denied", "demo")


@pytest.mark.parametrize("username", ["bob", "alice"])
def test_people_who_are_not_staff_get_403_on_admin_pages(web, username, request):
    user = request.getfixturevalue(username)
    client = web(user)
    assert client.get("/admin/").status_code == 403
    assert client.get("/admin/accounts/user/").status_code == 403


def test_staff_can_open_admin_pages(web, root):
    assert web(root).get("/admin/accounts/team/").status_code == 200


def test_team_admin_manages_members_of_their_team(api, alice, dave):
    client = api(alice)

    added = client.post("/api/v1/teams/demo/members/", {"user": "dave", "role": "member"}, format="json")
    promoted = client.patch("/api/v1/teams/demo/members/dave/", {"role": "team_admin"}, format="json")
    removed = client.delete("/api/v1/teams/demo/members/dave/")

    assert (added.status_code, promoted.status_code, removed.status_code) == (201, 200, 204)
    assert promoted.json()["role"] == "team_admin"
    assert not Membership.objects.filter(user=dave).exists()
    actions = list(AuditEvent.objects.order_by("id").values_list("action", "outcome"))
    assert actions == [("team.member_add", "ok"), ("team.member_update", "ok"), ("team.member_remove", "ok")]


def test_team_admin_cannot_touch_another_team(api, alice, carol, dave):
    client = api(alice)

    assert client.get("/api/v1/teams/research/members/").status_code == 404
    assert client.post("/api/v1/teams/research/members/", {"user": "dave"}, format="json").status_code == 404
    assert client.delete("/api/v1/teams/research/members/carol/").status_code == 404
    assert Membership.objects.filter(team__slug="research").count() == 1


def test_member_cannot_raise_their_own_role(api, bob):
    response = api(bob).patch("/api/v1/teams/demo/members/bob/", {"role": "team_admin"}, format="json")

    assert response.status_code == 403
    assert Membership.objects.get(user=bob).role == Role.MEMBER


def test_nobody_makes_themselves_staff_through_their_profile(api, alice):
    response = api(alice).patch("/api/v1/me/", {"is_staff": True, "first_name": "Alice"}, format="json")

    assert response.status_code == 400
    assert "is_staff" in response.json()["errors"]
    alice.refresh_from_db()
    assert not alice.is_staff and alice.first_name == ""


def test_role_changes_refuse_fields_they_do_not_accept(api, alice, bob):
    response = api(alice).patch(
        "/api/v1/teams/demo/members/bob/", {"role": "member", "is_staff": True, "team": "research"}, format="json"
    )

    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"is_staff", "team"}
    bob.refresh_from_db()
    assert not bob.is_staff


def test_profile_accepts_the_fields_that_are_the_persons_own(api, alice):
    response = api(alice).patch("/api/v1/me/", {"first_name": "Alice", "email": "a@example.org"}, format="json")

    assert response.status_code == 200
    assert response.json()["first_name"] == "Alice"
    assert AuditEvent.objects.get(action="user.update").details == {
        "changed": {"first_name": "Alice", "email": "a@example.org"}
    }


def test_unknown_role_gets_a_clear_error(api, alice, bob):
    response = api(alice).patch("/api/v1/teams/demo/members/bob/", {"role": "owner"}, format="json")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("role:")


def test_the_last_team_admin_cannot_step_down(api, alice, bob):
    response = api(alice).patch("/api/v1/teams/demo/members/alice/", {"role": "member"}, format="json")

    assert response.status_code == 400
    assert "at least one team admin" in response.json()["detail"]
    assert Membership.objects.get(user=alice).role == Role.TEAM_ADMIN


def test_outsider_sees_no_team(api, dave, demo_team):
    assert api(dave).get("/api/v1/teams/").json() == []
    assert api(dave).get("/api/v1/teams/demo/").status_code == 404


def test_staff_manages_any_team(api, root, carol, dave):
    response = api(root).post("/api/v1/teams/research/members/", {"user": "dave"}, format="json")
    assert response.status_code == 201


def test_team_admin_page_adds_a_member(web, alice, dave):
    response = web(alice).post(reverse("team-members", args=["demo"]), {"username": "dave", "role": "member"})

    assert response.status_code == 302
    assert Membership.objects.filter(user=dave, team__slug="demo", role=Role.MEMBER).exists()


def test_team_admin_page_names_an_unknown_user(web, alice):
    response = web(alice).post(reverse("team-members", args=["demo"]), {"username": "nobody", "role": "member"})

    assert response.status_code == 400
    assert "no active user called “nobody”" in response.content.decode()


def test_switching_to_a_team_you_are_not_in_is_refused(web, bob, research_team):
    client = web(bob)
    assert client.post(reverse("team-switch"), {"team": "research"}).status_code == 403
