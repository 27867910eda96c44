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


def jupyter_activity(*, endpoint: Endpoint, token: str):
    """What Jupyter's own API says about use: busy kernels, open connections (kernels and
    terminals in a browser tab), and the last kernel or terminal activity. None when it
    cannot be read (the workspace is then kept, and said so).

    The server-wide `last_activity` of /api/status is not used: reading /api/kernels, as
    this very check does, counts as activity there and would keep every workspace alive.
    """
    from datetime import datetime

    from workspaces.culling import Activity

    try:
        status = _get_json(endpoint, token, "/api/status")
        kernels = _get_json(endpoint, token, "/api/kernels")
        terminals = _get_json(endpoint, token, "/api/terminals")
    except (OSError, urllib.error.URLError, ValueError):
        return None
    moments = [item.get("last_activity") for item in [*kernels, *terminals]]
    parsed = [datetime.fromisoformat(m.replace("Z", "+00:00")) for m in moments if m]
    return Activity(
        busy=any(k.get("execution_state") == "busy" for k in kernels),
        connections=int(status.get("connections") or 0),
        last_activity=max(parsed) if parsed else None,
    )


def _get_json(endpoint: Endpoint, token: str, path: str):
    request = urllib.request.Request(
        f"http://{endpoint.host}:{endpoint.port}{path}", headers={"Authorization": f"token {token}"}
    )
    with urllib.request.urlopen(request, timeout=STATUS_TIMEOUT_S) as response:  # noqa: S310
        return json.loads(response.read())
