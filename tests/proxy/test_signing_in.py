"""Signing in to a notebook host: a handshake bound to the browser, tied to the portal
session, decided afresh for refusals, and audited for API tokens."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from portal.accounts.models import Membership
from portal.accounts.services import membership_remove, token_create
from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.proxy import tickets
from tests.processes import wait_for
from tests.proxy.conftest import Browser
from workspaces.services import workspace_share, workspace_unshare

pytestmark = [pytest.mark.django_db(transaction=True)]
API = {"accept": "application/json"}


def test_a_ticket_followed_in_another_browser_signs_nobody_in(live, upstream, make_workspace, alice, bob):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    alices, bobs = Browser(live, "alice"), Browser(live, "bob")
    ticket_url = alices.to_ticket(workspace.pk)

    in_bobs = bobs.notebook(workspace.pk, ticket_url)
    assert in_bobs.status_code == 403 and "another browser" in in_bobs.text
    assert not in_bobs.headers.get_list("set-cookie")
    assert bobs.notebook(workspace.pk, "/api/status", **API).status_code == 401

    in_alices = alices.notebook(workspace.pk, ticket_url)  # still unused: it works where it was made
    assert in_alices.status_code == 302 and in_alices.headers["location"] == "/lab"
    assert alices.notebook(workspace.pk, "/api/status", **API).status_code == 200
    assert AuditEvent.objects.filter(action="workspace.open", actor_name="alice").count() == 1
    assert not AuditEvent.objects.filter(action="workspace.open", actor_name="bob").exists()


def test_a_browser_without_the_cookie_is_signed_in_through_the_portal(live, upstream, make_workspace, alice):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    browser = Browser(live, "alice")

    start = browser.notebook(workspace.pk, "/lab/tree?x=1", accept="text/html")
    assert start.status_code == 302
    assert start.headers["location"].startswith(f"{live.url}/workspaces/{workspace.pk}/open/?state=")
    back = browser.client.get(start.headers["location"].removeprefix(live.url))
    assert back.status_code == 302
    landed = browser.notebook(workspace.pk, back.headers["location"].split(str(live.port), 1)[1])
    assert landed.status_code == 302 and landed.headers["location"] == "/lab/tree?x=1"


@pytest.mark.parametrize("next_path", ["/\\evil.example", "//evil.example", "https://evil.example/", "/lab\r\nX: y"])
def test_next_accepts_only_a_path_on_the_same_host(live, upstream, make_workspace, alice, next_path):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    browser = Browser(live, "alice")
    ticket_url = browser.to_ticket(workspace.pk)
    forged = ticket_url.split("&next=")[0] + "&" + urlencode({"next": next_path})

    redeemed = browser.notebook(workspace.pk, forged)

    assert redeemed.status_code == 302 and redeemed.headers["location"] == "/lab"


def test_next_path_safe_keeps_paths_and_refuses_other_hosts():
    assert tickets.next_path_safe("/lab/tree/a.ipynb?x=1#y") == "/lab/tree/a.ipynb?x=1#y"
    for bad in ("", "lab", "//h", "/\\h", "/a\\b", "/a\tb", "/a\x00", "/a b", "http://h/", "/\x7f"):
        assert tickets.next_path_safe(bad) == tickets.DEFAULT_PATH, bad


def test_signing_out_of_the_portal_signs_out_of_the_notebook_host(live, upstream, make_workspace, alice, settings):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    browser = Browser(live, "alice")
    assert browser.open(workspace.pk).status_code == 302
    assert browser.notebook(workspace.pk, "/api/status", **API).status_code == 200

    browser.sign_out()

    wait_for(lambda: browser.notebook(workspace.pk, "/api/status", **API).status_code == 401,
             timeout=settings.DOCKYARD_PROXY_AUTH_CACHE_S + 1, what="the notebook cookie to stop working")  # fmt: skip


def test_a_new_share_takes_effect_at_once(live, upstream, make_workspace, alice, bob):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    bob_token = token_create(user=bob, name="t", expires_at=None, actor=Actor.system())[1]
    notebook = live.notebook(workspace.pk, authorization=f"Bearer {bob_token}", **API)
    assert notebook.get("/api/status").status_code == 403

    workspace_share(workspace=workspace, user=bob, by=alice, actor=Actor.system())

    assert notebook.get("/api/status").status_code == 200  # no cached refusal in the way


def test_an_api_token_on_a_notebook_host_is_audited_once_per_hour(live, upstream, make_workspace, alice):
    workspace = make_workspace(owner=alice, endpoint=upstream.http)
    token = token_create(user=alice, name="script", expires_at=None, actor=Actor.system())[1]
    notebook = live.notebook(workspace.pk, authorization=f"Bearer {token}", **API)

    for _ in range(3):
        assert notebook.get("/api/status").status_code == 200

    events = AuditEvent.objects.filter(action="workspace.open", target_id=str(workspace.pk))
    assert [(e.actor_name, e.details.get("via")) for e in events] == [("alice", "token")]


def _remove_bob(workspace, alice, bob):
    membership = Membership.objects.get(user=bob, team=workspace.team)
    membership_remove(membership=membership, by=alice, actor=Actor.system())


def _deactivate_bob(workspace, alice, bob):
    type(bob).objects.filter(pk=bob.pk).update(is_active=False)


def _unshare_bob(workspace, alice, bob):
    workspace_unshare(workspace=workspace, user=bob, by=alice, actor=Actor.system())


@pytest.mark.parametrize(
    "revoke", [_remove_bob, _deactivate_bob, _unshare_bob], ids=["removed", "deactivated", "unshared"]
)
def test_open_websockets_close_within_5_s_of_revocation(live, upstream, make_workspace, alice, bob, revoke):
    workspace = make_workspace(owner=alice, endpoint=upstream.ws)
    workspace_share(workspace=workspace, user=bob, by=alice, actor=Actor.system())
    browser = Browser(live, "bob")
    assert browser.open(workspace.pk).status_code == 302
    host = live.notebook_host(workspace.pk)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.jars[str(workspace.pk)].items())

    with connect(f"ws://{host}/api/kernels/k/channels", sock=live.ws_socket(), open_timeout=10,
                 additional_headers={"Origin": f"http://{host}", "Cookie": cookie}) as channel:  # fmt: skip
        channel.send("hello")
        assert channel.recv(timeout=10) == "hello"
        revoked_at = time.monotonic()
        revoke(workspace, alice, bob)
        with pytest.raises(ConnectionClosed) as closed:
            channel.recv(timeout=10)
        elapsed = time.monotonic() - revoked_at

    assert elapsed < 5.5, f"bob's WebSocket stayed open {elapsed:.1f} s after access ended"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
