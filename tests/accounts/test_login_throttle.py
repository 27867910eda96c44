"""Failed sign-ins are throttled per account and per address (django-axes), and audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def low_limit(settings):
    settings.AXES_FAILURE_LIMIT = 3


def sign_in(client: Client, username: str, password: str, ip: str = "203.0.113.7", **headers):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip, **headers)


def test_an_account_is_locked_after_repeated_failures_even_with_the_right_password(client, alice):
    for _ in range(2):
        assert sign_in(client, "alice", "guess").status_code == 200
    assert sign_in(client, "alice", "guess").status_code == 429  # the failure that reaches the limit

    response = sign_in(client, "alice", PASSWORD)

    assert response.status_code == 429
    assert "Too many failed sign-ins for alice" in response.content.decode()
    assert "_auth_user_id" not in client.session
    lockout = AuditEvent.objects.filter(action="auth.lockout").earliest("id")  # then one per refused attempt
    assert (lockout.outcome, lockout.details["username"], lockout.ip) == ("denied", "alice", "203.0.113.7")


def test_the_lock_holds_from_another_address_for_that_account(client, alice):
    for n in range(3):
        sign_in(client, "alice", "guess", ip=f"203.0.113.{10 + n}")

    assert sign_in(Client(), "alice", PASSWORD, ip="198.51.100.1").status_code == 429


def test_failures_spread_over_accounts_lock_the_address(client, alice, bob):
    for name in ("alice", "bob", "nobody"):
        sign_in(client, name, "guess")

    assert sign_in(client, "bob", PASSWORD).status_code == 429
    assert sign_in(Client(), "bob", PASSWORD, ip="198.51.100.1").status_code == 302


def test_a_forged_forwarded_header_does_not_escape_the_address_lock(client, alice, bob):
    for n, name in enumerate(("alice", "bob", "nobody")):
        sign_in(client, name, "guess", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert sign_in(client, "bob", PASSWORD, HTTP_X_FORWARDED_FOR="192.0.2.99").status_code == 429


def test_the_lock_lifts_after_the_cool_off(client, alice, settings):
    for _ in range(3):
        sign_in(client, "alice", "guess")
    assert sign_in(client, "alice", PASSWORD).status_code == 429

    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1)):
        response = sign_in(client, "alice", PASSWORD)

    assert response.status_code == 302 and response["Location"] == reverse("home")


def test_failures_below_the_limit_do_not_lock(client, alice):
    for _ in range(2):
        sign_in(client, "alice", "guess")

    assert sign_in(client, "alice", PASSWORD).status_code == 302
