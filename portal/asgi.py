"""ASGI entry point for the web process (uvicorn): notebook hosts to the proxy, the rest to Django."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

django_application = get_asgi_application()

from portal.proxy.app import Router  # noqa: E402  (needs Django set up first)

application = Router(django_application)
