from __future__ import annotations

import os
import uuid

import pytest
from django.test import override_settings

from tests.processes import celery_worker_args, running, wait_for

pytestmark = pytest.mark.django_db


def test_healthz_answers_while_the_process_lives(client):
    response = client.get("/healthz")
    assert response.status_code == 200


def readyz(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    return response.status_code, response.json()


def test_readyz_follows_a_real_worker_coming_and_going(client, tmp_path):
    env = {**os.environ}
    with running(celery_worker_args(f"readyz-{uuid.uuid4().hex[:8]}"), env=env, log=tmp_path / "worker.log"):
        status, body = wait_for(
            lambda: (r := readyz(client))[0] == 200 and r, timeout=60, what="/readyz to turn 200 with a worker"
        )
        assert body == {"database": "ok", "broker": "ok", "worker": "ok", "runtime": "ok"}

    status, body = readyz(client)
    assert status == 503
    assert body["worker"].startswith("no Celery worker answered")
    assert body["database"] == body["broker"] == "ok"


@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0", CELERY_BROKER_TRANSPORT_OPTIONS={})
def test_readyz_names_a_broker_that_does_not_answer(client):
    status, body = readyz(client)

    assert status == 503
    assert body["broker"] != "ok" and "Error" in body["broker"]
    assert body["worker"] == "not checked: the broker is not reachable"
    assert body["database"] == "ok"


def test_readyz_warns_about_a_redis_that_may_evict_tasks(client, tmp_path, settings):
    import subprocess

    import redis

    from tests.processes import free_port

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--maxmemory-policy", "allkeys-lru", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(lambda: redis.Redis(port=port).ping(), timeout=20, what="Redis to answer")
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {}
        status, body = readyz(client)
        assert body["broker"] == "ok" and "allkeys-lru" in body["warnings"][0]
        assert status == 503, "no worker listens on this broker; the warning alone would not make it 503"
    finally:
        server.terminate()
        server.wait(timeout=10)
