"""/readyz tells anyone whether each component answers, and only trusted callers why not."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db
ELSEWHERE = "192.0.2.10"


@pytest.fixture(autouse=True)
def broker_down(settings):
    """A broker that refuses connections: its check fails with exception text naming the address."""
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}


def test_an_anonymous_caller_from_elsewhere_sees_states_without_exception_text(client):
    response = client.get("/readyz", REMOTE_ADDR=ELSEWHERE)

    assert response.status_code == 503
    assert response.json() == {"database": "ok", "broker": "failing", "worker": "failing", "runtime": "ok"}


def test_staff_see_why_a_component_fails(client, root):
    client.force_login(root)

    body = client.get("/readyz", REMOTE_ADDR=ELSEWHERE).json()

    assert "Error" in body["broker"]


def test_the_metrics_token_sees_why_a_component_fails(client, settings):
    settings.DOCKYARD_METRICS_TOKEN = "scrape-secret"

    body = client.get("/readyz", REMOTE_ADDR=ELSEWHERE, HTTP_AUTHORIZATION="Bearer scrape-secret").json()
    wrong = client.get("/readyz", REMOTE_ADDR=ELSEWHERE, HTTP_AUTHORIZATION="Bearer guess").json()

    assert "Error" in body["broker"]
    assert wrong["broker"] == "failing"
