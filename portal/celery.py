"""The Celery application shared by the web process, the worker and beat."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from celery import Celery
from celery.contrib.django.task import DjangoTask
from celery.signals import task_failure, task_postrun, task_prerun, worker_ready
from django.db import transaction
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class Task(DjangoTask):
    """Every task can be queued with `delay_on_commit`: only once the transaction commits.

    If the broker cannot be reached then, the change stays committed and the error is logged
    rather than failing the request: the database is the record of what is owed, and beat's
    passes (admission, job watch, reconcile) queue the work again once the broker is back.
    """

    def delay_on_commit(self, *args, **kwargs) -> None:
        transaction.on_commit(functools.partial(self.delay, *args, **kwargs), robust=True)

    def apply_async_on_commit(self, args=None, kwargs=None, **options) -> None:
        transaction.on_commit(functools.partial(self.apply_async, args, kwargs, **options), robust=True)


app = Celery("dockyard", task_cls=Task)
app.config_from_object("django.conf:settings", namespace="CELERY")
# `runtime`: short calls to the container engine; `builds`: image builds that may run for
# minutes, kept apart so they never delay a start or stop; `default`: everything else.
app.conf.task_queues = (Queue("default"), Queue("runtime"), Queue("builds"))
app.autodiscover_tasks()


def _make_embedded_folders() -> None:
    # The filesystem broker and result backend expect their folders to exist; web, worker and beat all call this.
    from django.conf import settings

    folders = []
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders += [options[key] for key in ("data_folder_in", "data_folder_out", "control_folder")]
    if settings.CELERY_RESULT_BACKEND.startswith("file://"):
        folders.append(settings.CELERY_RESULT_BACKEND.removeprefix("file://"))
    for folder in folders:
        Path(folder).mkdir(parents=True, exist_ok=True)


_make_embedded_folders()


@task_failure.connect
def _count_failure(sender=None, **kwargs) -> None:
    from portal.core.metrics import TASK_FAILURES

    TASK_FAILURES.labels(task=getattr(sender, "name", "unknown")).inc()


@task_prerun.connect
def _bind_task_context(task_id=None, task=None, args=None, **kwargs) -> None:
    from portal.core.logs import task_context_bind

    task_context_bind(task_id=task_id or "", task_name=getattr(task, "name", ""), args=args or ())


@task_postrun.connect
def _after_task(task=None, state=None, **kwargs) -> None:
    from portal.core.logs import task_context_clear
    from portal.core.system import periodic_run_record

    periodic_run_record(task_name=getattr(task, "name", ""), state=state or "")
    task_context_clear()


@worker_ready.connect
def _warn_about_broker(**kwargs) -> None:
    import logging

    from portal.core.health import broker_warnings

    for warning in broker_warnings():
        logging.getLogger("portal.celery").warning(warning)


@worker_ready.connect
def _serve_worker_metrics(**kwargs) -> None:
    """With DOCKYARD_WORKER_METRICS_PORT set, this worker serves its counters for Prometheus."""
    from django.conf import settings

    if settings.DOCKYARD_WORKER_METRICS_PORT:
        from portal.core.metrics import worker_metrics_serve

        worker_metrics_serve(port=settings.DOCKYARD_WORKER_METRICS_PORT,
                             address=settings.DOCKYARD_WORKER_METRICS_ADDRESS)  # fmt: skip
