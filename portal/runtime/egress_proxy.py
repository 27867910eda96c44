"""The egress proxy of image builds: an HTTP proxy that reaches only allowed package indexes.

Builds run on a bridge whose traffic the host firewall rejects everywhere but this proxy's
port on the bridge's gateway (scripts/workload-firewall.sh). Package installers (pip, apt,
npm) honour HTTP(S)_PROXY, and through a proxy they send the host *name* (CONNECT
pypi.org:443, GET http://deb.debian.org/...), so the allow-list is of names: it holds however
a CDN resolves them, which a list of addresses in the firewall would not. Anything else gets
403 with a reason phrase naming the fence, which is what the installer prints in the build log.

One proxy runs per builds worker process, in a daemon thread, started on first use; several
worker processes share the port (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# A request head (request line and headers) larger than this is refused.
MAX_HEAD_BYTES = 64 * 1024
# How long a client may take to send its request head, and the proxy to connect upstream.
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 30.0
CHUNK = 64 * 1024
REFUSED = "Host not in DOCKYARD_BUILD_EGRESS_HOSTS (Dockyard build fence)"

_proxies: dict[tuple[str, int], EgressProxy] = {}
_proxies_lock = threading.Lock()


def egress_proxy_ensure(*, host: str, port: int, allowed: Iterable[str]) -> EgressProxy:
    """The proxy listening on host:port in this process (started now if need be), allowing
    exactly `allowed` from now on ("name" or "name:port"; "*.domain" for its subdomains)."""
    with _proxies_lock:
        proxy = _proxies.get((host, port))
        if proxy is None:
            proxy = EgressProxy(host=host, port=port)
            proxy.start()
            _proxies[(host, port)] = proxy
    proxy.allowed = frozenset(a.lower() for a in allowed)
    return proxy


def _listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on host:port; several worker processes share the port."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def allowed_from_urls(urls: Iterable[str]) -> set[str]:
    """The host:port entries that let a build reach these index URLs."""
    entries = set()
    for url in filter(None, urls):
        parts = urlsplit(url)
        if parts.hostname:
            entries.add(f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}")
    return entries


class EgressProxy:
    """An allow-listing HTTP proxy (CONNECT tunnels and plain HTTP requests)."""

    def __init__(self, *, host: str, port: int):
        self.host = host
        self.port = port
        self.allowed: frozenset[str] = frozenset()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None

    def start(self) -> None:
        # Binding happens here, in the caller's thread, so a failure to listen is its error.
        # The loop runs only in the proxy's own thread: the caller may be running a loop of its
        # own already (an async worker pool, a test driving a browser).
        sock = _listening_socket(self.host, self.port)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.server = self.loop.run_until_complete(
                    asyncio.start_server(self._serve, sock=sock, limit=MAX_HEAD_BYTES)
                )
            except Exception as error:  # noqa: BLE001  (handed to the caller as is)
                ready.set_exception(error)
                return
            ready.set_result(None)
            self.loop.run_forever()

        threading.Thread(target=serve, name=f"egress-proxy-{self.port}", daemon=True).start()
        ready.result(timeout=30)

    def close(self) -> None:
        """Stops listening and ends the proxy's thread (open tunnels end with it)."""
        with _proxies_lock:
            _proxies.pop((self.host, self.port), None)
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)

    def permits(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if f"{host}:{port}" in self.allowed:
            return True
        if port not in (80, 443):
            return False
        return host in self.allowed or any(
            entry.startswith("*.") and host.endswith(entry[1:]) for entry in self.allowed
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                await self._tunnel(reader, writer, host.strip("[]"), int(port), head=None)
            else:
                parts = urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    await _answer(writer, 400, "Only absolute http:// URLs and CONNECT")
                    return
                path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                rest = head.split(b"\r\n", 1)[1]
                request = f"{method} {path} {version}\r\n".encode("latin-1") + _without_proxy_headers(rest)
                await self._tunnel(reader, writer, parts.hostname, parts.port or 80, head=request)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            await _answer(writer, 400, "Bad proxy request")
        except OSError:
            pass
        finally:
            writer.close()

    async def _tunnel(self, reader, writer, host: str, port: int, *, head: bytes | None) -> None:
        if not self.permits(host, port):
            log.info("build egress refused: %s:%s", host, port)
            await _answer(writer, 403, REFUSED)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            await _answer(writer, 502, f"Cannot reach {host}:{port} ({error.__class__.__name__})")
            return
        if head is None:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(head)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()


def _without_proxy_headers(rest: bytes) -> bytes:
    lines = rest.split(b"\r\n")
    kept = [line for line in lines if not line.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))]
    # One request per connection keeps the proxy from having to parse bodies to find the next.
    return b"\r\n".join([b"Connection: close", *kept])


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await source.read(CHUNK):
            target.write(data)
            await target.drain()
    with contextlib.suppress(OSError):
        if target.can_write_eof():
            target.write_eof()


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"{reason}\n".encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()
