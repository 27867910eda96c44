"""Fifty clients at once against a live portal on PostgreSQL: no request fails, and the portal
holds no more database connections than its pool allows."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter

import httpx
import psycopg
import pytest
from django.db import connection

from tests.processes import run_async

CLIENTS = 50
REQUESTS_PER_CLIENT = 6
POOL_MAX = 4
APPLICATION = f"dockyard-load-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def live_env(transactional_db) -> dict[str, str]:
    from tests.processes import env_on_test_database

    # The portal's connections carry a name of their own, so they can be counted apart from
    # this test's and from anyone else's on the same server.
    url = env_on_test_database()["DATABASE_URL"] + f"?application_name={APPLICATION}"
    return {"DATABASE_URL": url, "DOCKYARD_DB_POOL_MAX": str(POOL_MAX), "DOCKYARD_DB_POOL_TIMEOUT_S": "60"}


def _portal_connections() -> int:
    db = connection.settings_dict
    with psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], password=db.get("PASSWORD") or None,
        dbname=db["NAME"], autocommit=True,
    ) as conn:  # fmt: skip
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION]
        ).fetchone()[0]


async def _client(base_url: str, token: str, n: int, statuses: Counter) -> None:
    async with httpx.AsyncClient(
        base_url=base_url, headers={"authorization": f"Bearer {token}"}, timeout=120
    ) as client:
        for i in range(REQUESTS_PER_CLIENT):
            if (n + i) % 2:
                response = await client.get("/api/v1/workspaces/")
            else:
                response = await client.patch("/api/v1/me/", json={"first_name": f"Bob {n}-{i}"})
            statuses[response.status_code] += 1


async def _load(base_url: str, token: str) -> Counter:
    statuses: Counter = Counter()
    await asyncio.wait_for(
        asyncio.gather(*(_client(base_url, token, n, statuses) for n in range(CLIENTS))), timeout=240
    )
    return statuses


def test_fifty_concurrent_clients_get_no_server_error_within_the_pool_bound(live_portal, bob_token):
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _portal_connections())
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        statuses = run_async(_load, live_portal.url, bob_token)
    finally:
        done.set()
        watcher.join(timeout=10)

    assert sum(statuses.values()) == CLIENTS * REQUESTS_PER_CLIENT
    assert set(statuses) == {200}, statuses
    assert 0 < peak <= POOL_MAX, f"the portal held {peak} connections; its pool allows {POOL_MAX}"
