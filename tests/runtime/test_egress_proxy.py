"""The builds' egress proxy on its own: what it lets through, and what it refuses unopened."""

from __future__ import annotations

import socket

import pytest

from portal.runtime.egress_proxy import REFUSED, EgressProxy, allowed_from_urls, egress_proxy_ensure
from tests.netns import Listener
from tests.processes import free_port, run_async, wait_for


def proxy_with(*allowed: str) -> EgressProxy:
    proxy = EgressProxy(host="127.0.0.1", port=0)
    proxy.allowed = frozenset(allowed)
    return proxy


def test_permits_named_hosts_their_listed_ports_and_wildcard_subdomains():
    proxy = proxy_with("pypi.org", "*.debian.org", "mirror.internal:8443")

    assert proxy.permits("pypi.org", 443) and proxy.permits("PyPI.org.", 80)
    assert proxy.permits("deb.debian.org", 80) and not proxy.permits("debian.org.evil.example", 80)
    assert proxy.permits("mirror.internal", 8443) and not proxy.permits("mirror.internal", 443)
    assert not proxy.permits("pypi.org", 22)
    assert not proxy.permits("169.254.169.254", 80)


def test_the_pip_index_url_names_its_host_and_port():
    assert allowed_from_urls(["https://pip.example.org/simple", "http://10.0.0.5:3141/root/pypi", ""]) == {
        "pip.example.org:443",
        "10.0.0.5:3141",
    }


@pytest.fixture
def proxy():
    proxy = egress_proxy_ensure(host="127.0.0.1", port=free_port(), allowed=())
    yield proxy
    proxy.close()


def tunnel(proxy: EgressProxy, target: str) -> str:
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as sock:
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return sock.recv(4096).decode().split("\r\n", 1)[0]


def test_a_tunnel_to_an_unlisted_host_is_refused_and_never_opened(proxy, tmp_path):
    listener = Listener.start(address="127.0.0.1", port=free_port(), folder=tmp_path)
    target = f"127.0.0.1:{listener.port}"
    try:
        assert tunnel(proxy, target) == f"HTTP/1.1 403 {REFUSED}"
        assert listener.peers() == []

        egress_proxy_ensure(host=proxy.host, port=proxy.port, allowed=[target])

        assert tunnel(proxy, target) == "HTTP/1.1 200 Connection established"
        wait_for(lambda: listener.peers(), timeout=10, what="the proxy's connection to be recorded")
    finally:
        listener.stop()


def test_the_proxy_starts_from_a_thread_already_running_an_event_loop():
    # A worker pool or a test driving a browser may call a build from inside a running loop.
    async def start_inside_a_loop() -> EgressProxy:
        return egress_proxy_ensure(host="127.0.0.1", port=free_port(), allowed=())

    proxy = run_async(start_inside_a_loop)
    try:
        assert tunnel(proxy, "example.org:443") == f"HTTP/1.1 403 {REFUSED}"
    finally:
        proxy.close()


def test_a_port_already_taken_is_the_callers_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            egress_proxy_ensure(host="127.0.0.1", port=taken.getsockname()[1], allowed=())
