"""The notebook proxy, end to end: real uvicorn, real worker, real containers.

Most tests use a stand-in for Jupyter that echoes the request it receives, to see exactly
what crosses the proxy; test_jupyter.py does the same with the real JupyterLab.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from portal.audit.models import AuditEvent
from portal.proxy import tickets
from tests.factories import PASSWORD
from tests.processes import run_async, wait_for
from tests.workspaces.conftest import wait_state

pytestmark = [pytest.mark.docker]


def create(portal, token, image, name="lab", profile="small", team="demo"):
    body = {"name": name, "image": image.slug, "profile": profile, "team": team}
    return portal.client(authorization=f"Bearer {token}").post("/api/v1/workspaces/", json=body)


@pytest.fixture
def echo_workspace(portal, people, small, echo_image):
    response = create(portal, people["tokens"]["alice"], echo_image)
    assert response.status_code == 201, response.text
    workspace = wait_state(portal, people["tokens"]["alice"], response.json()["id"], "running")
    return workspace


def signed_in(portal, username):
    """A portal client with a real session (the login form), as a browser would have."""
    client = portal.client()
    page = client.get("/accounts/login/")
    csrf = page.cookies["csrftoken"]
    response = client.post(
        "/accounts/login/", data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": csrf}
    )
    assert response.status_code == 302, response.text
    return client, response


def open_in_browser(portal, client, workspace_id):
    """Follows the Open button: portal → notebook host (state cookie) → portal → ticket →
    notebook host; returns the ticket's path and the redemption."""
    host = portal.notebook_host(workspace_id)
    to_host = client.get(f"/workspaces/{workspace_id}/open/")
    assert to_host.status_code == 302 and to_host.headers["location"].startswith(f"http://{host}/_dockyard/login?")
    back = portal.notebook(workspace_id).get(to_host.headers["location"].split(host, 1)[1])
    state = back.cookies[tickets.STATE_COOKIE_NAME]
    to_ticket = client.get(back.headers["location"].removeprefix(portal.url))
    assert to_ticket.status_code == 302
    location = to_ticket.headers["location"]
    assert location.startswith(f"http://{host}/_dockyard/ticket?")
    path = location.split(host, 1)[1]
    redeemed = portal.notebook(workspace_id, cookie=f"{tickets.STATE_COOKIE_NAME}={state}").get(path)
    return path, redeemed


def test_owner_reaches_the_workspace_and_nothing_of_the_portal_reaches_the_container(portal, people, echo_workspace):
    token = people["tokens"]["alice"]
    workspace_id = echo_workspace["id"]
    client, _ = signed_in(portal, "alice")
    _, redeemed = open_in_browser(portal, client, workspace_id)
    notebook_cookie = redeemed.cookies[tickets.COOKIE_NAME]

    prefix = tickets.app_cookie_prefix(workspace_id)
    cookie_header = (
        f"sessionid={client.cookies['sessionid']}; csrftoken=abc; {tickets.COOKIE_NAME}={notebook_cookie}; "
        f"{prefix}_xsrf=keep; parent=dropped"
    )
    seen = portal.notebook(workspace_id, cookie=cookie_header, accept="application/json").get("/api/status")
    assert seen.status_code == 200
    echoed = seen.json()
    forwarded = {k.lower(): v for k, v in echoed["headers"].items()}
    assert forwarded["cookie"] == "_xsrf=keep"
    assert forwarded["authorization"].startswith("token ")
    assert forwarded["host"] == portal.notebook_host(workspace_id)

    by_token = portal.notebook(workspace_id, authorization=f"Bearer {token}").get("/anything?x=1")
    forwarded = {k.lower(): v for k, v in by_token.json()["headers"].items()}
    assert token not in by_token.text
    assert forwarded["authorization"] != f"Bearer {token}"
    assert by_token.json()["path"] == "/anything?x=1"


def test_the_jupyter_token_never_reaches_the_browser(portal, people, echo_workspace):
    from workspaces.models import Workspace

    jupyter_token = Workspace.objects.get(pk=echo_workspace["id"]).jupyter_token
    response = portal.notebook(echo_workspace["id"], authorization=f"Bearer {people['tokens']['alice']}").get("/")

    assert response.status_code == 200
    assert jupyter_token not in response.text  # the echo contains it: the proxy scrubbed it
    assert "token " + "*" * len(jupyter_token) in response.text


def test_other_people_get_403_and_anonymous_callers_are_sent_to_sign_in(portal, people, echo_workspace):
    workspace_id = echo_workspace["id"]
    bob = portal.notebook(workspace_id, authorization=f"Bearer {people['tokens']['bob']}")
    assert bob.get("/api/status").status_code == 403

    anonymous_api = portal.notebook(workspace_id).get("/api/status")
    assert anonymous_api.status_code == 401
    anonymous_browser = portal.notebook(workspace_id, accept="text/html").get("/lab")
    assert anonymous_browser.status_code == 302
    assert anonymous_browser.headers["location"].startswith(f"{portal.url}/workspaces/{workspace_id}/open/?state=")

    with pytest.raises(InvalidStatus) as refused:
        run_async(_ws_connect, portal, workspace_id, {"Authorization": f"Bearer {people['tokens']['bob']}"})
    assert refused.value.response.status_code == 403


