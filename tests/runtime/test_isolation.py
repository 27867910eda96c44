"""From inside a workload: no way to this host or other workloads (the metadata address and
private ranges: tests/runtime/test_fence.py, against hosts the test makes)."""

from __future__ import annotations

import socket
import threading

import pytest

from portal.runtime.base import State
from tests.processes import wait_for

pytestmark = pytest.mark.docker

CONNECT = (
    "import socket,sys\n"
    "s=socket.socket(); s.settimeout(3)\n"
    "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); print('CONNECTED')\n"
    "except OSError as e: print('BLOCKED', type(e).__name__)\n"
)


def probe(backend, make_spec, host: str, port: int) -> str:
    handle = backend.start(make_spec(["python3", "-c", CONNECT, host, str(port)], mounts=()))
    wait_for(lambda: backend.inspect(handle).state == State.EXITED, timeout=30, what="the probe to finish")
    return "\n".join(backend.logs(handle))


@pytest.fixture
def host_server():
    """A TCP server on all of this host's addresses, as a careless database might be."""
    server = socket.create_server(("0.0.0.0", 0))  # noqa: S104  (the point: reachable on every interface)
    accepted = []

    def serve():
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], accepted
    server.close()


def gateway(backend) -> str:
    network = backend.client.networks.get(backend.network)
    return network.attrs["IPAM"]["Config"][0]["Gateway"]


def test_workload_cannot_reach_services_on_the_host(backend, make_spec, host_server):
    backend._ensure_network()
    port, accepted = host_server

    output = probe(backend, make_spec, gateway(backend), port)

    assert output.startswith("BLOCKED"), output
    assert accepted == []


def test_workloads_cannot_reach_each_other(backend, make_spec):
    server = backend.start(make_spec(["python3", "-m", "http.server", "8888"], mounts=(), ports=(8888,)))
    address = wait_for(
        lambda: backend.inspect(server).endpoints.get(8888), timeout=30, what="the server's address"
    ).host

    assert probe(backend, make_spec, address, 8888).startswith("BLOCKED")
