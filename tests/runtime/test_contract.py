"""The runtime contract every backend meets: the same tests on Docker (the real engine) and on
Kubernetes (the real client against the fake API server, or a real cluster when
DOCKYARD_TEST_KUBECONFIG is set).

Each workload's command really does what the test says (on Docker and on a cluster); on the
fake API server, the driver plays the kubelet's part of it.
"""

from __future__ import annotations

import io
import tarfile

import pytest
from django.test import override_settings

from portal.runtime.base import RuntimeError_, State
from portal.runtime.docker import DockerBackend
from tests.processes import wait_for
from tests.runtime.k8s_harness import (
    NO_CLUSTER,
    REAL_KUBECONFIG,
    FakeDriver,
    RealDriver,
    clean_real_cluster,
    make_backend,
    spec_for,
    start_fake,
)


class DockerDriver(RealDriver):
    """The engine runs the command: nothing to play."""

    timeout = 60.0


@pytest.fixture(
    params=[
        pytest.param("docker", marks=pytest.mark.docker),
        "kubernetes",
        pytest.param("kubernetes-real", marks=pytest.mark.skipif(not REAL_KUBECONFIG, reason=NO_CLUSTER)),
    ]
)
def runtime(request, tmp_path, settings):
    """(backend, driver, volumes of a uid) for each backend."""
    settings.DOCKYARD_K8S_WATCH = False
    settings.DOCKYARD_K8S_STOP_WAIT_S = 5
    if request.param == "docker":
        engine = request.getfixturevalue("engine")
        yield DockerBackend(), DockerDriver(), lambda uid: engine.volumes.list(filters={"label": f"dockyard.uid={uid}"})
        return
    if request.param == "kubernetes-real":
        backend = make_backend(REAL_KUBECONFIG)
        yield backend, RealDriver(), backend._claims
        clean_real_cluster(backend)
        backend.close()
        return
    fake, kubeconfig = start_fake(tmp_path)
    backend = make_backend(kubeconfig)
    yield backend, FakeDriver(fake), backend._claims
    backend.close()
    fake.close()


def state_is(backend, handle, driver, state: State):
    def look():
        observed = backend.inspect(handle)
        return observed if observed.state == state else None

    return wait_for(look, timeout=driver.timeout, what=f"the workload to be {state}")


def test_start_twice_runs_one_workload_that_list_managed_sees(runtime):
    backend, driver, _ = runtime
    spec = spec_for(["sleep", "60"])

    first = backend.start(spec)
    second = backend.start(spec)
    driver.runs(first)
    state_is(backend, first, driver, State.RUNNING)

    assert first == second
    managed = {o.uid: o for o in backend.list_managed()}
    assert managed[spec.uid].state == State.RUNNING
    assert managed[spec.uid].kind == "probe"
    assert spec.uid not in {o.uid for o in backend.list_managed(kind="job")}


def test_a_log_read_with_a_tail_gives_only_its_last_lines(runtime):
    backend, driver, _ = runtime
    printed = [f"line {n}" for n in range(1, 6)]
    handle = backend.start(spec_for(["sh", "-c", "for n in 1 2 3 4 5; do echo line $n; done; sleep 60"]))
    driver.runs(handle)
    driver.prints(handle, *printed)
    wait_for(lambda: list(backend.logs(handle)) == printed, timeout=driver.timeout, what="five lines")

    assert list(backend.logs(handle, tail=2)) == ["line 4", "line 5"]
    assert list(backend.logs(handle, tail=10)) == printed
    backend.remove(handle, keep_data=False)


def test_stop_keeps_the_log_and_remove_keeps_the_volume_unless_asked(runtime):
    backend, driver, volumes = runtime
    spec = spec_for(["sh", "-c", "echo started; sleep 60"])
    handle = backend.start(spec)
    driver.runs(handle)
    driver.prints(handle, "started")
    wait_for(lambda: list(backend.logs(handle)) == ["started"], timeout=driver.timeout, what="the first line")

    backend.stop(handle, grace_s=1)

    assert backend.inspect(handle).state == State.EXITED
    assert list(backend.logs(handle)) == ["started"]
    backend.remove(handle)
    assert backend.inspect(handle).state == State.MISSING
    assert len(volumes(spec.uid)) == 1
    backend.remove(handle, keep_data=False)
    assert volumes(spec.uid) == []
    backend.stop(handle)  # already gone is fine
    backend.remove(handle)


