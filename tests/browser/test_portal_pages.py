"""A new user's first minutes, in a real browser: sign in, find their team, make a token."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from portal.accounts.models import ApiToken
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def sign_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_make_a_token_revoke_it_and_sign_out(page, live_server, alice):
    sign_in(page, live_server, "alice")
    expect(page.get_by_role("heading", name="Welcome, alice")).to_be_visible()
    expect(page.get_by_label("Team")).to_have_value("demo")
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)

    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Create token").click()
    shown = page.get_by_label("Token", exact=True).input_value()
    assert shown.startswith("dy_") and ApiToken.objects.get(user=alice).hint == shown[:10]

    page.get_by_role("button", name="Revoke token laptop").click()
    expect(page.get_by_text("Token “laptop” revoked")).to_be_visible()
    expect(page.locator(".status-revoked")).to_have_text("revoked")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_wrong_password_shows_a_message_on_the_styled_login_page(page, live_server, alice):
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_contain_text("correct username and password")


def test_team_admin_adds_a_member_from_the_team_page(page, live_server, alice, dave):
    sign_in(page, live_server, "alice")
    page.get_by_role("link", name="Demo team").click()
    page.get_by_role("link", name="Manage members").click()
    page.get_by_label("Username").fill("dave")
    page.get_by_role("button", name="Add").click()

    expect(page.get_by_text("dave added to demo.")).to_be_visible()
    expect(page.get_by_role("button", name="Remove dave")).to_be_visible()
