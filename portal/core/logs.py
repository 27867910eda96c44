"""Structured logs: every line is one JSON object with the request id, the user and, on lines
about a workload, its uid, whether it comes from Django, Celery or Dockyard's own code.

Values are bound to context variables (per request by `RequestContextMiddleware`, per task by
the Celery signals below) and merged into every record by the formatter.
"""

from __future__ import annotations

import uuid

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars, merge_contextvars

# Task arguments that name a workload: the first positional argument of these tasks.
WORKLOAD_TASKS = ("workspaces.", "jobs.")


def _shared_processors() -> list:
    return [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def logging_config(*, fmt: str, level: str) -> dict:
    """The LOGGING setting: JSON lines (fmt "json") or readable console lines ("console")."""
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": _shared_processors(),
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
    }


def configure_structlog() -> None:
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class RequestContextMiddleware:
    """Binds a request id (the caller's X-Request-ID if sane, else a new one) and the user to
    every log line the request causes, and returns the id in the response's X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        clear_contextvars()
        sent = request.headers.get("X-Request-ID", "")
        request_id = sent if 0 < len(sent) <= 64 and sent.replace("-", "").isalnum() else uuid.uuid4().hex
        bind_contextvars(request_id=request_id, path=request.path)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response  # the values stay bound for Django's own "request finished" lines


class UserContextMiddleware:
    """Adds the signed-in person (or API token's owner) to the request's log lines, once
    authentication has run."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            bind_contextvars(user=user.get_username())
        return self.get_response(request)


def task_context_bind(*, task_id: str, task_name: str, args) -> None:
    """Called before each Celery task: its id and name, and the workload it is about."""
    clear_contextvars()
    bind_contextvars(task_id=task_id, task=task_name)
    if task_name.startswith(WORKLOAD_TASKS) and args:
        bind_contextvars(workload_uid=str(args[0]))


def task_context_clear() -> None:
    clear_contextvars()
