"""Talking to a workspace's Jupyter server from the worker (never from the browser)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from portal.runtime.base import Endpoint

# One readiness probe may take this long; the start deadline bounds the whole wait.
STATUS_TIMEOUT_S = 2.0


def jupyter_status(*, endpoint: Endpoint, token: str) -> bool:
    """True when Jupyter's /api/status answers 200 with JSON at the internal endpoint."""
    request = urllib.request.Request(
        f"http://{endpoint.host}:{endpoint.port}/api/status", headers={"Authorization": f"token {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT_S) as response:  # noqa: S310
            return response.status == 200 and isinstance(json.loads(response.read()), dict)
    except (OSError, urllib.error.URLError, ValueError):
        return False
