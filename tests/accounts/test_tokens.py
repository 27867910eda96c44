from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from portal.accounts.models import ApiToken
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def create_token(api, user, **body) -> dict:
    response = api(user).post("/api/v1/tokens/", {"name": "laptop", **body}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_token_created_through_the_api_authenticates_rest_calls(api, alice):
    created = create_token(api, alice)

    me = bearer(created["token"]).get("/api/v1/me/")

    assert me.status_code == 200
    assert me.json()["username"] == "alice"
    assert me.json()["teams"] == [{"slug": "demo", "name": "Demo team", "role": "team_admin"}]


def test_token_is_shown_once_and_never_stored_in_plain_text(api, alice):
    raw = create_token(api, alice)["token"]

    listed = api(alice).get("/api/v1/tokens/").json()
    assert "token" not in listed[0]
    assert raw not in str(listed)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken")
        stored = cursor.fetchall()
    assert stored and raw not in str(stored)
    assert listed[0]["hint"] == raw[:10]


def test_revoked_token_gets_401(api, alice):
    created = create_token(api, alice)

    assert api(alice).delete(f"/api/v1/tokens/{created['id']}/").status_code == 204

    response = bearer(created["token"]).get("/api/v1/me/")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert api(alice).get(f"/api/v1/tokens/{created['id']}/").json()["status"] == "revoked"


def test_expired_token_gets_401(api, alice):
    created = create_token(api, alice, expires_at=(timezone.now() + timedelta(days=1)).isoformat())
    assert bearer(created["token"]).get("/api/v1/me/").status_code == 200

    with time_machine.travel(timezone.now() + timedelta(days=1, seconds=5)):
        assert bearer(created["token"]).get("/api/v1/me/").status_code == 401


def test_expiry_in_the_past_is_refused_with_a_clear_message(api, alice):
    response = api(alice).post("/api/v1/tokens/", {"name": "old", "expires_at": "2001-01-01T00:00:00Z"}, format="json")

    assert response.status_code == 400
    assert "future" in response.json()["detail"]
    assert not ApiToken.objects.exists()


def test_unknown_and_malformed_tokens_get_401(alice):
    assert bearer("dy_not-a-real-token").get("/api/v1/me/").status_code == 401
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")
    assert client.get("/api/v1/me/").status_code == 401


def test_token_use_stamps_last_used(api, alice):
    created = create_token(api, alice)
    assert created["last_used_at"] is None

    bearer(created["token"]).get("/api/v1/me/")

    assert ApiToken.objects.get(pk=created["id"]).last_used_at is not None


def test_people_cannot_see_or_revoke_each_others_tokens(api, alice, bob):
    created = create_token(api, alice)

    assert api(bob).get("/api/v1/tokens/").json() == []
    assert api(bob).delete(f"/api/v1/tokens/{created['id']}/").status_code == 404
    assert bearer(created["token"]).get("/api/v1/me/").status_code == 200


def test_create_and_revoke_are_audited_without_the_secret(api, alice):
    created = create_token(api, alice)
    api(alice).delete(f"/api/v1/tokens/{created['id']}/")

    events = list(AuditEvent.objects.filter(action__startswith="token.").order_by("id"))
    assert [e.action for e in events] == ["token.create", "token.revoke"]
    assert all(e.actor_name == "alice" and e.outcome == "ok" for e in events)
    assert created["token"] not in str([e.details for e in events])


def test_management_command_prints_a_working_token(alice, capsys):
    call_command("create_api_token", "alice", "--name", "ci")

    raw = capsys.readouterr().out.strip()
    assert bearer(raw).get("/api/v1/me/").json()["username"] == "alice"
    assert ApiToken.objects.get(user=alice).name == "ci"


def test_settings_page_shows_a_new_token_once_and_revokes_it(web, alice):
    client = web(alice)

    page = client.post(reverse("token-list"), {"name": "notebook sync", "lifetime": "30"})
    token = ApiToken.objects.get(user=alice)
    assert page.status_code == 200
    raw = page.context["new_token"]
    assert raw.startswith(token.hint) and raw in page.content.decode()
    assert raw not in client.get(reverse("token-list")).content.decode()
    assert token.expires_at is not None

    client.post(reverse("token-revoke", args=[token.pk]))
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_settings_page_refuses_a_token_without_a_name(web, alice):
    page = web(alice).post(reverse("token-list"), {"name": "", "lifetime": "30"})

    assert page.status_code == 400
    assert "This field is required" in page.content.decode()
    assert not ApiToken.objects.exists()
