"""Pure builders of backend objects from a WorkloadSpec: plain dicts, tested without an engine."""

from __future__ import annotations

from portal.runtime.base import WorkloadSpec

# CPU time is granted per 100 ms period; 1 CPU = 1e9 nano-CPUs.
NANO_CPUS_PER_CPU = 1_000_000_000


def container_name(uid: str) -> str:
    """The one name a workload's container can have, so a retried start finds it."""
    return f"dockyard-{uid}"


def volume_name(uid: str, mount_name: str) -> str:
    return f"dockyard-{uid}-{mount_name}"


def docker_container_config(spec: WorkloadSpec, *, network: str, log_max_mb: int = 50, log_files: int = 3) -> dict:
    """Keyword arguments for the docker SDK's `containers.create`, hardened by default.

    Non-root user, every capability dropped, no privilege escalation, CPU, memory (no swap
    beyond it) and process limits, an init process to reap zombies, the workloads network
    only, Dockyard-managed volumes only (never host paths or the Docker socket), and output
    kept by the engine in at most `log_files` files of `log_max_mb` MiB (a chatty workload
    cannot fill the host's disk).
    """
    config: dict = {
        "image": spec.image,
        "name": container_name(spec.uid),
        "hostname": spec.uid[:12],
        "labels": {**spec.all_labels(), **({"dockyard.ports": ",".join(map(str, spec.ports))} if spec.ports else {})},
        "environment": dict(spec.env),
        "user": spec.user,
        "nano_cpus": int(spec.cpus * NANO_CPUS_PER_CPU),
        "mem_limit": f"{spec.memory_mib}m",
        "memswap_limit": f"{spec.memory_mib}m",
        "pids_limit": spec.pids_limit,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "privileged": False,
        "init": True,
        "network": network,
        "volumes": {
            volume_name(spec.uid, m.name): {"bind": m.target, "mode": "ro" if m.read_only else "rw"}
            for m in spec.mounts
        },
        "detach": True,
        "log_config": {"type": "json-file", "config": {"max-size": f"{log_max_mb}m", "max-file": str(log_files)}},
    }
    if spec.command:
        config["command"] = list(spec.command)
    if spec.working_dir:
        config["working_dir"] = spec.working_dir
    if spec.gpu_device_ids:
        config["device_requests"] = [
            {"Driver": "nvidia", "DeviceIDs": list(spec.gpu_device_ids), "Capabilities": [["gpu"]]}
        ]
    return config
