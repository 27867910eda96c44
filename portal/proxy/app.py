"""The ASGI front door: notebook hosts go to the streaming proxy, everything else to Django.

Nothing here blocks the event loop: database lookups run in threads (`access`), bodies and
WebSocket messages stream through without being gathered whole, and both are bounded.

What crosses to the container is an allow-list: the request headers Jupyter and other web
apps need, and only the cookies the app set on its own host (the proxy stores them in the
browser under a keyed per-workspace prefix and strips it on the way back). A `Set-Cookie`
from the app that names a `Domain` is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from portal.proxy import access
from portal.proxy.hosts import notebook_origin, workspace_id_from_host
from portal.proxy.tickets import (
    COOKIE_NAME,
    LOGIN_PATH,
    STATE_COOKIE_NAME,
    STATE_MAX_AGE_S,
    TICKET_PATH,
    app_cookie_prefix,
    cookie_name,
    cookie_pass,
    cookie_value,
    next_path_safe,
    state_new,
    state_valid,
    ticket_redeem,
)

log = logging.getLogger(__name__)

# Request headers that reach the container; everything else (the portal's cookies, the
# caller's Authorization, forwarding headers from outside, Origin) stays here.
FORWARDED_HEADERS = frozenset({
    b"accept", b"accept-language", b"cache-control", b"content-type", b"content-length", b"if-match",
    b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range", b"range", b"pragma",
    b"referer", b"user-agent", b"x-requested-with", b"x-xsrftoken", b"x-csrftoken",
})  # fmt: skip
# The WebSocket handshake's own headers are made by the client library.
WS_SKIPPED = frozenset({b"content-type", b"content-length", b"user-agent"})
RESPONSE_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"server", b"date"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_ERROR = 1000, 1008, 1009, 1011


class BodyTooLarge(Exception):
    """A request body passed DOCKYARD_PROXY_MAX_BODY_BYTES while streaming."""


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
                return await send({"type": "websocket.close", "code": CLOSE_POLICY})
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
        if scope["type"] == "http" and scope["path"] == LOGIN_PATH:
            next_path = (parse_qs(scope.get("query_string", b"").decode()).get("next") or [""])[0]
            return await self._login(scope, send, workspace_id, next_path)
        caller, raw_token = await self._identify(scope, workspace_id)
        if scope["type"] == "websocket":
            return await self._websocket(scope, receive, send, workspace_id, caller, raw_token)
        return await self._http(scope, receive, send, workspace_id, caller)

    # --- Who is asking ---------------------------------------------------------------------

    async def _identify(self, scope, workspace_id: str) -> tuple[access.Caller | None, str]:
        authorization = _header(scope, b"authorization")
        if authorization.lower().startswith("bearer "):
            raw = authorization[7:].strip()
            return await access.caller_for_token(raw), raw
        value = _cookies(scope).get(cookie_name(COOKIE_NAME))
        found = cookie_pass(value=value, workspace_id=workspace_id) if value else None
        if found is None or not await access.session_alive(sealed=found.session, user_id=found.user_id):
            return None, ""  # signed out of the portal: signed out here too
        return access.Caller(user_id=found.user_id, session=found.session), ""

    async def _login(self, scope, send, workspace_id: str, next_path: str):
        """Starts the handshake: a state cookie for this browser, then the portal's Open view,
        which comes back to TICKET_PATH with a ticket made for this state."""
        state = _cookies(scope).get(cookie_name(STATE_COOKIE_NAME), "")
        state = state if state_valid(state) else state_new()  # a second tab keeps the first's state
        target = f"{settings.DOCKYARD_PORTAL_URL}/workspaces/{workspace_id}/open/?"
        target += urlencode({"state": state, "next": next_path_safe(next_path)})
        cookie = _cookie_header(cookie_name(STATE_COOKIE_NAME), state, max_age=STATE_MAX_AGE_S)
        await _redirect(send, target, (b"set-cookie", cookie), *_no_store())

    async def _redeem(self, scope, send, workspace_id: str):
        query = parse_qs(scope.get("query_string", b"").decode())
        state = _cookies(scope).get(cookie_name(STATE_COOKIE_NAME), "")
        ticket = (query.get("t") or [""])[0]
        found = await sync_to_async(ticket_redeem, thread_sensitive=False)(
            ticket=ticket, workspace_id=workspace_id, state=state
        )
        if found is None or not await access.record_open(
            workspace_id=workspace_id, user_id=found.user_id, ip=_client_ip(scope)
        ):
            return await _text(
                send,
                403,
                "This link has expired, was already used, or was made for another browser. "
                "Open the workspace again from the portal.",
            )
        cookie = _cookie_header(
            cookie_name(COOKIE_NAME), cookie_value(found), max_age=settings.DOCKYARD_NOTEBOOK_COOKIE_AGE_S
        )
        spent = _cookie_header(cookie_name(STATE_COOKIE_NAME), "", max_age=0)
        next_path = next_path_safe((query.get("next") or [""])[0])
        await _redirect(send, next_path, (b"set-cookie", cookie), (b"set-cookie", spent), *_no_store())

    async def _refuse(self, scope, send, workspace_id: str, caller: access.Caller | None):
        if caller is None:
            if _wants_html(scope):
                return await self._login(scope, send, workspace_id, _path_with_query(scope))
            return await _json(send, 401, "Sign in: send a Dockyard API token as 'Authorization: Bearer <token>'.")
        return await _json(send, 403, "You do not have access to this workspace.")

    async def _admit(self, scope, workspace_id: str, caller: access.Caller | None) -> access.Decision:
        if caller is None:
            return access.NOT_FOUND
        decision = await access.decide(user_id=caller.user_id, workspace_id=workspace_id)
        if decision.allowed and caller.token_digest:
            await access.record_token_use(caller=caller, workspace_id=workspace_id, ip=_client_ip(scope))
        return decision

    # --- HTTP ------------------------------------------------------------------------------

    async def _http(self, scope, receive, send, workspace_id: str, caller: access.Caller | None):
        decision = await self._admit(scope, workspace_id, caller)
        if not decision.allowed:
            return await self._refuse(scope, send, workspace_id, caller)
        if scope["method"] not in SAFE_METHODS and not _same_origin(scope, workspace_id):
            return await _json(send, 403, "Cross-origin request refused.")
        if not decision.running:
            portal = f"{settings.DOCKYARD_PORTAL_URL}/workspaces/{workspace_id}/"
            return await _text(send, 503, f"This workspace is not running. Start it from {portal}")
        limit = settings.DOCKYARD_PROXY_MAX_BODY_BYTES
        if _content_length(scope) > limit:
            return await _too_large(send, limit)
        prefix = app_cookie_prefix(workspace_id)
        request = self.client.build_request(
            scope["method"],
            f"http://{decision.upstream}{quote(scope['path'])}",
            params=_upstream_query(scope),
            headers=_upstream_headers(scope, decision.token, prefix),
            content=_body(receive, limit),
        )
        try:
            response = await self.client.send(request, stream=True)
        except (BodyTooLarge, httpx.HTTPError) as error:
            if _raised_by(error, BodyTooLarge):  # httpx may wrap what the body stream raised
                return await _too_large(send, limit)
            log.warning("proxy: workspace %s did not answer: %s", workspace_id, error)
            return await _text(send, 502, "The workspace did not answer. It may be restarting; try again shortly.")
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _response_headers(response, prefix),
                }
            )
            scrub = _Scrubber(decision.token.encode() if _is_text(response.headers) else b"")
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": scrub(chunk), "more_body": True})
            await send({"type": "http.response.body", "body": scrub.flush(), "more_body": False})
        finally:
            await response.aclose()

    # --- WebSocket -------------------------------------------------------------------------

    async def _websocket(self, scope, receive, send, workspace_id: str, caller: access.Caller | None, raw_token: str):
        decision = await self._admit(scope, workspace_id, caller)
        if not decision.allowed or not decision.running or not _same_origin(scope, workspace_id, required=True):
            # Closing before accepting answers the upgrade with 403.
            return await send({"type": "websocket.close", "code": CLOSE_POLICY})
        query = _upstream_query(scope)
        url = f"ws://{decision.upstream}{quote(scope['path'])}" + (f"?{query}" if query else "")
        limit = settings.DOCKYARD_PROXY_WS_MAX_BYTES
        try:
            upstream = await ws_connect(
                url,
                additional_headers=_upstream_headers(
                    scope, decision.token, app_cookie_prefix(workspace_id), websocket=True
                ),
                user_agent_header=_header(scope, b"user-agent") or None,
                subprotocols=scope.get("subprotocols") or None,
                max_size=limit,  # a bigger message from the app closes with 1009, unread
                compression=None,
                open_timeout=10,
                ping_interval=30,
                ping_timeout=60,
            )
        except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as error:
            log.warning("proxy: WebSocket to workspace %s failed: %s", workspace_id, error)
            return await send({"type": "websocket.close", "code": CLOSE_ERROR})
        await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
        tasks = [
            asyncio.create_task(_client_to_upstream(receive, upstream, limit)),
            asyncio.create_task(_upstream_to_client(upstream, send, decision.token)),
            asyncio.create_task(_watch_access(caller, raw_token, workspace_id)),
        ]
        code, reason = CLOSE_NORMAL, ""
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finished = next(iter(done))
            if not finished.cancelled() and finished.exception() is None and finished.result():
                code, reason = finished.result()
        finally:
            for task in tasks:
                task.cancel()
            await upstream.close(code=code if code != CLOSE_POLICY else CLOSE_NORMAL)
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code, "reason": reason})


def _too_big_reason(limit: int) -> str:
    return f"Message larger than the notebook proxy allows ({limit} bytes)."


async def _client_to_upstream(receive, upstream, limit: int) -> tuple[int, str] | None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("text")
        if data is None:
            data = message.get("bytes")
        if data is None:
            continue
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > limit:
            return CLOSE_TOO_BIG, _too_big_reason(limit)
        await upstream.send(data)


async def _upstream_to_client(upstream, send, token: str) -> tuple[int, str] | None:
    try:
        async for message in upstream:
            if isinstance(message, str):
                await send({"type": "websocket.send", "text": message.replace(token, "*" * len(token))})
            else:
                await send({"type": "websocket.send", "bytes": message})
    except ConnectionClosed as closed:
        if closed.sent is not None and closed.sent.code == CLOSE_TOO_BIG:
            return CLOSE_TOO_BIG, _too_big_reason(settings.DOCKYARD_PROXY_WS_MAX_BYTES)
    return None


async def _watch_access(caller: access.Caller, raw_token: str, workspace_id: str) -> tuple[int, str]:
    """Ends the connection within DOCKYARD_PROXY_AUTH_CACHE_S of access being withdrawn
    (share revoked, removed from the team, account deactivated, signed out, workspace
    stopped): it looks every `interval` and accepts a cached answer only as old as the rest
    of that bound allows."""
    bound = settings.DOCKYARD_PROXY_AUTH_CACHE_S
    interval = max(0.2, min(1.0, bound / 2))
    max_age = max(0.0, bound - interval)
    while True:
        await asyncio.sleep(interval)
        if not await access.caller_still_valid(caller, raw_token=raw_token, max_age=max_age):
            return CLOSE_POLICY, "Signed out."
        decision = await access.decide(user_id=caller.user_id, workspace_id=workspace_id, max_age=max_age)
        if not decision.allowed or not decision.running:
            return CLOSE_POLICY, "Access to this workspace ended."


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


async def _body(receive, limit: int):
    """The request body as it arrives, stopping with BodyTooLarge once past `limit` bytes
    (a body without Content-Length is counted as it streams)."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message.get("body"):
            total += len(message["body"])
            if total > limit:
                raise BodyTooLarge
            yield message["body"]
        if not message.get("more_body"):
            return


