"""Prometheus metrics: counters and histograms the processes update, and gauges read from the
database when /metrics is scraped.

Web, worker and beat are separate processes: they share their counters through files in
PROMETHEUS_MULTIPROC_DIR (set in settings, cleared by `make run` at start-up), and /metrics adds
them up. The database gauges are the same whichever web process answers.
"""

from __future__ import annotations

import hmac
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Min, Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    make_wsgi_app,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

RECONCILE_CORRECTIONS = Counter(
    "dockyard_reconcile_corrections_total", "Corrections made by reconcile passes.", ["kind", "workload_kind"]
)
ADMISSION_REFUSALS = Counter(
    "dockyard_admission_refusals_total", "Admissions refused, by the limit that refused them.", ["scope", "limit"]
)
WORKSPACE_LAUNCH = Histogram(
    "dockyard_workspace_launch_seconds",
    "From admission to JupyterLab answering, per workspace start.",
    buckets=(1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300),
)
TASK_FAILURES = Counter("dockyard_task_failures_total", "Celery tasks that raised, by task name.", ["task"])


class StateCollector:
    """Gauges computed from the database at scrape time: always the whole installation's truth."""

    def collect(self):
        from jobs.models import Job
        from portal.quotas.models import GpuDevice, QueuedRequest, QueueState
        from workspaces.models import Workspace

        workloads = GaugeMetricFamily("dockyard_workloads", "Workloads by kind and state.", labels=["kind", "state"])
        for model in (Workspace, Job):
            for row in model.objects.values("state").annotate(n=Count("pk")).order_by():
                workloads.add_metric([model.KIND, row["state"]], row["n"])
        yield workloads

        waiting = QueuedRequest.objects.filter(state=QueueState.WAITING)
        queue = waiting.aggregate(n=Count("pk"), oldest=Min("enqueued_at"))
        yield GaugeMetricFamily("dockyard_queue_length", "Requests waiting for admission.", value=queue["n"])
        oldest = (timezone.now() - queue["oldest"]).total_seconds() if queue["oldest"] else 0
        yield GaugeMetricFamily(
            "dockyard_queue_oldest_wait_seconds", "How long the oldest request waits.", value=oldest
        )

        total = GaugeMetricFamily(
            "dockyard_gpus", "GPUs in the inventory, per node and model.", labels=["node", "model"]
        )
        used = GaugeMetricFamily("dockyard_gpus_allocated", "GPUs with an open allocation.", labels=["node", "model"])
        rows = (
            GpuDevice.objects.values("node__name", "model")
            .annotate(n=Count("pk", distinct=True),
                      busy=Count("allocations", filter=Q(allocations__closed_at__isnull=True), distinct=True))
            .order_by()
        )  # fmt: skip
        for row in rows:
            total.add_metric([row["node__name"], row["model"]], row["n"])
            used.add_metric([row["node__name"], row["model"]], row["busy"])
        yield total
        yield used


def metrics_text() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(StateCollector())
    return generate_latest(registry)


def may_scrape(*, authorization: str, remote_addr: str | None) -> bool:
    """With DOCKYARD_METRICS_TOKEN set, the scraper sends it as a Bearer token; without,
    only this machine may read metrics."""
    token = settings.DOCKYARD_METRICS_TOKEN
    if token:
        return hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), token.encode())
    return remote_addr in ("127.0.0.1", "::1")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # scrapes every few seconds: not worth a line each
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def worker_metrics_serve(*, port: int, address: str) -> WSGIServer:
    """Serves a worker's own counters (its processes' files in PROMETHEUS_MULTIPROC_DIR) at
    http://<address>:<port>/metrics, from a thread. Where web and worker do not share that
    folder (separate pods or containers), Prometheus scrapes each worker here; the database
    gauges stay on the web's /metrics. Same rule as /metrics: the token, or this machine."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    app = make_wsgi_app(registry)

    def guarded(environ, start_response):
        if not may_scrape(authorization=environ.get("HTTP_AUTHORIZATION", ""),
                           remote_addr=environ.get("REMOTE_ADDR")):  # fmt: skip
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"A metrics token is needed.\n"]
        return app(environ, start_response)

    server = make_server(address, port, guarded, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus's scrape target. With DOCKYARD_METRICS_TOKEN set, it needs
    `Authorization: Bearer <token>`; without, it answers only this machine and staff."""
    allowed = may_scrape(authorization=request.headers.get("Authorization", ""),
                          remote_addr=request.META.get("REMOTE_ADDR"))  # fmt: skip
    if settings.DOCKYARD_METRICS_TOKEN and not allowed:
        raise PermissionDenied("A metrics token is needed.")
    if not allowed and not request.user.is_staff:
        raise PermissionDenied("Metrics are served to this machine, staff, or with DOCKYARD_METRICS_TOKEN.")
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
