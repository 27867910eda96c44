"""Talking to a workspace's Jupyter server from the worker (never from the browser)."""

from __future__ import annotations

import json
import time

import httpx

from portal.runtime.base import Endpoint

# One readiness probe may take this long; the start deadline bounds the whole wait.
STATUS_TIMEOUT_S = 2.0
# What a workspace answers is read up to this many bytes: a container cannot make the worker
# hold an endless body in memory (Jupyter's status and lists are a few KiB).
STATUS_MAX_BYTES = 64 * 1024


class AnswerTooLarge(ValueError):
    """A workspace's answer passed STATUS_MAX_BYTES."""


def jupyter_status(*, endpoint: Endpoint, token: str) -> bool:
    """True when Jupyter's /api/status answers 200 with JSON at the internal endpoint."""
    try:
        return isinstance(_get_json(endpoint, token, "/api/status"), dict)
    except (httpx.HTTPError, ValueError):
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
    except (httpx.HTTPError, ValueError):
        return None
    moments = [item.get("last_activity") for item in [*kernels, *terminals]]
    parsed = [datetime.fromisoformat(m.replace("Z", "+00:00")) for m in moments if m]
    return Activity(
        busy=any(k.get("execution_state") == "busy" for k in kernels),
        connections=int(status.get("connections") or 0),
        last_activity=max(parsed) if parsed else None,
    )


def _get_json(endpoint: Endpoint, token: str, path: str):
    """The JSON a 200 answer carries. Never follows a redirect (the container chooses where it
    points), and stops reading past STATUS_MAX_BYTES; raises ValueError on anything else."""
    url = f"http://{endpoint.host}:{endpoint.port}{path}"
    headers = {"Authorization": f"token {token}", "Accept-Encoding": "identity"}
    with httpx.stream("GET", url, headers=headers, timeout=STATUS_TIMEOUT_S, follow_redirects=False) as response:
        if response.status_code != 200:
            raise ValueError(f"{path} answered {response.status_code}")
        body, deadline = bytearray(), time.monotonic() + STATUS_TIMEOUT_S
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > STATUS_MAX_BYTES:
                raise AnswerTooLarge(f"{path} answered more than {STATUS_MAX_BYTES} bytes")
            if time.monotonic() > deadline:  # a trickle: the timeout above is per read
                raise ValueError(f"{path} took longer than {STATUS_TIMEOUT_S} s to answer")
        return json.loads(body)
