"""Dockyard: the platform core (project config plus the apps in this package)."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
