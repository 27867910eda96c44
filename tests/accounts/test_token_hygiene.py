"""A token made with a token cannot outlive it, and nobody holds tokens without end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from portal.accounts.models import ApiToken
from portal.accounts.services import token_create
from portal.audit.models import AuditEvent
from portal.audit.services import Actor

pytestmark = pytest.mark.django_db


def _token_client(user, *, expires_at=None) -> tuple[APIClient, ApiToken]:
    token, raw = token_create(user=user, name="parent", expires_at=expires_at, actor=Actor.system())
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {raw}"), token


@pytest.mark.parametrize("asked", [None, 30], ids=["no-expiry", "later-expiry"])
def test_a_token_made_with_a_token_expires_no_later_than_it(alice, asked):
    parent_expiry = timezone.now() + timedelta(days=1)
    client, parent = _token_client(alice, expires_at=parent_expiry)
    body = {"name": "child"} | ({"expires_at": (timezone.now() + timedelta(days=asked)).isoformat()} if asked else {})

    response = client.post("/api/v1/tokens/", body, format="json")

    assert response.status_code == 201, response.json()
    child = ApiToken.objects.get(pk=response.json()["id"])
    assert child.expires_at == parent.expires_at
    event = AuditEvent.objects.filter(action="token.create", target_id=str(child.pk)).get()
    assert event.details["made_with"] == {"id": parent.pk, "name": "parent"}


def test_a_token_made_with_a_token_may_expire_sooner(alice):
    client, _ = _token_client(alice, expires_at=timezone.now() + timedelta(days=10))
    sooner = timezone.now() + timedelta(hours=1)

    response = client.post("/api/v1/tokens/", {"name": "child", "expires_at": sooner.isoformat()}, format="json")

    assert ApiToken.objects.get(pk=response.json()["id"]).expires_at == sooner


def test_tokens_beyond_the_limit_are_refused_with_a_sentence(api, alice, settings):
    settings.DOCKYARD_TOKENS_PER_USER_MAX = 2
    client = api(alice)
    assert client.post("/api/v1/tokens/", {"name": "one"}, format="json").status_code == 201
    assert client.post("/api/v1/tokens/", {"name": "two"}, format="json").status_code == 201

    refused = client.post("/api/v1/tokens/", {"name": "three"}, format="json")

    assert refused.status_code == 400
    assert "2 usable tokens" in refused.json()["detail"]
    client.delete(f"/api/v1/tokens/{ApiToken.objects.get(name='one').pk}/")
    assert client.post("/api/v1/tokens/", {"name": "three"}, format="json").status_code == 201


def test_the_settings_page_shows_the_token_limit_as_a_form_error(web, alice, settings):
    settings.DOCKYARD_TOKENS_PER_USER_MAX = 1
    client = web(alice)
    client.post("/settings/tokens/", {"name": "one", "lifetime": "30"})

    response = client.post("/settings/tokens/", {"name": "two", "lifetime": "30"})

    assert response.status_code == 400
    assert "1 usable tokens" in response.content.decode()
    assert ApiToken.objects.filter(user=alice).count() == 1
