"""Metrics, structured logs, the system page and the reconcile lock (no containers needed)."""

from __future__ import annotations

import hashlib
import io
import json
import logging

import httpx
import psycopg
import pytest
from django.db import connection

from portal.audit.models import AuditEvent
from portal.core.logs import logging_config
from portal.workloads.reconcile import reconcile_pass

pytestmark = pytest.mark.django_db


def test_metrics_show_workloads_and_queue_and_need_a_token_when_one_is_set(client, settings):
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    for name in ("dockyard_queue_length", "dockyard_queue_oldest_wait_seconds", "django_http_requests_total_by_method"):
        assert name in text
    settings.DOCKYARD_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403


def test_a_worker_serves_its_own_counters_on_its_metrics_port(settings):
    from portal.core.metrics import TASK_FAILURES, worker_metrics_serve

    TASK_FAILURES.labels(task="tests.metrics-probe").inc()
    server = worker_metrics_serve(port=0, address="127.0.0.1")  # port 0: any free one
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        body = httpx.get(url, timeout=10).text
        assert 'dockyard_task_failures_total{task="tests.metrics-probe"}' in body

        settings.DOCKYARD_METRICS_TOKEN = "scrape-me"
        assert httpx.get(url, timeout=10).status_code == 403
        assert httpx.get(url, headers={"Authorization": "Bearer scrape-me"}, timeout=10).status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_from_elsewhere_need_staff(client, alice, root):
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code in (302, 403)
    client.force_login(alice)
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    client.force_login(root)
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


def test_log_lines_are_json_with_the_request_id_and_user(client, alice):
    stream = io.StringIO()
    options = dict(logging_config(fmt="json", level="INFO")["formatters"]["structured"])
    handler = logging.StreamHandler(stream)
    handler.setFormatter(options.pop("()")(**options))
    logging.getLogger("django.request").addHandler(handler)
    try:
        client.force_login(alice)
        response = client.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000/", HTTP_X_REQUEST_ID="abc-123")
    finally:
        logging.getLogger("django.request").removeHandler(handler)
    assert response.status_code == 404 and response["X-Request-ID"] == "abc-123"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(line["request_id"] == "abc-123" and line["user"] == "alice" and line["level"] == "warning"
               for line in lines), lines  # fmt: skip
    assert client.get("/healthz", HTTP_X_REQUEST_ID="x" * 200)["X-Request-ID"] != "x" * 200, "odd ids are replaced"


def test_the_system_page_is_for_staff_and_reconcile_on_demand_is_audited(client, alice, root):
    client.force_login(alice)
    assert client.get("/system/").status_code == 403
    client.force_login(root)
    page = client.get("/system/").content.decode()
    for text in ("database", "broker", "worker", "runtime", "workloads.reconcile", "jobs.watch", "Reconcile now"):
        assert text in page
    response = client.post("/system/reconcile/")
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="reconcile.request", actor_name="root").count() == 1


def test_only_one_reconcile_pass_runs_at_a_time():
    key = int.from_bytes(hashlib.sha256(b"reconcile").digest()[:8], "big", signed=True)
    db = connection.settings_dict
    other = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"],
                            dbname=db["NAME"], autocommit=True)  # fmt: skip
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [key])
        assert reconcile_pass() is None
    finally:
        other.close()
