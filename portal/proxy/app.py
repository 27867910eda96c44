"""The ASGI front door: notebook hosts go to the streaming proxy, everything else to Django.

Nothing here blocks the event loop: database lookups run in threads (`access`), bodies and
WebSocket messages stream through without being gathered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

import httpx
from django.conf import settings
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from portal.proxy import access
from portal.proxy.hosts import notebook_origin, workspace_id_from_host
from portal.proxy.tickets import COOKIE_NAME, cookie_pass, cookie_value, ticket_redeem

log = logging.getLogger(__name__)

TICKET_PATH = "/_dockyard/ticket"
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailers",
    b"transfer-encoding", b"upgrade", b"host", b"authorization", b"cookie", b"accept-encoding",
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"origin",
}  # fmt: skip
RESPONSE_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"server", b"date"}
# Cookies of the portal's own that must never reach a container, whatever their host.
PORTAL_COOKIES = ("sessionid", "csrftoken", "__Host-sessionid", "__Host-csrftoken", COOKIE_NAME)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class Router:
    """Routes by Host: a notebook host to the proxy, any other host to the portal (Django)."""

    def __init__(self, portal_app):
        self.portal = portal_app
        self.proxy = NotebookProxy()

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            workspace_id = workspace_id_from_host(_header(scope, b"host"))
            if workspace_id is not None:
                return await self.proxy(scope, receive, send, str(workspace_id))
            if scope["type"] == "websocket":  # the portal itself serves no WebSockets
                return await send({"type": "websocket.close", "code": 1008})
        return await self.portal(scope, receive, send)


class NotebookProxy:
    def __init__(self):
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # Made on first use, inside the server's event loop. No read timeout: responses may
        # legitimately stream for a long time (large downloads, long polls).
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(connect=10, read=None, write=60, pool=30),
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
                follow_redirects=False,
            )
        return self._client

    async def __call__(self, scope, receive, send, workspace_id: str):
        if scope["type"] == "http" and scope["path"] == TICKET_PATH:
            return await self._redeem(scope, send, workspace_id)
        user_id = await self._identify(scope, workspace_id)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send, workspace_id, user_id)
        return await self._http(scope, receive, send, workspace_id, user_id)

    # --- Who is asking ---------------------------------------------------------------------

    async def _identify(self, scope, workspace_id: str) -> int | None:
        authorization = _header(scope, b"authorization")
        if authorization.lower().startswith("bearer "):
            return await access.user_id_for_token(authorization[7:].strip())
        value = _cookies(scope).get(COOKIE_NAME)
        if value:
            found = cookie_pass(value=value, workspace_id=workspace_id)
            return found.user_id if found else None
        return None

    async def _redeem(self, scope, send, workspace_id: str):
        query = parse_qs(scope.get("query_string", b"").decode())
        found = ticket_redeem(ticket=(query.get("t") or [""])[0], workspace_id=workspace_id)
        if found is None or not await access.record_open(
            workspace_id=workspace_id, user_id=found.user_id, ip=_client_ip(scope)
        ):
            return await _text(send, 403, "This link has expired or was already used. Open the workspace again.")
        next_path = (query.get("next") or ["/lab"])[0]
        if not next_path.startswith("/") or next_path.startswith("//"):
            next_path = "/lab"
        secure = "; Secure" if settings.DOCKYARD_NOTEBOOK_SCHEME == "https" else ""
        cookie = (
            f"{COOKIE_NAME}={cookie_value(found)}; Path=/; HttpOnly; SameSite=Lax"
            f"; Max-Age={settings.DOCKYARD_NOTEBOOK_COOKIE_AGE_S}{secure}"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 302,
                "headers": [(b"location", next_path.encode()), (b"set-cookie", cookie.encode()), *_no_store()],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(self, scope, send, workspace_id: str, user_id: int | None):
        if user_id is None:
            if _wants_html(scope):
                target = f"{settings.DOCKYARD_PORTAL_URL}/workspaces/{workspace_id}/open/"
                target += "?" + urlencode({"next": _path_with_query(scope)})
                return await _redirect(send, target)
            return await _json(send, 401, "Sign in: send a Dockyard API token as 'Authorization: Bearer <token>'.")
        return await _json(send, 403, "You do not have access to this workspace.")

    # --- HTTP ------------------------------------------------------------------------------

    async def _http(self, scope, receive, send, workspace_id: str, user_id: int | None):
        decision = await access.decide(user_id=user_id, workspace_id=workspace_id) if user_id else access.NOT_FOUND
        if not decision.allowed:
            return await self._refuse(scope, send, workspace_id, user_id)
        if scope["method"] not in SAFE_METHODS and not _same_origin(scope, workspace_id):
            return await _json(send, 403, "Cross-origin request refused.")
        if not decision.running:
            portal = f"{settings.DOCKYARD_PORTAL_URL}/workspaces/{workspace_id}/"
            return await _text(send, 503, f"This workspace is not running. Start it from {portal}")
        request = self.client.build_request(
            scope["method"],
            f"http://{decision.upstream}{quote(scope['path'])}",
            params=_upstream_query(scope),
            headers=_upstream_headers(scope, decision.token),
            content=_body(receive),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as error:
            log.warning("proxy: workspace %s did not answer: %s", workspace_id, error)
            return await _text(send, 502, "The workspace did not answer. It may be restarting; try again shortly.")
        try:
            headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in RESPONSE_HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            scrub = _Scrubber(decision.token.encode() if _is_text(response.headers) else b"")
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": scrub(chunk), "more_body": True})
            await send({"type": "http.response.body", "body": scrub.flush(), "more_body": False})
        finally:
            await response.aclose()

    # --- WebSocket -------------------------------------------------------------------------

    async def _websocket(self, scope, receive, send, workspace_id: str, user_id: int | None):
        decision = await access.decide(user_id=user_id, workspace_id=workspace_id) if user_id else access.NOT_FOUND
        if not decision.allowed or not decision.running or not _same_origin(scope, workspace_id, required=True):
            # Closing before accepting answers the upgrade with 403.
            return await send({"type": "websocket.close", "code": 1008})
        query = _upstream_query(scope)
        url = f"ws://{decision.upstream}{quote(scope['path'])}" + (f"?{query}" if query else "")
        try:
            upstream = await ws_connect(
                url,
                additional_headers=_upstream_headers(scope, decision.token, websocket=True),
                subprotocols=scope.get("subprotocols") or None,
                max_size=None,
                compression=None,
                open_timeout=10,
                ping_interval=30,
                ping_timeout=60,
            )
        except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as error:
            log.warning("proxy: WebSocket to workspace %s failed: %s", workspace_id, error)
            return await send({"type": "websocket.close", "code": 1011})
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        token = decision.token
        tasks = [
            asyncio.create_task(_client_to_upstream(receive, upstream)),
            asyncio.create_task(_upstream_to_client(upstream, send, token)),
            asyncio.create_task(_watch_access(user_id, workspace_id)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": 1000})


async def _client_to_upstream(receive, upstream) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await upstream.send(message["text"])
        elif message.get("bytes") is not None:
            await upstream.send(message["bytes"])


async def _upstream_to_client(upstream, send, token: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in upstream:
            if isinstance(message, str):
                await send({"type": "websocket.send", "text": message.replace(token, "*" * len(token))})
            else:
                await send({"type": "websocket.send", "bytes": message})


async def _watch_access(user_id: int, workspace_id: str) -> None:
    """Ends the connection soon after access is withdrawn (share revoked, workspace stopped)."""
    while True:
        await asyncio.sleep(max(settings.DOCKYARD_PROXY_AUTH_CACHE_S, 0.5))
        decision = await access.decide(user_id=user_id, workspace_id=workspace_id)
        if not decision.allowed or not decision.running:
            return


# --- Helpers ---------------------------------------------------------------------------------------


class _Scrubber:
    """Replaces Jupyter's token in a byte stream (with same-length filler, so lengths hold),
    including where it straddles two chunks. The browser never sees the token."""

    def __init__(self, token: bytes):
        self.token, self.filler, self.tail = token, b"*" * len(token), b""

    def __call__(self, chunk: bytes) -> bytes:
        if not self.token:
            return chunk
        data = (self.tail + chunk).replace(self.token, self.filler)
        keep = len(self.token) - 1
        self.tail, out = data[-keep:] if keep else b"", data[:-keep] if keep else data
        return out

    def flush(self) -> bytes:
        tail, self.tail = self.tail, b""
        return tail


def _is_text(headers) -> bool:
    """Responses a page could show or script could read: these are scrubbed of the token.
    Downloads of binary files stream through untouched."""
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    return not kind or kind.startswith("text/") or kind.endswith(("json", "javascript", "xml"))


async def _body(receive):
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message.get("body"):
            yield message["body"]
        if not message.get("more_body"):
            return


def _header(scope, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


def _cookies(scope) -> dict[str, str]:
    jar = SimpleCookie()
    with contextlib.suppress(CookieError):
        jar.load(_header(scope, b"cookie"))
    return {key: morsel.value for key, morsel in jar.items()}


def _forwarded_cookies(scope) -> str:
    """The request's cookies minus the portal's own: Jupyter keeps its `_xsrf` and the like."""
    kept = []
    for part in _header(scope, b"cookie").split(";"):
        name = part.split("=", 1)[0].strip()
        if name and name not in PORTAL_COOKIES:
            kept.append(part.strip())
    return "; ".join(kept)


def _upstream_headers(scope, token: str, *, websocket: bool = False) -> list[tuple[str, str]]:
    headers = []
    for key, value in scope.get("headers", []):
        if key in HOP_BY_HOP or key.startswith(b"sec-websocket"):
            continue
        headers.append((key.decode("latin-1"), value.decode("latin-1")))
    if not websocket:
        # Jupyter compares Origin with Host on writes; the proxy already checked Origin, and
        # Jupyter sees the notebook host as its own.
        headers.append(("host", _header(scope, b"host")))
        headers.append(("accept-encoding", "identity"))  # so the token scrubber sees plain bytes
    cookies = _forwarded_cookies(scope)
    if cookies:
        headers.append(("cookie", cookies))
    headers.append(("authorization", f"token {token}"))
    headers.append(("x-forwarded-for", _client_ip(scope) or ""))
    headers.append(("x-forwarded-proto", settings.DOCKYARD_NOTEBOOK_SCHEME))
    return headers


def _upstream_query(scope) -> str:
    """The query string minus any `token`: JupyterLab puts the (scrubbed) token it was shown
    into WebSocket URLs, and Jupyter would prefer it to the real one the proxy sends."""
    pairs = parse_qsl(scope.get("query_string", b"").decode(), keep_blank_values=True)
    return urlencode([(key, value) for key, value in pairs if key != "token"])


def _same_origin(scope, workspace_id: str, *, required: bool = False) -> bool:
    origin = _header(scope, b"origin")
    if not origin:
        return not required
    return origin.rstrip("/") == notebook_origin(workspace_id)


def _client_ip(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _path_with_query(scope) -> str:
    query = scope.get("query_string", b"").decode()
    return scope["path"] + (f"?{query}" if query else "")


def _wants_html(scope) -> bool:
    return scope["method"] == "GET" and "text/html" in _header(scope, b"accept")


def _no_store() -> list[tuple[bytes, bytes]]:
    return [(b"cache-control", b"no-store")]


async def _redirect(send, location: str):
    await send({"type": "http.response.start", "status": 302, "headers": [(b"location", location.encode())]})
    await send({"type": "http.response.body", "body": b""})


async def _json(send, status: int, detail: str):
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *_no_store()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _text(send, status: int, text: str):
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*headers, *_no_store()]})
    await send({"type": "http.response.body", "body": body})
