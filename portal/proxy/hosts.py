"""Notebook hosts: `<workspace-uuid>.<DOCKYARD_NOTEBOOK_DOMAIN>[:port]`."""

from __future__ import annotations

import uuid

from django.conf import settings


def workspace_id_from_host(host: str) -> uuid.UUID | None:
    """The workspace a Host header names, or None for the portal's own hosts."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    label, _, domain = name.lower().partition(".")
    if domain != settings.DOCKYARD_NOTEBOOK_DOMAIN.lower():
        return None
    try:
        return uuid.UUID(label)
    except ValueError:
        return None


def notebook_origin(workspace_id) -> str:
    """The workspace's origin, e.g. http://<uuid>.nb.localhost:8000."""
    port = settings.DOCKYARD_NOTEBOOK_PORT
    default = {"http": "80", "https": "443"}[settings.DOCKYARD_NOTEBOOK_SCHEME]
    suffix = f":{port}" if port and port != default else ""
    return f"{settings.DOCKYARD_NOTEBOOK_SCHEME}://{workspace_id}.{settings.DOCKYARD_NOTEBOOK_DOMAIN}{suffix}"
