"""The Celery application shared by the web process, the worker and beat."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# DjangoTask gives every task `delay_on_commit`: enqueue only once the transaction commits.
app = Celery("dockyard", task_cls="celery.contrib.django.task:DjangoTask")
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
