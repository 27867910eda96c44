"""Hosts and fences that tests of what a container can reach make for themselves.

A fence test never probes a real address: it makes a network namespace joined to this host by
a veth pair (a "far host" at a private address, plus a stand-in for the metadata address),
starts listeners there that write down every connection, and applies the host firewall
(scripts/workload-firewall.sh) to bridges of its own. A block is proven by the prober failing
*and* the listener seeing nothing; the host reaching the same listener proves that the
listener could have seen something. A broken fence reaches the test's namespace, nothing
beyond this machine.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from portal.runtime.docker import DockerBackend
from portal.runtime.egress_proxy import _proxies
from tests.processes import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
FIREWALL = ROOT / "scripts" / "workload-firewall.sh"

# Accepts connections on ADDRESS:PORT and appends each peer's address to FILE; FILE.ready
# appears once it listens.
LISTENER = """\
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
open(sys.argv[3] + ".ready", "w").close()
while True:
    conn, peer = server.accept()
    with open(sys.argv[3], "a") as log:
        log.write(peer[0] + "\\n")
    conn.close()
"""
# Tries a TCP connection to each ADDRESS:PORT argument; prints one verdict line for each.
CONNECT = """\
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect((host, int(port))); print("CONNECTED", target)
    except OSError as e:
        print("BLOCKED", target, type(e).__name__)
