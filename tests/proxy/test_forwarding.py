"""What crosses the proxy to a workspace's app: an allow-list of headers, and only the
cookies the app set on its own host."""

from __future__ import annotations

import pytest

from portal.accounts.services import token_create
from portal.audit.services import Actor
from portal.proxy.tickets import COOKIE_NAME, app_cookie_prefix

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def alice_token(alice):
    return token_create(user=alice, name="laptop", expires_at=None, actor=Actor.system())[1]


def test_only_allow_listed_headers_and_the_apps_own_cookies_reach_the_app(
    live, upstream, make_workspace, alice, alice_token
):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    prefix = app_cookie_prefix(str(workspace.pk))
    cookies = f"sessionid=portal; tossed=from-a-sibling; {COOKIE_NAME}=x; {prefix}_xsrf=keep; _xsrf=planted"
    notebook = live.notebook(workspace.pk, authorization=f"Bearer {alice_token}", cookie=cookies)
    sent = {"accept": "application/json", "x-xsrftoken": "abc", "x-internal-secret": "s3cret",
            "x-forwarded-host": "evil.example"}  # fmt: skip

    seen = {k.lower(): v for k, v in notebook.get("/api/status", headers=sent).json()["headers"].items()}

    assert seen["accept"] == "application/json" and seen["x-xsrftoken"] == "abc"
    assert "x-internal-secret" not in seen and "x-forwarded-host" not in seen
    assert seen["cookie"] == "_xsrf=keep"
    assert seen["authorization"] == "token " + "*" * len(workspace.jupyter_token)  # added here, scrubbed back


def test_the_apps_cookies_stay_on_its_host_under_its_prefix(live, upstream, make_workspace, alice, alice_token):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    prefix = app_cookie_prefix(str(workspace.pk))
    notebook = live.notebook(workspace.pk, authorization=f"Bearer {alice_token}")

    response = notebook.get(
        "/set-cookies", params=[("c", "_xsrf=abc; Path=/"), ("c", "wide=1; Domain=nb.localhost; Path=/")]
    )

    assert response.status_code == 200
    assert response.headers.get_list("set-cookie") == [f"{prefix}_xsrf=abc; Path=/"]


def test_the_cookie_prefix_is_keyed_per_workspace(settings):
    one, other = app_cookie_prefix("w1"), app_cookie_prefix("w2")
    assert one != other
    settings.SECRET_KEY = "another-secret-key-of-sufficient-length"
    assert app_cookie_prefix("w1") != one  # not derivable without the portal's SECRET_KEY