def _raised_by(error: BaseException, kind: type[BaseException]) -> bool:
    seen = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _content_length(scope) -> int:
    try:
        return int(_header(scope, b"content-length") or 0)
    except ValueError:
        return 0


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


def _forwarded_cookies(scope, prefix: str) -> str:
    """Only the cookies the app set on this host: those under this workspace's prefix, with
    the prefix taken off. The portal's cookies, the notebook cookie and anything set on a
    parent domain (by script on a sibling notebook host, say) stay here."""
    kept = []
    for part in _header(scope, b"cookie").split(";"):
        name, _, value = part.strip().partition("=")
        if name.startswith(prefix) and len(name) > len(prefix):
            kept.append(f"{name[len(prefix) :]}={value}")
    return "; ".join(kept)


def _upstream_headers(scope, token: str, prefix: str, *, websocket: bool = False) -> list[tuple[str, str]]:
    headers = []
    for key, value in scope.get("headers", []):
        if key in FORWARDED_HEADERS and not (websocket and key in WS_SKIPPED):
            headers.append((key.decode("latin-1"), value.decode("latin-1")))
    if not websocket:
        # Jupyter compares Origin with Host on writes; the proxy already checked Origin, and
        # Jupyter sees the notebook host as its own.
        headers.append(("host", _header(scope, b"host")))
        headers.append(("accept-encoding", "identity"))  # so the token scrubber sees plain bytes
    cookies = _forwarded_cookies(scope, prefix)
    if cookies:
        headers.append(("cookie", cookies))
    headers.append(("authorization", f"token {token}"))
    headers.append(("x-forwarded-for", _client_ip(scope) or ""))
    headers.append(("x-forwarded-proto", settings.DOCKYARD_NOTEBOOK_SCHEME))
    return headers