def test_failed_command_reports_its_exit_code(runtime):
    backend, driver, _ = runtime
    handle = backend.start(spec_for(["sh", "-c", "exit 3"]))

    driver.exits(handle, 3)
    observed = state_is(backend, handle, driver, State.EXITED)

    assert (observed.exit_code, observed.reason) == (3, "Error")
    assert observed.finished_at is not None


def test_successful_command_is_completed(runtime):
    backend, driver, _ = runtime
    handle = backend.start(spec_for(["true"]))

    driver.exits(handle, 0)
    observed = state_is(backend, handle, driver, State.EXITED)

    assert (observed.exit_code, observed.reason) == (0, "Completed")


def test_process_over_its_memory_limit_is_reported_oomkilled(runtime):
    backend, driver, _ = runtime
    handle = backend.start(spec_for(["python3", "-c", "b = bytearray(400 * 1024 * 1024)"], memory_mib=64))

    driver.ooms(handle)
    observed = state_is(backend, handle, driver, State.EXITED)

    assert observed.reason == "OOMKilled"
    assert observed.exit_code != 0


def test_logs_follow_yields_lines_as_they_are_printed(runtime):
    backend, driver, _ = runtime
    handle = backend.start(spec_for(["sh", "-c", "echo first; sleep 2; echo second"]))
    driver.runs(handle)
    driver.prints(handle, "first")
    wait_for(lambda: list(backend.logs(handle)), timeout=driver.timeout, what="the first line")
    stream = backend.logs(handle, follow=True)

    assert next(stream) == "first"
    driver.prints(handle, "second")
    assert next(stream) == "second"
    driver.exits(handle, 0)
    assert list(stream) == []


def test_archive_get_reads_files_while_running_and_after_the_end(runtime):
    backend, driver, _ = runtime
    spec = spec_for(["sh", "-c", "echo 0.25 > /data/loss.txt; sleep 60"])
    handle = backend.start(spec)
    driver.runs(handle)
    driver.writes(handle, spec.team, "data", "loss.txt", b"0.25\n")

    running = wait_for(
        lambda: _files(backend.archive_get(handle, "/data/loss.txt")), timeout=driver.timeout, what="the file"
    )
    backend.stop(handle, grace_s=1)
    ended = _files(backend.archive_get(handle, "/data"))

    assert running == {"loss.txt": b"0.25\n"}
    assert ended == {"data/loss.txt": b"0.25\n"}
    with pytest.raises(RuntimeError_) as raised:
        list(backend.archive_get(handle, "/data/nothing-here"))
    assert raised.value.reason == "not_found"


def test_an_unknown_workload_is_missing_and_stopping_it_is_fine(runtime):
    backend, _, _ = runtime
    handle = backend.handle_for("00000000-0000-4000-8000-000000000000")

    assert backend.inspect(handle).state == State.MISSING
    backend.stop(handle)
    backend.remove(handle, keep_data=False)


def test_list_managed_sees_only_this_installations_workloads(runtime, settings):
    backend, driver, _ = runtime
    handle = backend.start(spec_for(["sleep", "60"]))
    driver.runs(handle)

    with override_settings(
        DOCKYARD_WORKLOAD_LABELS={**settings.DOCKYARD_WORKLOAD_LABELS, "dockyard.installation": "x"}
    ):
        elsewhere = {o.uid for o in backend.list_managed()}

    assert handle.uid in {o.uid for o in backend.list_managed()}
    assert handle.uid not in elsewhere


def test_team_sync_is_safe_to_call_on_every_backend(runtime):
    backend, _, _ = runtime

    backend.team_sync("demo", {"cpus": 4, "memory_gib": 8})
    backend.team_sync("demo", {"cpus": 4, "memory_gib": 8})


def _files(chunks) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}
