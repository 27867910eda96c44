"""Each audited action writes exactly one event, with the right actor, outcome and target."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.db import transaction
from django.urls import reverse

from portal.accounts import services
from portal.accounts.models import Membership, Team
from portal.audit.models import AuditEvent
from portal.audit.services import MASK, Actor, audit_record, scrub
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def only_event(**filters) -> AuditEvent:
    """The one event matching `filters` (fails if there are none or several)."""
    return AuditEvent.objects.get(**filters)


def test_login_event_targets_the_user_and_records_the_address(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": PASSWORD}, REMOTE_ADDR="203.0.113.9")

    event = only_event(action="auth.login")
    assert (event.actor_type, event.actor_id, event.ip) == ("user", alice.pk, "203.0.113.9")
    assert (event.target_type, event.target_id) == ("accounts.user", str(alice.pk))


def test_failed_login_for_an_unknown_name_is_anonymous_and_denied(client):
    client.post(reverse("login"), {"username": "nobody", "password": "guess"})

    event = only_event(action="auth.login_failed")
    assert (event.actor_type, event.actor_name, event.outcome) == ("anonymous", "anonymous", "denied")
    assert event.details == {"username": "nobody"}


def test_token_events_target_the_token_and_name_the_token_used(api, alice):
    created = api(alice).post("/api/v1/tokens/", {"name": "ci"}, format="json").json()
    client = api()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {created['token']}")

    client.patch("/api/v1/me/", {"first_name": "Alice"}, format="json")
    client.delete(f"/api/v1/tokens/{created['id']}/")

    create, revoke = only_event(action="token.create"), only_event(action="token.revoke")
    assert (create.target_type, create.target_id) == (revoke.target_type, revoke.target_id)
    assert create.target_id == str(created["id"]) and create.target_type == "accounts.apitoken"
    update = only_event(action="user.update")
    assert (update.actor_type, update.token_name, update.actor_name) == ("token", "ci", "alice")
    assert (revoke.actor_type, revoke.token_name) == ("token", "ci")


def test_revoking_twice_records_once(alice):
    token, _ = services.token_create(user=alice, name="x", expires_at=None, actor=Actor.for_user(alice))

    services.token_revoke(token=token, actor=Actor.for_user(alice))
    services.token_revoke(token=token, actor=Actor.for_user(alice))

    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_membership_events_target_the_membership_and_the_team(api, alice, dave):
    client = api(alice)
    client.post("/api/v1/teams/demo/members/", {"user": "dave"}, format="json")
    membership_id = str(Membership.objects.get(user=dave).pk)
    client.patch("/api/v1/teams/demo/members/dave/", {"role": "team_admin"}, format="json")
    client.delete("/api/v1/teams/demo/members/dave/")

    for action in ("team.member_add", "team.member_update", "team.member_remove"):
        event = only_event(action=action)
        assert (event.actor_name, event.outcome, event.team_slug) == ("alice", "ok", "demo")
        assert (event.target_type, event.target_id) == ("accounts.membership", membership_id)


def test_a_denied_role_change_is_recorded_as_denied_and_changes_nothing(api, bob, alice):
    response = api(bob).patch("/api/v1/teams/demo/members/alice/", {"role": "member"}, format="json")

    assert response.status_code == 403
    event = only_event(action="team.member_update")
    assert (event.actor_name, event.outcome, event.team_slug, event.target_type) == (
        "bob",
        "denied",
        "demo",
        "accounts.team",
    )
    assert Membership.objects.get(user=alice).role == "team_admin"


def create_team_then_fail() -> None:
    with transaction.atomic():
        services.team_create(slug="ops", name="Ops", actor=Actor.system())
        raise RuntimeError("a later step of the same change failed")


def test_a_rolled_back_change_leaves_no_event(alice, demo_team):
    with pytest.raises(RuntimeError):
        create_team_then_fail()

    assert not Team.objects.filter(slug="ops").exists()
    assert not AuditEvent.objects.exists()


def test_a_refused_change_leaves_only_its_denied_event(bob, dave, demo_team):
    with pytest.raises(PermissionDenied):
        services.membership_add(team=demo_team, user=dave, role="member", by=bob, actor=Actor.for_user(bob))

    assert list(AuditEvent.objects.values_list("action", "outcome")) == [("team.member_add", "denied")]


def test_admin_add_change_and_delete_are_each_recorded(web, root):
    client = web(root)
    client.post("/admin/accounts/team/add/", _team_form(slug="ops", name="Ops"))
    team = Team.objects.get(slug="ops")
    client.post(f"/admin/accounts/team/{team.pk}/change/", _team_form(slug="ops", name="Operations"))
    client.post(f"/admin/accounts/team/{team.pk}/delete/", {"post": "yes"})

    events = list(AuditEvent.objects.filter(action__startswith="team.").order_by("id"))
    assert [e.action for e in events] == ["team.create", "team.update", "team.delete"]
    assert all((e.actor_name, e.target_type, e.target_id) == ("root", "accounts.team", str(team.pk)) for e in events)
    assert all(e.details["via"] == "admin" for e in events)
    assert not Team.objects.filter(slug="ops").exists()


def _team_form(**fields) -> dict:
    inline = {"memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0"}
    return {**fields, **inline}


def test_demo_seeding_is_recorded_once_by_the_system():
    call_command("seed_demo", stdout=None)
    call_command("seed_demo", stdout=None)  # nothing left to change: no second event

    event = only_event(action="demo.seed")
    assert (event.actor_type, event.actor_name) == ("system", "system")


def test_secrets_are_masked_at_any_depth():
    details = {
        "user": "alice",
        "env": [{"name": "WANDB_API_KEY", "value": "k"}, {"api_key": "sk-1", "DB_PASSWORD": "p"}],
        "spec": {"image": "torch", "registry": {"credentials": {"user": "u"}, "token": "t"}},
        "client_secret": "s",
    }

    event = audit_record(actor=Actor.system(), action="test.secret", details=details)

    stored = AuditEvent.objects.get(id=event.id).details
    assert stored["env"][1] == {"api_key": MASK, "DB_PASSWORD": MASK}
    assert stored["spec"]["registry"] == {"credentials": MASK, "token": MASK}
    assert stored["client_secret"] == MASK and stored["user"] == "alice"
    for secret in ("sk-1", '"p"', '"t"', '"s"'):
        assert secret not in str(AuditEvent.objects.filter(id=event.id).values_list("details", flat=True).get())
    assert scrub(("a", {"password": "x"})) == ["a", {"password": MASK}]


def test_addresses_are_stored_as_the_database_returns_them():
    odd = ["::ffff:192.0.2.1", "2001:DB8::1", "fe80::1%eth0", "not an address"]
    for ip in odd:
        audit_record(actor=Actor(type="user", name="alice", ip=ip), action="test.ip")

    assert list(AuditEvent.objects.order_by("id").values_list("ip", flat=True)) == [
        "192.0.2.1",
        "2001:db8::1",
        "fe80::1",
        None,
    ]
    call_command("audit_verify", stdout=None)
