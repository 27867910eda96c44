"""The Docker backend against a real engine."""

from __future__ import annotations

import dataclasses
import re

import pytest
from django.conf import settings
from django.test import override_settings

from portal.runtime.base import Handle, RuntimeError_, State
from portal.runtime.docker import DockerBackend
from tests.processes import wait_for

pytestmark = pytest.mark.docker

REPORT = (
    "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; "
    "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null; "
    "echo pids=$(cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max 2>/dev/null); "
    "echo cpu=$(cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null); echo done"
)


def run_to_end(backend, spec) -> tuple[str, object]:
    handle = backend.start(spec)
    observed = wait_for(
        lambda: (o := backend.inspect(handle)).state == State.EXITED and o, timeout=60, what="the workload to exit"
    )
    return "\n".join(backend.logs(handle)), observed


def test_workload_runs_hardened_and_limited(backend, make_spec):
    spec = make_spec(["sh", "-c", REPORT], cpus=0.5, memory_mib=96, pids_limit=64)

    output, observed = run_to_end(backend, spec)

    assert observed.exit_code == 0, output
    lines = output.splitlines()
    assert lines[0] == "1000"
    assert re.search(r"^CapEff:\s+0{16}$", output, re.M)
    assert re.search(r"^NoNewPrivs:\s+1$", output, re.M)
    assert str(96 * 1024 * 1024) in lines
    assert "pids=64" in lines
    assert "cpu=50000 100000" in lines or "cpu=50000" in lines


def test_start_twice_makes_one_container_that_list_managed_sees(backend, make_spec, engine):
    spec = make_spec(["sleep", "60"])

    first = backend.start(spec)
    second = backend.start(spec)

    assert first == second
    assert len(engine.containers.list(all=True, filters={"label": f"dockyard.uid={spec.uid}"})) == 1
    managed = {o.uid: o for o in backend.list_managed()}
    assert managed[spec.uid].state == State.RUNNING
    assert managed[spec.uid].kind == "probe"


def test_stop_then_remove_keeps_the_volume_unless_asked(backend, make_spec, engine):
    spec = make_spec(["sh", "-c", "echo kept > /data/file && sleep 60"])
    handle = backend.start(spec)
    wait_for(lambda: "kept" in _volume_file(engine, spec), timeout=30, what="the file in the volume")

    backend.stop(handle, grace_s=1)
    assert backend.inspect(handle).state == State.EXITED
    backend.remove(handle)
    assert backend.inspect(handle).state == State.MISSING
    assert "kept" in _volume_file(engine, spec)

    backend.remove(handle, keep_data=False)
    assert engine.volumes.list(filters={"label": f"dockyard.uid={spec.uid}"}) == []
    backend.stop(handle)  # already gone is fine
    backend.remove(handle)


def _volume_file(engine, spec) -> str:
    volume = f"dockyard-{spec.uid}-data"
    output = engine.containers.run(
        spec.image, ["cat", "/data/file"], volumes={volume: {"bind": "/data", "mode": "ro"}},
        remove=True, network_mode="none", labels={"dockyard.test-run": spec.labels["dockyard.test-run"]},
    )  # fmt: skip
    return output.decode()


def test_process_over_its_memory_limit_is_reported_oomkilled(backend, make_spec):
    spec = make_spec(["python3", "-c", "b = bytearray(400 * 1024 * 1024)"], memory_mib=64)

    _, observed = run_to_end(backend, spec)

    assert observed.reason == "OOMKilled"
    assert observed.exit_code != 0


def test_failed_command_reports_its_exit_code(backend, make_spec):
    _, observed = run_to_end(backend, make_spec(["sh", "-c", "exit 3"]))

    assert (observed.exit_code, observed.reason) == (3, "Error")


def test_logs_follow_yields_lines_as_they_are_printed(backend, make_spec):
    spec = make_spec(["sh", "-c", "echo first; while [ ! -e /data/go ]; do sleep 0.1; done; echo second"])
    handle = backend.start(spec)
    stream = backend.logs(handle, follow=True)

    assert next(stream) == "first"
    assert backend.inspect(handle).state == State.RUNNING
    backend.client.containers.get(handle.name).exec_run(["touch", "/data/go"])
    assert next(stream) == "second"
    assert list(stream) == []


def test_start_with_a_missing_image_fails_clearly_and_leaves_nothing(backend, make_spec, engine):
    spec = make_spec(["true"])
    spec = type(spec)(**{**spec.__dict__, "image": "sha256:" + "0" * 64})

    with pytest.raises(RuntimeError_) as raised:
        backend.start(spec)

    assert raised.value.permanent
    assert engine.containers.list(all=True, filters={"label": f"dockyard.uid={spec.uid}"}) == []
    assert engine.volumes.list(filters={"label": f"dockyard.uid={spec.uid}"}) == []


def test_unreachable_engine_raises_a_readable_error():
    backend = DockerBackend(base_url="unix:///run/nothing-here.sock")

    with pytest.raises(RuntimeError_) as raised:
        backend.ping()

    assert raised.value.reason == "engine_unreachable"
    assert "Docker engine does not answer" in str(raised.value)
    with pytest.raises(RuntimeError_):
        backend.inspect(Handle(uid="x", name="dockyard-x"))


@pytest.mark.django_db
def test_readyz_names_the_runtime_when_the_engine_is_unreachable(client):
    with override_settings(DOCKER_HOST="unix:///run/nothing-here.sock"):
        response = client.get("/readyz")

    assert response.status_code == 503
    assert "Docker engine does not answer" in response.json()["runtime"]


def test_capacity_reports_this_host(backend):
    [node] = backend.capacity()

    assert node.backend == "docker"
    assert node.cpus >= 1 and node.memory_mib > 0
    assert node.gpus == ()  # no GPUs (and no NVML) on this machine


def test_a_new_volume_on_a_folder_the_image_gives_the_user_is_the_users(backend, make_spec, engine, image_slug):
    from portal.catalog import dockerfile
    from portal.runtime.base import LABEL_USER_DIRS, Mount

    context = dockerfile.render(dockerfile.BuildSpec(base_image=settings.DOCKYARD_BASE_IMAGE))
    image = backend.build_image(dockerfile=context.dockerfile, files=context.files, tag=f"dockyard/{image_slug}:1")
    assert engine.images.get(image.digest).labels[LABEL_USER_DIRS] == "1000:100 /output /home/jovyan"
    report = "touch /output/ok /home/jovyan/ok /scratch/ok && stat -c '%n %u:%g' /output /home/jovyan /scratch"
    mounts = (Mount("output", "/output"), Mount("home", "/home/jovyan"), Mount("scratch", "/scratch"))

    spec = dataclasses.replace(make_spec(["sh", "-c", report], mounts=mounts), image=image.digest)
    output, observed = run_to_end(backend, spec)

    assert observed.exit_code == 0, output
    # /output and the home come from the image's folders; /scratch (not in the image) is handed over
    assert output.splitlines() == ["/output 1000:100", "/home/jovyan 1000:100", "/scratch 1000:100"]
