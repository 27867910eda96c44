"""Time from `backend.start` to the workload's process running, against a bare `docker run`.

Both start the same image and command, one after the other, ten times each, in this run.
The floor is `docker run -d` of the image on the default bridge with no limits; Dockyard's
start adds its checks, the hardened config, labels and its own network. Two rows are for
information: a bare `docker run` on Dockyard's workloads network (what isolation alone costs)
and a start that also makes a new persistent volume and hands it to the workload's user.
Prints a table with the medians and their ratio to the floor (goal: at most 1.10).

    .venv/bin/python bench/runtime_start.py [--runs 10] [--image dockyard/base:bookworm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django

django.setup()

import docker  # noqa: E402

from portal.runtime.base import Mount, State, WorkloadSpec  # noqa: E402
from portal.runtime.docker import DockerBackend  # noqa: E402

LABEL = {"dockyard.bench": "runtime_start"}
# The process announces itself by writing a line; "running" means that line is in its log.
COMMAND = ["sh", "-c", "echo up; sleep 30"]


def wait_running(read_log, deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if b"up" in read_log():
            return
        time.sleep(0.005)
    raise SystemExit("a container did not start within 30 s")


def bare_run(client, image: str, **options) -> float:
    started = time.perf_counter()
    container = client.containers.run(image, COMMAND, detach=True, labels=LABEL, **options)
    wait_running(lambda: container.logs())
    elapsed = time.perf_counter() - started
    container.remove(force=True)
    return elapsed


def dockyard_start(backend: DockerBackend, image: str, mounts: tuple = ()) -> float:
    spec = WorkloadSpec(
        uid=str(uuid.uuid4()),
        kind="probe",
        owner="bench",
        team="bench",
        image=image,
        command=tuple(COMMAND),
        mounts=mounts,
        labels=LABEL,
    )
    started = time.perf_counter()
    handle = backend.start(spec)
    container = backend.client.containers.get(handle.name)
    wait_running(lambda: container.logs())
    elapsed = time.perf_counter() - started
    assert backend.inspect(handle).state == State.RUNNING
    backend.remove(handle, keep_data=False)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=os.environ.get("DOCKYARD_BASE_IMAGE", "dockyard/base:bookworm"))
    args = parser.parse_args()
    client = docker.from_env()
    backend = DockerBackend()
    bare_run(client, args.image)  # warm-up: page cache and the engine's image metadata
    dockyard_start(backend, args.image)
    volume = (Mount(name="data", target="/data"),)
    network_row = f"docker run --network {backend.network}"
    rows = {"docker run (floor)": [], network_row: [], "DockerBackend.start": [], "  ... with a new volume": []}
    for _ in range(args.runs):  # interleaved so drift in the machine's load hits all alike
        rows["docker run (floor)"].append(bare_run(client, args.image))
        rows[network_row].append(bare_run(client, args.image, network=backend.network))
        rows["DockerBackend.start"].append(dockyard_start(backend, args.image))
        rows["  ... with a new volume"].append(dockyard_start(backend, args.image, volume))
    floor = statistics.median(rows["docker run (floor)"])
    print(f"{'':38}{'median s':>10}{'min s':>9}{'max s':>9}{'ratio':>8}")
    for name, times in rows.items():
        median = statistics.median(times)
        print(f"{name:38}{median:>10.3f}{min(times):>9.3f}{max(times):>9.3f}{median / floor:>8.2f}")
    print(f"goal: DockerBackend.start <= 1.10 x floor  [{args.runs} runs each, image {args.image}]")


if __name__ == "__main__":
    main()