"""


def run(*command: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60, env=env)


def connect_from_host(address: str, port: int) -> bool:
    result = run(sys.executable, "-c", CONNECT, f"{address}:{port}")
    return result.stdout.startswith("CONNECTED")


@dataclass
class Listener:
    """A TCP listener (in a namespace, or on this host) that records who connected."""

    address: str
    port: int
    log: Path
    process: subprocess.Popen

    @classmethod
    def start(cls, *, address: str, port: int, folder: Path, netns: str = "") -> Listener:
        log = folder / f"listener-{uuid.uuid4().hex[:8]}"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        process = subprocess.Popen([*prefix, sys.executable, "-c", LISTENER, address, str(port), str(log)])
        listener = cls(address=address, port=port, log=log, process=process)
        wait_for(lambda: Path(f"{log}.ready").exists() or process.poll() is not None, timeout=15, what="the listener")
        assert process.poll() is None, f"the listener on {address}:{port} did not start"
        return listener

    def peers(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class FarHost:
    """A network namespace joined to this host by a veth pair: `address` is private
    (10.213.N.2/30), `metadata` (198.18.N.2, a benchmarking range nothing else routes here)
    stands in for the cloud metadata address."""

    netns: str
    address: str
    metadata: str
    host_side: str
    folder: Path
    listeners: list[Listener] = field(default_factory=list)

    def listen(self, address: str, port: int | None = None) -> Listener:
        listener = Listener.start(
            address=address, port=port or 8000 + len(self.listeners), folder=self.folder, netns=self.netns
        )
        self.listeners.append(listener)
        return listener


def _free_subnet() -> int:
    used = run("ip", "-o", "addr").stdout + run("ip", "route").stdout
    for n in random.sample(range(1, 255), 254):
        if f"10.213.{n}." not in used and f"198.18.{n}." not in used:
            return n
    raise AssertionError("no free 10.213.N.0/30 for a test namespace")


@pytest.fixture(name="far_host")
def far_host_fixture(tmp_path):
    """A namespace with listeners the test starts; everything it made goes at the end."""
    if os.geteuid() != 0:
        pytest.skip("fence tests make network namespaces and firewall rules: they need root")
    tag = uuid.uuid4().hex[:6]
    netns, host_side, far_side = f"dyt-{tag}", f"dyt{tag}h", f"dyt{tag}n"
    n = _free_subnet()
    host = FarHost(netns=netns, address=f"10.213.{n}.2", metadata=f"198.18.{n}.2", host_side=host_side, folder=tmp_path)
    inside = ("ip", "netns", "exec", netns, "ip")
    run("ip", "netns", "add", netns)
    try:
        run("ip", "link", "add", host_side, "type", "veth", "peer", "name", far_side, "netns", netns)
        run("ip", "addr", "add", f"10.213.{n}.1/30", "dev", host_side)
        run("ip", "link", "set", host_side, "up")
        run(*inside, "addr", "add", f"{host.address}/30", "dev", far_side)
        run(*inside, "addr", "add", f"{host.metadata}/32", "dev", far_side)
        run(*inside, "link", "set", far_side, "up")
        run(*inside, "link", "set", "lo", "up")
        run(*inside, "route", "add", "default", "via", f"10.213.{n}.1")
        run("ip", "route", "add", f"{host.metadata}/32", "via", host.address)
        yield host
    finally:
        for listener in host.listeners:
            listener.stop()
        run("ip", "link", "del", host_side, check=False)  # takes the peer and the route along
        run("ip", "netns", "del", netns, check=False)


@dataclass
class Fence:
    """The host firewall applied to bridges of this test's own (so that no other run's
    `scripts/workload-firewall.sh` rewrites them midway), with the settings that point the
    Docker backend at them."""

    tag: str
    env: dict[str, str]
    backend: DockerBackend

    def apply(self, **overrides: str) -> None:
        self.env.update(overrides)
        result = run("bash", str(FIREWALL), check=False, env={**os.environ, **self.env})
        assert result.returncode == 0, result.stderr

    def gateway(self, network: str) -> str:
        return self.backend.client.networks.get(network).attrs["IPAM"]["Config"][0]["Gateway"]


@pytest.fixture(name="fence")
def fence_fixture(settings, engine):
    if os.geteuid() != 0:
        pytest.skip("fence tests make firewall rules: they need root")
    tag = uuid.uuid4().hex[:6]
    settings.DOCKYARD_DOCKER_NETWORK = f"dockyard-test-{tag}-w"
    settings.DOCKYARD_DOCKER_BRIDGE = f"dyt{tag}w"
    settings.DOCKYARD_BUILD_NETWORK = f"dockyard-test-{tag}-b"
    settings.DOCKYARD_BUILD_BRIDGE = f"dyt{tag}b"
    settings.DOCKYARD_BUILD_PROXY_PORT = free_port()
    settings.DOCKYARD_BUILD_CGROUP_PARENT = f"dockyard-test-{tag}"
    env = {
        "DOCKYARD_DOCKER_BRIDGE": settings.DOCKYARD_DOCKER_BRIDGE,
        "DOCKYARD_BUILD_BRIDGE": settings.DOCKYARD_BUILD_BRIDGE,
        "DOCKYARD_BUILD_PROXY_PORT": str(settings.DOCKYARD_BUILD_PROXY_PORT),
        "DOCKYARD_BUILD_CGROUP_PARENT": settings.DOCKYARD_BUILD_CGROUP_PARENT,
        "DOCKYARD_METADATA_ADDRESS": "169.254.169.254",
        "DOCKYARD_WORKLOAD_EGRESS_ALLOW": "",
    }
    fence = Fence(tag=tag, env=env, backend=DockerBackend())
    fence.apply()
    try:
        yield fence
    finally:
        _take_down(fence, settings)


def _take_down(fence: Fence, settings) -> None:
    client = fence.backend.client
    for name in (settings.DOCKYARD_DOCKER_NETWORK, settings.DOCKYARD_BUILD_NETWORK):
        for network in client.networks.list(names=[name]):
            network.reload()
            for container_id in network.attrs.get("Containers") or {}:
                client.containers.get(container_id).remove(force=True)
            network.remove()
    for (_, port), proxy in list(_proxies.items()):
        if port == settings.DOCKYARD_BUILD_PROXY_PORT:
            proxy.close()
    run("bash", str(FIREWALL), "--remove", env={**os.environ, **fence.env})
