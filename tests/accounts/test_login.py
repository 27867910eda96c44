from __future__ import annotations

import pytest
from django.urls import reverse

from portal.audit.models import AuditEvent
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


def test_login_page_uses_the_portal_layout(client):
    page = client.get(reverse("login"))

    assert page.status_code == 200
    html = page.content.decode()
    assert "css/dockyard.css" in html and 'autocomplete="current-password"' in html


def test_login_then_logout(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert "Welcome" in client.get(reverse("home")).content.decode()

    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("home")).status_code == 302

    actions = list(AuditEvent.objects.order_by("id").values_list("action", "actor_name", "outcome"))
    assert actions == [("auth.login", "alice", "ok"), ("auth.logout", "alice", "ok")]


def test_wrong_password_is_refused_and_recorded(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "guess"})

    assert response.status_code == 200
    assert "correct username and password" in response.content.decode()
    event = AuditEvent.objects.get()
    assert (event.action, event.outcome, event.details) == ("auth.login_failed", "denied", {"username": "alice"})
    assert "guess" not in str(event.details)


def test_pages_need_a_login(client):
    response = client.get(reverse("token-list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_logout_needs_post(client, alice):
    client.force_login(alice)
    assert client.get(reverse("logout")).status_code == 405
