"""Liveness (`/healthz`) and readiness (`/readyz`) of the portal and what it depends on."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection

from portal.celery import app as celery_app
from portal.core.metrics import may_scrape
from portal.runtime import get_backend

OK = "ok"


def healthz(request: HttpRequest) -> HttpResponse:
    """The process is up and serving; says nothing about its dependencies."""
    return HttpResponse("ok\n", content_type="text/plain")


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return OK


def _broker_connection() -> Connection:
    # Built from settings on every check (not the app's pooled connection), so a changed or
    # wrong broker URL is reported as it is now.
    return Connection(
        settings.CELERY_BROKER_URL,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        connect_timeout=settings.DOCKYARD_READY_CONNECT_TIMEOUT_S,
    )


def check_broker() -> str:
    with _broker_connection() as conn:
        conn.ensure_connection(max_retries=1, timeout=settings.DOCKYARD_READY_CONNECT_TIMEOUT_S)
    return OK


def check_worker() -> str:
    with _broker_connection() as conn:
        replies = celery_app.control.ping(timeout=settings.DOCKYARD_READY_WORKER_TIMEOUT_S, connection=conn)
    if not replies:
        return f"no Celery worker answered a ping within {settings.DOCKYARD_READY_WORKER_TIMEOUT_S:g} s"
    return OK


def check_runtime() -> str:
    get_backend().ping()
    return OK


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "broker": check_broker,
    "worker": check_worker,
    "runtime": check_runtime,
}


def broker_warnings() -> list[str]:
    """What is wrong with the broker's set-up though it answers: a Redis that may evict keys
    can silently drop queued tasks when it fills up."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return []
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=settings.DOCKYARD_READY_CONNECT_TIMEOUT_S,
                                  socket_timeout=settings.DOCKYARD_READY_CONNECT_TIMEOUT_S)  # fmt: skip
    try:
        try:
            policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
        except redis.ResponseError:  # CONFIG disabled (managed Redis): INFO says it too
            policy = client.info("memory").get("maxmemory_policy", "")
    except redis.RedisError:
        return []
    finally:
        client.close()
    if policy and policy != "noeviction":
        return [
            f"Redis maxmemory-policy is {policy}: set it to noeviction, "
            "or queued tasks may be evicted when memory is full."
        ]
    return []


def run_checks() -> dict[str, str]:
    results: dict[str, str] = {}
    for name, check in CHECKS.items():
        if name == "worker" and results.get("broker") != OK:
            # Pinging through a dead broker would only wait out its retries.
            results[name] = "not checked: the broker is not reachable"
            continue
        try:
            results[name] = check()
        except Exception as error:  # noqa: BLE001  (any failure is a finding, reported by name)
            results[name] = f"{type(error).__name__}: {error}".strip()[:300]
    return results


FAILING = "failing"


def _may_see_detail(request: HttpRequest) -> bool:
    # Exception text names hosts, ports and users of the stores: only those who may read the
    # metrics (this machine, the metrics token) and staff see it; a probe needs only the status.
    authorization = request.headers.get("Authorization", "")
    if may_scrape(authorization=authorization, remote_addr=request.META.get("REMOTE_ADDR")):
        return True
    return bool(getattr(request, "user", None) and request.user.is_staff)


@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every component answers, else 503; the body names each component's state, and
    why one fails to those who may see it."""
    results: dict = run_checks()
    ready = all(value == OK for value in results.values())
    if not _may_see_detail(request):
        return JsonResponse({name: OK if value == OK else FAILING for name, value in results.items()},
                            status=200 if ready else 503)  # fmt: skip
    warnings = broker_warnings() if results.get("broker") == OK else []
    if warnings:
        results["warnings"] = warnings  # reported, but not a reason to take the portal out of service
    return JsonResponse(results, status=200 if ready else 503)
