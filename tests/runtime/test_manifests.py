"""The Docker container config, as a plain dict: hardened whatever the spec says."""

from __future__ import annotations

from portal.runtime.base import Mount, WorkloadSpec
from portal.runtime.manifests import container_name, docker_container_config


def spec(**fields) -> WorkloadSpec:
    return WorkloadSpec(uid="0f5c", kind="job", owner="alice", team="demo", image="sha256:abc", **fields)


def test_config_is_hardened():
    config = docker_container_config(spec(), network="wl")

    assert config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges:true"]
    assert config["privileged"] is False
    assert config["user"] == "1000:100"
    assert config["network"] == "wl"
    assert "cap_add" not in config and "network_mode" not in config


def test_limits_are_applied_and_swap_is_not_extra():
    config = docker_container_config(spec(cpus=1.5, memory_mib=2048, pids_limit=256), network="wl")

    assert config["nano_cpus"] == 1_500_000_000
    assert config["mem_limit"] == config["memswap_limit"] == "2048m"
    assert config["pids_limit"] == 256


def test_name_and_labels_come_from_the_uid():
    config = docker_container_config(spec(ports=(8888,)), network="wl")

    assert config["name"] == container_name("0f5c") == "dockyard-0f5c"
    assert config["labels"]["dockyard.uid"] == "0f5c"
    assert config["labels"]["dockyard.kind"] == "job"
    assert config["labels"]["dockyard.owner"] == "alice"
    assert config["labels"]["dockyard.team"] == "demo"
    assert config["labels"]["dockyard.ports"] == "8888"


def test_only_managed_volumes_are_mounted():
    config = docker_container_config(
        spec(mounts=(Mount("home", "/home/jovyan"), Mount("code", "/code", read_only=True))), network="wl"
    )

    assert config["volumes"] == {
        "dockyard-0f5c-home": {"bind": "/home/jovyan", "mode": "rw"},
        "dockyard-0f5c-code": {"bind": "/code", "mode": "ro"},
    }


def test_gpus_are_requested_by_exact_device_id():
    config = docker_container_config(spec(gpu_device_ids=("GPU-1234", "GPU-5678")), network="wl")

    assert config["device_requests"] == [
        {"Driver": "nvidia", "DeviceIDs": ["GPU-1234", "GPU-5678"], "Capabilities": [["gpu"]]}
    ]
    assert "device_requests" not in docker_container_config(spec(), network="wl")
