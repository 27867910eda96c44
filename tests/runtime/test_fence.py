"""What a Docker workload can reach, probed only at hosts the test made (tests/netns.py)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from portal.runtime.base import State, WorkloadSpec
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.netns import CONNECT, FIREWALL, Listener, connect_from_host, far_host_fixture, fence_fixture, run  # noqa: F401  (fixtures)
from tests.processes import wait_for

pytestmark = pytest.mark.docker


def probe(fence, *targets: str) -> str:
    """What a workload printed trying to connect to each `address:port`."""
    spec = WorkloadSpec(
        uid=str(uuid.uuid4()), kind="probe", owner="alice", team="demo", image=settings.DOCKYARD_BASE_IMAGE,
        command=("python3", "-c", CONNECT, *targets), labels={RUN_LABEL: TEST_RUN},
    )  # fmt: skip
    handle = fence.backend.start(spec)
    wait_for(lambda: fence.backend.inspect(handle).state == State.EXITED, timeout=60, what="the probe to finish")
    return "\n".join(fence.backend.logs(handle))


def test_workload_cannot_reach_a_private_address_the_host_can(fence, far_host):
    listener = far_host.listen(far_host.address)

    output = probe(fence, f"{far_host.address}:{listener.port}")

    assert f"BLOCKED {far_host.address}:{listener.port} ConnectionRefusedError" in output, output
    assert listener.peers() == []
    assert connect_from_host(far_host.address, listener.port)  # the listener was there to see it
    wait_for(lambda: listener.peers(), timeout=10, what="the host's connection to be recorded")


def test_workload_cannot_reach_the_configured_metadata_address(fence, far_host):
    # 198.18.N.2 is in no private range: only the metadata rule can stop it.
    listener = far_host.listen(far_host.metadata)
    fence.apply(DOCKYARD_METADATA_ADDRESS=far_host.metadata)

    output = probe(fence, f"{far_host.metadata}:{listener.port}")

    assert f"BLOCKED {far_host.metadata}:{listener.port} ConnectionRefusedError" in output, output
    assert listener.peers() == []
    assert connect_from_host(far_host.metadata, listener.port)


def test_without_the_metadata_rule_the_stand_in_is_reachable(fence, far_host):
    # The control for the test above: the namespace is routable from workloads.
    listener = far_host.listen(far_host.metadata)

    output = probe(fence, f"{far_host.metadata}:{listener.port}")

    assert f"CONNECTED {far_host.metadata}:{listener.port}" in output, output
    wait_for(lambda: listener.peers(), timeout=10, what="the workload's connection to be recorded")


def test_workload_reaches_a_private_address_the_allow_list_names(fence, far_host):
    allowed = far_host.listen(far_host.address, 8000)
    other = Listener.start(address=far_host.address, port=8001, folder=far_host.folder, netns=far_host.netns)
    far_host.listeners.append(other)
    fence.apply(DOCKYARD_WORKLOAD_EGRESS_ALLOW=f"{far_host.address}/32")

    output = probe(fence, f"{far_host.address}:8000")

    assert f"CONNECTED {far_host.address}:8000" in output, output
    wait_for(lambda: allowed.peers(), timeout=10, what="the workload's connection to be recorded")
    assert other.peers() == []


def test_workload_cannot_reach_the_hosts_own_addresses(fence, far_host, tmp_path):
    # The host's end of the veth is one of its own addresses, and private; so is the bridge's gateway.
    fence.backend._ensure_network()
    host_address = far_host.address.rsplit(".", 1)[0] + ".1"
    listener = Listener.start(address="0.0.0.0", port=8002, folder=tmp_path)  # noqa: S104  (every address)
    try:
        output = probe(fence, f"{host_address}:8002", f"{fence.gateway(settings.DOCKYARD_DOCKER_NETWORK)}:8002")

        assert output.count("ConnectionRefusedError") == 2, output
        assert listener.peers() == []
        assert connect_from_host(host_address, 8002)
    finally:
        listener.stop()


def test_firewall_rules_are_idempotent_and_removable(fence):
    def rules() -> list[str]:
        return [line for line in run("iptables", "-S").stdout.splitlines() if fence.tag in line]

    first = rules()
    fence.apply()
    assert rules() == first
    assert any("-j DY-" in line for line in first)

    run("bash", str(FIREWALL), "--remove", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **fence.env})
    assert rules() == []
    fence.apply()  # for the fixture's own clean-up to find
