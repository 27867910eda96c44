"""Bodies and content types the API cannot use get a 4xx with a sentence, on a live portal (the
same ASGI path clients take), never a server error."""

from __future__ import annotations

from decimal import Decimal

import pytest

from portal.catalog.models import Image, ImageRevision
from portal.quotas.models import ResourceProfile
from workspaces.models import Workspace


def _stopped_workspace(owner, team) -> Workspace:
    image = Image.objects.create(slug="img", name="img", default_command=["jupyter-lab"])
    revision = ImageRevision.objects.create(image=image, number=1, source_type="build", digest="sha256:x")
    profile = ResourceProfile.objects.create(slug="s", name="S", cpus=1, memory_gib=1)
    return Workspace.objects.create(
        owner=owner, team=team, name="w", image=image, image_revision=revision, image_digest="sha256:x",
        profile=profile, cpus=Decimal(1), memory_gib=Decimal(1), state="stopped", jupyter_token="t",
    )  # fmt: skip


@pytest.mark.parametrize("body", [b"[null, null]", b"[]", b"null", b'"yaml"', b"3"])
def test_an_import_body_that_is_not_an_object_is_refused_with_a_sentence(live_portal, bob_token, body):
    with live_portal.client(authorization=f"Bearer {bob_token}") as client:
        response = client.post(
            "/api/v1/environments/import", content=body, headers={"content-type": "application/json"}
        )

    assert response.status_code == 400
    assert "JSON object" in response.json()["detail"]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "multipart/form-data; boundary=", "application/json; charset=nonsense"]
)
def test_a_malformed_content_type_never_fails_a_delete(live_portal, bob, demo_team, bob_token, content_type):
    workspace = _stopped_workspace(bob, demo_team)

    with live_portal.client(authorization=f"Bearer {bob_token}") as client:
        response = client.request(
            "DELETE", f"/api/v1/workspaces/{workspace.pk}/", content=b"x", headers={"content-type": content_type}
        )

    assert response.status_code in (204, 400, 415), response.text
    if response.status_code != 204:
        assert response.json()["detail"]


@pytest.mark.parametrize("content_type", ["multipart/form-data", "application/x-unknown", "text/plain"])
def test_a_malformed_or_unknown_content_type_gets_a_4xx_on_a_write(live_portal, bob_token, content_type):
    with live_portal.client(authorization=f"Bearer {bob_token}") as client:
        response = client.post("/api/v1/tokens/", content=b"name=x", headers={"content-type": content_type})

    assert response.status_code in (400, 415), response.text
    assert response.json()["detail"]


def test_a_member_token_can_create_a_token_on_the_live_portal(live_portal, bob_token):
    with live_portal.client(authorization=f"Bearer {bob_token}") as client:
        response = client.post("/api/v1/tokens/", json={"name": "ci"})

    assert response.status_code == 201, response.text
