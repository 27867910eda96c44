"""The address in the audit log is the peer's, unless the peer is a proxy the portal trusts."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent

FORGED = "203.0.113.7"


@pytest.fixture(
    params=[
        ("192.0.2.1", "127.0.0.1"),  # the client is no trusted proxy: its header is ignored
        ("127.0.0.1", FORGED),  # a proxy on this machine, trusted: the address it reports counts
    ],
    ids=["untrusted-peer", "trusted-proxy"],
)
def trust(request) -> tuple[str, str]:
    return request.param


@pytest.fixture
def live_env(trust) -> dict[str, str]:
    return {"FORWARDED_ALLOW_IPS": trust[0]}


def test_only_a_trusted_proxy_chooses_the_audited_address(live_portal, bob_token, trust):
    headers = {"authorization": f"Bearer {bob_token}", "x-forwarded-for": FORGED}
    with live_portal.client() as client:
        response = client.post("/api/v1/tokens/", json={"name": "from afar"}, headers=headers)

    assert response.status_code == 201, response.text
    event = AuditEvent.objects.filter(action="token.create", details__name="from afar").get()
    assert str(event.ip) == trust[1]
