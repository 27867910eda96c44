"""The staff audit page, its exports and `GET /api/v1/audit/`."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.test import AsyncClient
from django.urls import reverse
from django.utils import timezone

from portal.audit.models import AuditEvent
from portal.audit.services import Actor, audit_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(demo_team, research_team):
    """Eight events: alice's in demo, carol's in research, one denied, one by the system."""
    alice = Actor(type="user", name="alice", id=1, ip="10.0.0.1")
    carol = Actor(type="user", name="carol", id=2)
    start = timezone.now() - timedelta(hours=3)
    plan = [
        (alice, "team.member_add", demo_team, "ok"),
        (alice, "team.member_update", demo_team, "ok"),
        (carol, "team.member_add", research_team, "ok"),
        (alice, "token.create", None, "ok"),
        (carol, "team.member_remove", demo_team, "denied"),
        (Actor.system(), "demo.seed", None, "ok"),
        (alice, "token.revoke", None, "ok"),
        (carol, "team.member_update", research_team, "ok"),
    ]
    for n, (actor, action, team, outcome) in enumerate(plan):
        with time_machine.travel(start + timedelta(minutes=20 * n)):
            audit_record(actor=actor, action=action, team=team, outcome=outcome, details={"n": n, "note": "=1+1"})
    return start


def ids(response) -> list[int]:
    if response["Content-Type"].startswith("application/json"):
        return [event["id"] for event in response.json()["results"]]
    return [event.id for event in response.context["page"].events]


# --- Who may see it -------------------------------------------------------------------------


def test_staff_see_the_audit_page_and_its_link(web, root, events):
    page = web(root).get(reverse("audit-list"))

    assert page.status_code == 200
    html = page.content.decode()
    assert f'<a href="{reverse("audit-list")}" aria-current="page">Audit</a>' in html
    assert ids(page) == [9, 8, 7, 6, 5, 4, 3, 2, 1]  # 9: root signing in
    assert AuditEvent.objects.get(id=9).action == "auth.login"
    assert "<details" in html and "<summary><code>team.member_add</code></summary>" in html
    assert "&quot;note&quot;: &quot;=1+1&quot;" in html  # details, escaped


@pytest.mark.parametrize("username", ["alice", "bob", "dave"])
def test_people_who_are_not_staff_get_403_everywhere(web, api, username, request, events):
    user = request.getfixturevalue(username)
    client = web(user)

    for url in ("audit-list", "audit-export-csv", "audit-export-jsonl"):
        assert client.get(reverse(url)).status_code == 403
    assert 'href="/audit/"' not in client.get(reverse("home")).content.decode()
    response = api(user).get("/api/v1/audit/")
    assert response.status_code == 403
    assert response.json() == {"detail": "The audit log is for platform admins."}


def test_anonymous_people_are_sent_to_sign_in(client, api):
    response = client.get(reverse("audit-list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert api().get("/api/v1/audit/").status_code == 401


# --- Filters, the same on the page and the API ----------------------------------------------

FILTERS = [
    ({"actor": "alice"}, [7, 4, 2, 1]),
    ({"team": "research"}, [8, 3]),
    ({"action": "team."}, [8, 5, 3, 2, 1]),
    ({"action": "team.member_add"}, [3, 1]),
    ({"outcome": "denied"}, [5]),
    ({"actor": "system"}, [6]),
    ({"actor": "carol", "team": "demo"}, [5]),
]


@pytest.mark.parametrize(("query", "expected"), FILTERS)
def test_filters_on_the_page(web, root, events, query, expected):
    assert ids(web(root).get(reverse("audit-list"), query)) == expected


@pytest.mark.parametrize(("query", "expected"), FILTERS)
def test_filters_on_the_api(api, root, events, query, expected):
    assert ids(api(root).get("/api/v1/audit/", query)) == expected


def test_time_range_is_from_inclusive_until_exclusive(api, web, root, events):
    since, until = events + timedelta(minutes=40), events + timedelta(minutes=100)
    query = {"since": since.isoformat(), "until": until.isoformat()}

    assert ids(api(root).get("/api/v1/audit/", query)) == [5, 4, 3]
    local = {"since": since.strftime("%Y-%m-%dT%H:%M"), "until": until.strftime("%Y-%m-%dT%H:%M")}
    assert ids(web(root).get(reverse("audit-list"), local)) == [5, 4, 3]  # the form's datetime-local


def test_bad_filters_are_refused_with_the_reason(api, web, root):
    response = api(root).get("/api/v1/audit/", {"outcome": "maybe", "actr": "alice"})
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {"outcome", "actr"}

    page = web(root).get(reverse("audit-list"), {"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"})
    assert page.status_code == 400 and "Must be later than since." in page.content.decode()


# --- Keyset pages ---------------------------------------------------------------------------


def test_api_pages_by_keyset_forwards_and_back(api, root, events):
    client = api(root)

    first = client.get("/api/v1/audit/", {"limit": 2, "team": "demo"}).json()
    second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()

    assert [e["id"] for e in first["results"]] == [5, 2]
    assert [e["id"] for e in second["results"]] == [1] and second["next"] is None
    assert back["results"] == first["results"]
    assert first["previous"] is None and "before=" in first["next"] and "team=demo" in first["next"]


def test_api_last_page_has_no_next(api, root, events):
    page = api(root).get("/api/v1/audit/", {"limit": 8}).json()
    assert len(page["results"]) == 8 and page["next"] is None and page["previous"] is None

    page = api(root).get("/api/v1/audit/", {"limit": 5}).json()
    rest = api(root).get(page["next"]).json()
    assert [e["id"] for e in rest["results"]] == [3, 2, 1] and rest["next"] is None


def test_page_links_keep_the_filter(web, root, events, settings):
    settings.DOCKYARD_AUDIT_PAGE_SIZE = 2
    client = web(root)

    first = client.get(reverse("audit-list"), {"actor": "alice"})
    assert ids(first) == [7, 4]
    html = first.content.decode()
    assert "?actor=alice&amp;before=4" in html and "after=" not in html
    assert ids(client.get(reverse("audit-list"), {"actor": "alice", "before": 4})) == [2, 1]
    newer = client.get(reverse("audit-list"), {"actor": "alice", "after": 2})
    assert ids(newer) == [7, 4]
    assert 'href="/audit/export.csv?actor=alice"' in html


def test_api_list_costs_one_query_however_deep(api, root, events, django_assert_num_queries):
    client = api(root)
    with django_assert_num_queries(1):
        client.get("/api/v1/audit/", {"limit": 2, "actor": "alice"})
    with django_assert_num_queries(1):
        client.get("/api/v1/audit/", {"limit": 2, "before": 4})


def test_api_record_shape(api, root, events):
    record = api(root).get("/api/v1/audit/", {"limit": 1, "before": 2}).json()["results"][0]
    stored = AuditEvent.objects.get(id=1)

    assert record == {
        "id": 1,
        "created_at": stored.created_at.isoformat(),
        "actor_type": "user",
        "actor_name": "alice",
        "actor_id": 1,
        "token_name": "",
        "ip": "10.0.0.1",
        "action": "team.member_add",
        "target_type": "",
        "target_id": "",
        "target_repr": "",
        "team_slug": "demo",
        "team_id": stored.team_id,
        "outcome": "ok",
        "details": {"n": 0, "note": "=1+1"},
        "prev_hash": stored.prev_hash,
        "hash": stored.hash,
    }


# --- Exports --------------------------------------------------------------------------------


def body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


def test_csv_export_streams_every_page_of_the_filter(web, root, events, settings):
    settings.DOCKYARD_AUDIT_PAGE_SIZE = 2
    response = web(root).get(reverse("audit-export-csv"), {"actor": "alice"})

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="dockyard-audit-')
    rows = list(csv.DictReader(io.StringIO(body(response))))
    assert [int(r["id"]) for r in rows] == [7, 4, 2, 1]
    assert json.loads(rows[-1]["details"].lstrip("'")) == {"n": 0, "note": "=1+1"}
    assert rows[0]["hash"] == AuditEvent.objects.get(id=7).hash


def test_csv_cells_that_look_like_formulas_stay_text(web, root, demo_team):
    audit_record(actor=Actor(type="anonymous", name="=HYPERLINK(1)"), action="auth.login_failed")

    export = web(root).get(reverse("audit-export-csv"), {"action": "auth.login_failed"})
    rows = list(csv.DictReader(io.StringIO(body(export))))
    assert rows[0]["actor_name"] == "'=HYPERLINK(1)"


def test_jsonl_export_is_one_record_a_line_like_the_api(web, api, root, events):
    response = web(root).get(reverse("audit-export-jsonl"), {"outcome": "ok", "team": "research"})

    assert response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in body(response).splitlines()]
    assert lines == api(root).get("/api/v1/audit/", {"outcome": "ok", "team": "research"}).json()["results"]


def test_export_streams_in_chunks(web, root, events, monkeypatch):
    monkeypatch.setattr("portal.audit.exports.ROWS_PER_CHUNK", 3)
    response = web(root).get(reverse("audit-export-jsonl"))

    chunks = [chunk for chunk in response.streaming_content if chunk]
    assert [chunk.count(b"\n") for chunk in chunks] == [3, 3, 3]  # eight events and root's sign-in


def test_export_under_asgi_hands_over_an_async_stream(root, events):
    # The portal is served by uvicorn (ASGI): a synchronous iterator would be read whole
    # before the first byte is sent, so the export must stream asynchronously there.
    client = AsyncClient()
    client.force_login(root)

    async def download():
        response = await client.get(reverse("audit-export-jsonl"))
        assert response.is_async
        return [chunk async for chunk in response.streaming_content]

    chunks = async_to_sync(download)()
    assert [json.loads(line)["id"] for line in b"".join(chunks).decode().splitlines()] == list(range(9, 0, -1))


def test_export_refuses_a_bad_filter_in_plain_text(web, root):
    response = web(root).get(reverse("audit-export-csv"), {"outcome": "<b>x</b>"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