def _response_headers(response: httpx.Response, prefix: str) -> list[tuple[bytes, bytes]]:
    headers = []
    for key, value in response.headers.raw:
        key = key.lower()
        if key in RESPONSE_HOP_BY_HOP:
            continue
        if key == b"set-cookie":
            value = _app_set_cookie(value, prefix)
            if value is None:
                continue
        headers.append((key, value))
    return headers


def _app_set_cookie(value: bytes, prefix: str) -> bytes | None:
    """The app's cookie under this workspace's prefix, host-only; None (dropped) when it names
    a Domain, which would reach sibling notebook hosts. Over https the prefix is `__Host-`,
    which browsers accept only with Secure and Path=/."""
    first, *attributes = value.decode("latin-1").split(";")
    name, equals, cookie_value_ = first.strip().partition("=")
    if not name or not equals:
        return None
    kept = []
    for attribute in attributes:
        key = attribute.strip().partition("=")[0].strip().lower()
        if key == "domain":
            return None
        if prefix.startswith("__Host-") and key in ("path", "secure"):
            continue
        kept.append(attribute.strip())
    if prefix.startswith("__Host-"):
        kept += ["Path=/", "Secure"]
    return "; ".join([f"{prefix}{name}={cookie_value_}", *kept]).encode("latin-1")


def _cookie_header(name: str, value: str, *, max_age: int) -> bytes:
    """A cookie of the proxy's own: host-only (no Domain), HttpOnly, Secure over https."""
    secure = "; Secure" if settings.DOCKYARD_NOTEBOOK_SCHEME == "https" else ""
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}".encode()


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


async def _redirect(send, location: str, *headers: tuple[bytes, bytes]):
    start = {"type": "http.response.start", "status": 302, "headers": [(b"location", location.encode()), *headers]}
    await send(start)
    await send({"type": "http.response.body", "body": b""})


async def _too_large(send, limit: int):
    detail = f"The request body is larger than the notebook proxy accepts ({limit} bytes at most)."
    await _json(send, 413, detail)


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