async def _ws_connect(portal, workspace_id, headers, origin=None):
    host = portal.notebook_host(workspace_id)
    headers = {"Origin": origin or f"http://{host}", **headers}
    async with connect(f"ws://{host}/ws", sock=portal.ws_socket(), additional_headers=headers, open_timeout=10):
        return True


def test_websocket_from_a_foreign_origin_is_refused(portal, people, echo_workspace):
    headers = {"Authorization": f"Bearer {people['tokens']['alice']}"}
    with pytest.raises(InvalidStatus):
        run_async(_ws_connect, portal, echo_workspace["id"], headers, "http://evil.example")


def test_a_ticket_works_once_and_the_cookie_only_on_its_own_host(portal, people, echo_image, echo_workspace):
    client, login = signed_in(portal, "alice")
    assert "domain=" not in login.headers["set-cookie"].lower()  # the portal's cookies are host-only

    path, redeemed = open_in_browser(portal, client, echo_workspace["id"])
    assert redeemed.status_code == 302 and redeemed.headers["location"] == "/lab"
    set_cookie = redeemed.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "domain=" not in set_cookie
    state = f"{tickets.STATE_COOKIE_NAME}={'s' * 43}"
    assert portal.notebook(echo_workspace["id"], cookie=state).get(path).status_code == 403  # used already
    audit = AuditEvent.objects.filter(action="workspace.open", actor_name="alice")
    assert audit.count() == 1

    cookie = f"{tickets.COOKIE_NAME}={redeemed.cookies[tickets.COOKIE_NAME]}"
    other = create(portal, people["tokens"]["alice"], echo_image, name="other").json()
    wait_state(portal, people["tokens"]["alice"], other["id"], "running")
    assert portal.notebook(other["id"], cookie=cookie).get("/api/status").status_code == 401
    assert portal.client(cookie=cookie).get("/api/v1/me/").status_code == 401  # nor the portal


def test_a_ticket_expires(settings, people):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    state = tickets.state_new()
    ticket = tickets.ticket_issue(user_id=people["alice"].pk, workspace_id="w1", state=state, session_key="k")

    with time_machine.travel(timezone.now() + timedelta(seconds=settings.DOCKYARD_TICKET_MAX_AGE_S + 1)):
        assert tickets.ticket_redeem(ticket=ticket, workspace_id="w1", state=state) is None
    assert tickets.ticket_redeem(ticket=ticket, workspace_id="w1", state=state) is not None


def test_a_ticket_for_one_workspace_does_not_open_another(settings, people):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    state = tickets.state_new()
    ticket = tickets.ticket_issue(user_id=people["alice"].pk, workspace_id="w1", state=state, session_key="k")
    assert tickets.ticket_redeem(ticket=ticket, workspace_id="w2", state=state) is None


def test_a_ticket_needs_the_state_of_the_browser_it_was_made_for(settings, people):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    state = tickets.state_new()
    ticket = tickets.ticket_issue(user_id=people["alice"].pk, workspace_id="w1", state=state, session_key="k")
    assert tickets.ticket_redeem(ticket=ticket, workspace_id="w1", state=tickets.state_new()) is None
    assert tickets.ticket_redeem(ticket=ticket, workspace_id="w1", state="") is None
    found = tickets.ticket_redeem(ticket=ticket, workspace_id="w1", state=state)
    assert found is not None and tickets.session_unseal(found.session) == "k"


def test_streamed_upload_and_download_cross_the_proxy_whole(portal, people, echo_workspace):
    notebook = portal.notebook(echo_workspace["id"], authorization=f"Bearer {people['tokens']['alice']}")
    body = "x" * 3_000_000
    response = notebook.put("/upload", content=body.encode(), headers={"content-type": "text/plain"})
    assert response.status_code == 200
    assert json.loads(response.text)["body"] == body


def test_cross_origin_writes_are_refused(portal, people, echo_workspace):
    notebook = portal.notebook(
        echo_workspace["id"], authorization=f"Bearer {people['tokens']['alice']}", origin="http://evil.example"
    )
    assert notebook.post("/api/contents", json={}).status_code == 403


def test_delete_with_delete_data_removes_the_home_volume(portal, people, echo_workspace, engine):
    api = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    volume = f"dockyard-{echo_workspace['id']}-home"
    assert engine.volumes.list(filters={"name": volume})

    assert api.delete(f"/api/v1/workspaces/{echo_workspace['id']}/?delete_data=1").status_code == 204

    # the volume goes first, then the row (in the same step, after the container is removed)
    wait_for(lambda: not engine.volumes.list(filters={"name": volume}), timeout=60, what="the volume to go")
    wait_for(lambda: api.get(f"/api/v1/workspaces/{echo_workspace['id']}/").status_code == 404,
             timeout=30, what="the workspace to be gone from the API")  # fmt: skip
    assert AuditEvent.objects.filter(action="workspace.delete", details__delete_data=True).count() == 1
