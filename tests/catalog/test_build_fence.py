"""What an image build can reach and use: the fence around build steps (docs/runtime.md,
"Builds"), probed only at hosts the test made (tests/netns.py)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from portal.runtime.base import RuntimeError_
from tests.netns import CONNECT, Listener, connect_from_host, far_host_fixture, fence_fixture  # noqa: F401  (fixtures)
from tests.processes import wait_for

pytestmark = pytest.mark.docker

# Fetches a URL through whatever proxy the build's environment names; prints the outcome.
FETCH = """\
import sys, urllib.request
try:
    print("FETCHED", urllib.request.urlopen(sys.argv[1], timeout=10).status)
except Exception as e:
    print("REFUSED", e)
"""
# Starts threads until the kernel refuses one; prints how many ran at once.
FORK = """\
import threading, time
started = 0
try:
    for _ in range(500):
        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()
        started += 1
except RuntimeError as e:
    print("REFUSED", e)
print("STARTED", started)
"""


def build(fence, run: str, **files: str) -> list[str]:
    """Builds FROM the base image with one RUN step; the lines of its log."""
    lines: list[str] = []
    tag = f"dockyard-test-fence:{uuid.uuid4().hex[:8]}"
    dockerfile = (
        f"FROM {settings.DOCKYARD_BASE_IMAGE}\nCOPY . /probe/\n"
        f"RUN echo {uuid.uuid4().hex} && {run}\n"  # a new line each time: never a cached step
    )
    try:
        fence.backend.build_image(
            dockerfile=dockerfile,
            tag=tag,
            files={name: text.encode() for name, text in files.items()},
            on_progress=lambda progress: lines.append(progress.line),
        )
    finally:
        fence.backend.remove_image(tag)
    return lines


def build_gateway(fence) -> str:
    fence.backend._ensure_bridge(settings.DOCKYARD_BUILD_NETWORK, settings.DOCKYARD_BUILD_BRIDGE)
    return fence.gateway(settings.DOCKYARD_BUILD_NETWORK)


def test_build_step_cannot_reach_the_host_or_the_metadata_host(fence, far_host, tmp_path):
    metadata = far_host.listen(far_host.metadata)
    on_host = Listener.start(address="0.0.0.0", port=8003, folder=tmp_path)  # noqa: S104  (every address)
    fence.apply(DOCKYARD_METADATA_ADDRESS=far_host.metadata)
    host_target, metadata_target = f"{build_gateway(fence)}:8003", f"{far_host.metadata}:{metadata.port}"
    try:
        log = "\n".join(
            build(fence, f"python3 /probe/connect.py {host_target} {metadata_target}", **{"connect.py": CONNECT})
        )

        assert f"BLOCKED {host_target} ConnectionRefusedError" in log, log
        assert f"BLOCKED {metadata_target} ConnectionRefusedError" in log, log
        assert on_host.peers() == [] and metadata.peers() == []
        # Both listeners were there to see a connection.
        assert connect_from_host("127.0.0.1", 8003) and connect_from_host(far_host.metadata, metadata.port)
        wait_for(lambda: on_host.peers() and metadata.peers(), timeout=10, what="the host's connections")
    finally:
        on_host.stop()


def test_build_reaches_through_its_proxy_only_the_allowed_hosts(fence, far_host, settings):
    index = far_host.listen(far_host.address)
    url = f"http://{far_host.address}:{index.port}/simple/"

    log = "\n".join(build(fence, f"python3 /probe/fetch.py {url}", **{"fetch.py": FETCH}))

    assert "REFUSED HTTP Error 403: Host not in DOCKYARD_BUILD_EGRESS_HOSTS" in log, log
    assert index.peers() == []

    settings.DOCKYARD_BUILD_EGRESS_HOSTS = [f"{far_host.address}:{index.port}"]
    build(fence, f"python3 /probe/fetch.py {url}", **{"fetch.py": FETCH})

    assert index.peers()  # the proxy reached the allowed host on the build's behalf


def test_build_past_its_time_limit_is_stopped_and_reported(fence, settings):
    settings.DOCKYARD_BUILD_TIMEOUT_S = 3
    marker = uuid.uuid4().hex

    with pytest.raises(RuntimeError_) as failure:
        build(fence, f"sleep 300 && echo {marker}")

    assert failure.value.user_message == "The build ran past its time limit of 3 s and was stopped."
    assert failure.value.permanent

    def step_containers():
        return [c for c in fence.backend.client.containers.list(all=True) if marker in str(c.attrs["Config"]["Cmd"])]

    wait_for(lambda: step_containers() == [], timeout=30, what="the engine to stop the build's step")


def test_build_step_over_its_memory_limit_is_killed_and_says_why(fence, settings):
    settings.DOCKYARD_BUILD_MEMORY_MIB = 64

    with pytest.raises(RuntimeError_) as failure:
        build(fence, "python3 -c 'b = bytearray(512 * 1024 * 1024); b[::4096] = b\"x\" * len(b[::4096])'")

    assert "returned a non-zero code: 137" in failure.value.user_message
    assert "at most 64 MiB of memory" in failure.value.user_message


def test_build_steps_run_under_the_process_limit(fence):
    fence.apply(DOCKYARD_BUILD_PIDS_LIMIT="40")

    log = "\n".join(build(fence, "python3 /probe/fork.py", **{"fork.py": FORK}))

    assert "REFUSED can't start new thread" in log, log
    started = int(log.split("STARTED ", 1)[1].split()[0])
    assert 0 < started < 40
