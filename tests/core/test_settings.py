"""Production settings: `check --deploy` clean, secure cookies, security headers."""

from __future__ import annotations

import json
import os
import secrets

import pytest

from tests.processes import manage

PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "dockyard.example.com",
    "DOCKYARD_HTTPS": "1",
    "DOCKYARD_AUDIT_KEY": secrets.token_urlsafe(50),
}


def test_check_deploy_is_clean_with_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env={**os.environ, **PRODUCTION})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_cookies_are_secure_and_host_prefixed():
    code = (
        "import json; from django.conf import settings as s; print(json.dumps([s.SESSION_COOKIE_NAME, "
        "s.CSRF_COOKIE_NAME, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS > 0]))"
    )
    result = manage("shell", "-c", code, env={**os.environ, **PRODUCTION})

    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "__Host-sessionid",
        "__Host-csrftoken",
        True,
        True,
        True,
    ]


def test_production_refuses_to_start_without_a_secret_key():
    env = {**os.environ, **PRODUCTION}
    del env["SECRET_KEY"]
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


@pytest.mark.django_db
def test_portal_pages_forbid_framing_and_foreign_scripts(client):
    response = client.get("/accounts/login/")

    policy = response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
