"""Training jobs end to end, against floors measured in the same run (not a test).

    .venv/bin/python bench/jobs.py [--jobs 100] [--concurrency 10] [--watch-s 0.2] [--runs 5]
        [--log-seconds 5] [--worker-pool prefork] [--worker-concurrency 2] [--count-engine-calls] [--keep]

Needs what `make test` sets up once: a Docker engine, the base image dockyard/base:bookworm,
PostgreSQL (trust auth) and Redis. It makes its own database (DOCKYARD_BENCH_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/dockyard_bench: dropped, created and migrated), uses its own
Redis db (DOCKYARD_BENCH_REDIS_URL, default redis://127.0.0.1:6379/10, flushed), builds a
python-minimal-like image from the base (cached by the engine), and runs uvicorn and a Celery
worker on queues default,runtime, started as the Procfile starts it (prefork pool, concurrency 2)
unless --worker-pool/--worker-concurrency say otherwise, with DOCKYARD_JOB_WATCH_S = --watch-s.
A team with max_jobs = --concurrency (and CPUs and memory for that many) submits the jobs.

(a) --jobs trivial jobs (`echo hi`) submitted at once through POST /api/v1/jobs/: seconds from the
    first POST until the last job is succeeded (its state_changed_at).
(b) floor: as many containers of the same image digest, with the hardened config Dockyard builds
    (docker_container_config: same user, limits, capabilities, network, an output volume each),
    run with the docker SDK by --concurrency threads: create, start, wait, logs, remove. It runs
    just before (a) and just after, and the mean is the floor, so drift in the machine's load
    hits both sides alike.
(c) the ratio a / b (goal <= 1.3), and the overhead each job adds to its slot,
    (a - b) / jobs * concurrency: each of the C slots runs jobs / C jobs one after another.
(d) log streaming: a job prints time.time() every 200 ms for --log-seconds; GET .../logs?follow=1
    is read with httpx; per line, the time it was read minus the time it was printed (same host
    clock; median and p95 of the lines printed after the stream delivered its first line),
    against `logs(follow=True)` of the same program in a bare container.
(e) submit to running of one job at a time (the API's started_at), median of --runs, against a
    bare `docker run -d` of the same image and command.

Then where the time goes: each job's phases from its events, the worker's task times from its
log, the CPU each part of the machine used, the audit and event rows written per job, what each
engine call a job makes costs on its own, and with --count-engine-calls (a counting proxy in front
of the Docker socket; it slows every call a little, so compare its timings only with each other)
the engine calls per job. Everything made on the engine carries the label
dockyard.bench=jobs-<run id> and joins the network dockyard-bench-jobs (not the workloads network
other installations use); they, the media folder and the database are removed at the end
(--keep keeps the database for a look).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
from benchkit import admin_sql, database_url, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get("DOCKYARD_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/dockyard_bench")
REDIS_URL = os.environ.get("DOCKYARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
RUN_ID = uuid.uuid4().hex[:8]
LABEL = ("dockyard.bench", f"jobs-{RUN_ID}")
# One network for every run (removed at the end): an engine that fails to remove it (it can
# miscount endpoints under load) then leaves one behind, not one per run.
NETWORK = "dockyard-bench-jobs"
BRIDGE = "dyb-bench-jobs"  # Linux interface names stop at 15 characters
IMAGE_SLUG = "bench-python-minimal"  # the same slug every run, so the engine's build cache serves it
ECHO = ["echo", "hi"]
TICKER = "import time\nfor _ in range({n}):\n    print(repr(time.time()), flush=True)\n    time.sleep(0.2)\n"
FINAL = ("succeeded", "failed", "cancelled", "timed_out")
METRICS = "/output/metrics.jsonl"
DEADLINE_S = 900


DB_NAME = urlparse(DATABASE_URL).path.lstrip("/") or "dockyard_bench"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- Counting engine calls ----------------------------------------------------------------------


class EngineCallCounter:
    """A TCP front for the local Docker socket that counts API calls by method and path shape
    (ids replaced by {id}). Requests are parsed only to find where each one ends."""

    def __init__(self, socket_path: str = "/var/run/docker.sock"):
        self.socket_path = socket_path
        self.counts: Counter[str] = Counter()
        self.port = free_port()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> str:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        return f"tcp://127.0.0.1:{self.port}"

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)

    def stop(self) -> None:
        """Closes the server and every open connection (so each pump ends by itself), then the loop."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=5)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine_reader, engine_writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
        self._writers.update((writer, engine_writer))
        responses = asyncio.ensure_future(self._pipe(engine_reader, writer))
        try:
            await self._requests(reader, engine_writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            engine_writer.close()
            await responses
            self._writers.difference_update((writer, engine_writer))

    async def _requests(self, reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            out.write(head)
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            with self._lock:
                self.counts[f"{method} {_path_shape(target)}"] += 1
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            if "upgrade" in headers.get("connection", "").lower():
                await self._pipe(reader, out)
                return
            if "content-length" in headers:
                out.write(await reader.readexactly(int(headers["content-length"])))
            elif "chunked" in headers.get("transfer-encoding", ""):
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";")[0], 16)
                    out.write(size_line + await reader.readexactly(size + 2))
                    if size == 0:
                        break
            await out.drain()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def _path_shape(target: str) -> str:
    path = re.sub(r"^/v[0-9.]+", "", target.split("?")[0])
    path = re.sub(r"^/(containers|volumes|networks)/(?!json$|create$|prune$)[^/]+", r"/\1/{id}", path)
    return re.sub(r"^/images/.+/json$", "/images/{id}/json", path)


# --- Django, the world, the portal's processes -------------------------------------------------


def portal_env(args, var_dir: Path, docker_host: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DATABASE_URL": database_url(DB_NAME),
        "REDIS_URL": REDIS_URL,
        "DOCKYARD_VAR_DIR": str(var_dir),
        "DOCKYARD_MEDIA_ROOT": str(var_dir / "media"),
        "DOCKYARD_RUNTIME": "docker",
        "DOCKYARD_JOB_WATCH_S": str(args.watch_s),
        "DOCKYARD_WORKLOAD_LABELS": f"{LABEL[0]}={LABEL[1]}",
        "DOCKYARD_DOCKER_NETWORK": NETWORK,
        "DOCKYARD_DOCKER_BRIDGE": BRIDGE,
        "DOCKER_HOST": docker_host,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update({k: v for k, v in env.items() if k != "DOCKER_HOST"})  # the bench itself talks to the engine
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class World:
    token: str
    image_slug: str
    digest: str
    profile: str = "bench-job"
    cpus: float = 1.0
    memory_gib: float = 1.0


def make_world(concurrency: int) -> World:
    """A team whose quota runs `concurrency` jobs at once, its admin with a token, a profile,
    and the image (built from the local base as the demo's python-minimal is)."""
    from django.conf import settings

    from portal.accounts.models import Membership, Role, Team, User
    from portal.accounts.services import token_create
    from portal.audit.services import Actor
    from portal.catalog import services as catalog_services
    from portal.catalog.models import SourceType
    from portal.catalog.services import SourceSpec
    from portal.quotas.models import ResourceProfile, TeamQuota

    world_cpus, world_memory = 1, 1
    team = Team.objects.create(slug="bench", name="Bench")
    TeamQuota.objects.create(
        team=team, max_jobs=concurrency, cpus=world_cpus * concurrency, memory_gib=world_memory * concurrency
    )
    owner = User.objects.create_user(username="bench-owner")
    Membership.objects.create(user=owner, team=team, role=Role.TEAM_ADMIN)
    _, raw = token_create(user=owner, name="bench", expires_at=None, actor=Actor.system())
    ResourceProfile.objects.create(slug="bench-job", name="Bench job", cpus=world_cpus, memory_gib=world_memory)
    source = SourceSpec(source_type=SourceType.BUILD, base_image=settings.DOCKYARD_BASE_IMAGE)
    image = catalog_services.image_create(
        slug=IMAGE_SLUG, source=source, details={"name": "Python (bench)"}, by=None, actor=Actor.system()
    )
    build = catalog_services.image_build(image=image, by=None, actor=Actor.system())
    catalog_services.build_run(build_id=build.pk)
    image.refresh_from_db()
    if image.current_revision is None:
        build.refresh_from_db()
        raise SystemExit(f"the image did not build:\n{build.log[-3000:]}")
    return World(token=raw, image_slug=IMAGE_SLUG, digest=image.current_revision.digest)


@contextmanager
def running(args: list[str], env: dict[str, str], log: Path):
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=5)


def start_portal(stack: ExitStack, args, env: dict[str, str], port: int, var_dir: Path) -> dict[str, int]:
    """uvicorn as `make run` serves it, and a worker as the Procfile starts it (queues default and
    runtime: no builds here). Returns their process (and process group) ids."""
    from portal.celery import app as celery_app

    web = [
        str(VENV_BIN / "uvicorn"), "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--proxy-headers", "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip
    worker = [
        str(VENV_BIN / "celery"), "-A", "portal", "worker", "-Q", "default,runtime", "--pool", args.worker_pool,
        "--concurrency", str(args.worker_concurrency), "--loglevel", "INFO", "-n", f"bench-jobs-{RUN_ID}@%h",
    ]  # fmt: skip
    pids = {
        "web": stack.enter_context(running(web, env, var_dir / "web.log")).pid,
        "worker": stack.enter_context(running(worker, env, var_dir / "worker.log")).pid,
    }
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, timeout=60, what="uvicorn")
    wait_for(lambda: celery_app.control.ping(timeout=0.5), timeout=60, what="the worker")
    return pids


@dataclass
class Portal:
    port: int
    world: World
    worker_log: Path
    pids: dict[str, int]
    clients: list = field(default_factory=list)

    def api(self, timeout: float = 60) -> httpx.Client:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"authorization": f"Bearer {self.world.token}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=32),
        )
        self.clients.append(client)
        return client

    def submit(self, api: httpx.Client, name: str, command) -> dict:
        spec = {"name": name, "team": "bench", "image": self.world.image_slug, "profile": self.world.profile,
                "command": command}  # fmt: skip
        response = api.post("/api/v1/jobs/", json=spec)
        if response.status_code != 201:
            raise SystemExit(f"submit refused: {response.status_code} {response.text}")
        return response.json()


def jobs_final(ids: list[str]) -> list:
    from jobs.models import Job

    jobs = list(Job.objects.filter(pk__in=ids))
    return jobs if len(jobs) == len(ids) and all(j.state in FINAL for j in jobs) else []


def require_succeeded(jobs) -> None:
    failed = [j for j in jobs if j.state != "succeeded"]
    if failed:
        lines = "\n".join(
            f"  {j.pk} {j.state}: {j.reason} {j.error_message} {j.error_detail[-500:]}" for j in failed[:5]
        )
        raise SystemExit(f"{len(failed)} job(s) did not succeed:\n{lines}")


# --- The floor: the same container config, straight on the engine ----------------------------


def floor_spec(world: World, command: list[str]):
    from portal.runtime.base import Mount, WorkloadSpec

    uid = str(uuid.uuid4())
    return WorkloadSpec(
        uid=uid, kind="probe", owner="bench-owner", team="bench", image=world.digest, command=tuple(command),
        env={"DOCKYARD_JOB_ID": uid, "DOCKYARD_JOB_ATTEMPT": "1"}, working_dir="/output", cpus=world.cpus,
        memory_mib=int(world.memory_gib * 1024), mounts=(Mount(name="output", target="/output"),),
        labels=dict([LABEL]),
    )  # fmt: skip


def floor_create(engine, spec):
    """What Dockyard's start needs at the least for this config: the output volume, the container."""
    from portal.runtime.manifests import docker_container_config, volume_name

    engine.volumes.create(volume_name(spec.uid, "output"), labels=spec.all_labels())
    return engine.containers.create(**docker_container_config(spec, network=NETWORK))


def floor_job(engine, world: World) -> float:
    container = floor_create(engine, floor_spec(world, ECHO))
    container.start()
    container.wait()
    container.logs()
    container.remove(force=True)
    return time.time()


def floor_batch(engine, world: World, jobs: int, concurrency: int) -> float:
    started = time.time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        ended = list(pool.map(lambda _: floor_job(engine, world), range(jobs)))
    return max(ended) - started


def ensure_network(engine) -> None:
    if not engine.networks.list(names=[NETWORK]):
        engine.networks.create(
            NETWORK, driver="bridge", labels=dict([LABEL]),
            options={"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": BRIDGE},
        )  # fmt: skip


# --- (a) a batch through the API ---------------------------------------------------------------


def dockyard_batch(portal: Portal, jobs: int) -> tuple[float, float, list[str]]:
    """(seconds until the last job succeeded, seconds the POSTs took, job ids)."""
    api = portal.api()
    started = time.time()
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda i: portal.submit(api, f"batch-{i:03d}", ECHO)["id"], range(jobs)))
    posted = time.time() - started
    done = wait_for(lambda: jobs_final(ids), timeout=DEADLINE_S, what=f"{jobs} jobs to end", interval=0.25)
    require_succeeded(done)
    return max(j.state_changed_at.timestamp() for j in done) - started, posted, ids


# --- (d) log streaming -------------------------------------------------------------------------


def ticker(seconds: float) -> list[str]:
    return ["python3", "-c", TICKER.format(n=max(1, round(seconds / 0.2)))]


def latencies(lines: list[tuple[float, str]]) -> tuple[list[float], float]:
    """Per line printed after the first one arrived: read minus printed (ms); and the first line's."""
    pairs = [(seen, float(text)) for seen, text in lines if text.strip()]
    if not pairs:
        raise SystemExit("no log lines arrived")
    first_seen = pairs[0][0]
    steady = [(seen - printed) * 1000 for seen, printed in pairs if printed > first_seen]
    return steady, (pairs[0][0] - pairs[0][1]) * 1000


def dockyard_logs(portal: Portal, seconds: float) -> tuple[list[float], float]:
    api = portal.api(timeout=DEADLINE_S)
    job = portal.submit(api, "ticker", ticker(seconds))
    lines = []
    with api.stream("GET", f"/api/v1/jobs/{job['id']}/logs", params={"follow": "1"}) as response:
        for line in response.iter_lines():
            lines.append((time.time(), line))
    done = wait_for(lambda: jobs_final([job["id"]]), timeout=60, what="the ticker job to end")
    require_succeeded(done)
    return latencies(lines)


def floor_logs(engine, world: World, seconds: float) -> tuple[list[float], float]:
    container = floor_create(engine, floor_spec(world, ticker(seconds)))
    container.start()
    lines, pending = [], b""
    for chunk in container.logs(stream=True, follow=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        lines += [(time.time(), text.decode()) for text in complete]
    container.remove(force=True)
    return latencies(lines)


# --- (e) submit to running ---------------------------------------------------------------------


def dockyard_to_running(portal: Portal, api: httpx.Client, name: str) -> float:
    started = time.time()
    job = portal.submit(api, name, ECHO)
    done = wait_for(lambda: jobs_final([job["id"]]), timeout=120, what="a single job to end", interval=0.05)
    require_succeeded(done)
    return done[0].started_at.timestamp() - started


def bare_run(engine, world: World) -> float:
    started = time.time()
    container = engine.containers.run(world.digest, ECHO, detach=True, labels=dict([LABEL]))
    elapsed = time.time() - started
    container.wait()
    container.remove(force=True)
    return elapsed


def hardened_start(engine, world: World) -> float:
    started = time.time()
    container = floor_create(engine, floor_spec(world, ECHO))
    container.start()
    elapsed = time.time() - started
    container.wait()
    container.remove(force=True)
    return elapsed


# --- Where the time goes -----------------------------------------------------------------------


def _owned_folder_tar(name: str) -> bytes:
    """A tar holding one empty folder owned by uid 1000 (how Dockyard hands a new volume over)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo(name)
        entry.type, entry.mode, entry.uid, entry.gid = tarfile.DIRTYPE, 0o755, 1000, 100
        tar.addfile(entry)
    return buffer.getvalue()


def call_costs(engine, world: World, runs: int = 10) -> dict[str, list[float]]:
    """Milliseconds of the engine calls a job's start and settle make, one at a time, on one
    container made with the job's config (low-level API: one HTTP request each)."""
    from docker.errors import NotFound

    api, costs, owned = engine.api, defaultdict(list), _owned_folder_tar("output")

    def timed(name: str, call) -> None:
        started = time.perf_counter()
        try:
            call()
        except NotFound:
            pass  # a missing metrics file answers 404, as for most jobs
        costs[name].append((time.perf_counter() - started) * 1000)

    container = floor_create(engine, floor_spec(world, ECHO))
    for _ in range(runs):
        timed("PUT archive: hand /output over (images without it)", lambda: api.put_archive(container.id, "/", owned))
    api.start(container.id)
    api.wait(container.id)
    label = f"{LABEL[0]}={LABEL[1]}"
    for _ in range(runs):
        timed("GET containers/<id>/json (inspect)", lambda: api.inspect_container(container.id))
        timed("GET containers/json (list, one container)", lambda: api.containers(all=True, filters={"label": label}))
        timed("GET logs", lambda: api.logs(container.id))
        timed("GET archive /output/metrics.jsonl (missing)", lambda: api.get_archive(container.id, METRICS))
        timed("GET archive /output", lambda: b"".join(api.get_archive(container.id, "/output")[0]))
    api.remove_container(container.id, force=True)
    return costs


PHASES = [
    ("submitted -> admitted (first C jobs)", "queued", "admitted"),
    ("admitted -> starting (start task picked up)", "admitted", "starting"),
    ("starting -> running (volume, container, start)", "starting", "running"),
    ("running -> container exited", "running", "exited"),
    ("container exited -> succeeded (watch, settle)", "exited", "succeeded"),
]


def phase_breakdown(ids: list[str], concurrency: int) -> list[tuple[str, list[float]]]:
    """Each job's steps from its events (and its container's exit from the attempt), in ms."""
    from jobs.models import JobAttempt
    from portal.workloads.models import WorkloadEvent

    stamps: dict[str, dict[str, float]] = defaultdict(dict)
    for uid, step, created in WorkloadEvent.objects.filter(kind="job", uid__in=ids).values_list(
        "uid", "step", "created_at"
    ):
        stamps[str(uid)].setdefault(step, created.timestamp())
    for uid, finished in JobAttempt.objects.filter(job_id__in=ids, number=1).values_list("job_id", "finished_at"):
        stamps[str(uid)]["exited"] = finished.timestamp()
    first = sorted(ids, key=lambda uid: stamps[uid]["queued"])[:concurrency]
    rows = []
    for name, start, end in PHASES:
        pool = first if start == "queued" else ids
        rows.append((name, [(stamps[u][end] - stamps[u][start]) * 1000 for u in pool]))
    # A slot handed on: the k-th admission (k > C) follows the (k - C)-th job to succeed.
    admitted = sorted(s["admitted"] for s in stamps.values())
    succeeded = sorted(s["succeeded"] for s in stamps.values())
    handoff = [(admitted[k] - succeeded[k - concurrency]) * 1000 for k in range(concurrency, len(admitted))]
    rows.append(("succeeded -> next job admitted (release, pass)", handoff))
    return rows


TASK_LINE = re.compile(r"Task (\S+)\[[^\]]+\] (succeeded in ([0-9.e-]+)s|retry|raised)")


def worker_tasks(log: Path, offset: int, end: int) -> dict[str, list[float]]:
    """Run times of the tasks the worker finished between two offsets of its log ('retry' and
    'raised' counted with a time of -1)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read(end - offset).decode("utf-8", "replace")
    tasks: dict[str, list[float]] = defaultdict(list)
    for match in TASK_LINE.finditer(text):
        tasks[match[1]].append(float(match[3]) if match[3] else -1.0)
    return tasks


def rows_written(ids: list[str], since: datetime) -> tuple[Counter, int]:
    from portal.audit.models import AuditEvent
    from portal.workloads.models import WorkloadEvent

    audit = Counter(AuditEvent.objects.filter(created_at__gte=since).values_list("action", flat=True))
    events = WorkloadEvent.objects.filter(kind="job", uid__in=ids).count()
    return audit, events


TICKS = os.sysconf("SC_CLK_TCK")
# Processes named so (as /proc shows them, at most 15 characters) are counted under these names.
SERVICES = {
    "engine": ("dockerd", "containerd", "containerd-shim", "runc", "docker-proxy", "docker-init"),
    "postgres": ("postgres",),
    "redis": ("redis-server",),
}


def _system_cpu() -> tuple[float, float]:
    """(busy, all) CPU seconds of the whole machine since boot, summed over its CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values) - idle) / TICKS, sum(values) / TICKS


def _processes() -> dict[int, tuple[str, int, int]]:
    """pid: (name, process group, CPU ticks used by it and the children it reaped)."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (name, int(fields[2]), sum(int(v) for v in fields[11:15]))
    return table


class CpuMeter:
    """CPU used from its creation to `used()`, in seconds: the whole machine's, the portal's
    processes' (by process group), this process's, and the services' (by name). Processes that
    ended meanwhile are counted only where a parent reaped them."""

    def __init__(self, pids: dict[str, int]):
        self.groups = {pgid: name for name, pgid in pids.items()}
        self.start = (_system_cpu(), _processes())

    def _owner(self, pid: int, name: str, pgid: int) -> str | None:
        if pid == os.getpid():
            return "bench"
        if pgid in self.groups:
            return self.groups[pgid]
        return next((service for service, names in SERVICES.items() if name in names), None)

    def used(self) -> dict[str, float]:
        (busy, total), table = _system_cpu(), _processes()
        (busy0, total0), table0 = self.start
        used = dict.fromkeys([*self.groups.values(), "bench", *SERVICES], 0.0)
        for pid, (name, pgid, ticks) in table.items():
            owner = self._owner(pid, name, pgid)
            before = table0.get(pid)
            if owner is not None:
                used[owner] += (ticks - (before[2] if before and before[0] == name else 0)) / TICKS
        used = {key: max(0.0, value) for key, value in used.items()}
        used["busy"], used["all"] = busy - busy0, total - total0
        used["rest"] = max(0.0, used["busy"] - sum(used[k] for k in (*self.groups.values(), "bench", *SERVICES)))
        return used


# --- The run -----------------------------------------------------------------------------------


@dataclass
class Results:
    batch_s: float = 0.0
    posted_s: float = 0.0
    floor_s: float = 0.0
    floor_runs: list = field(default_factory=list)
    call_costs: dict = field(default_factory=dict)
    batch_ids: list = field(default_factory=list)
    log: tuple = ()
    log_floor: tuple = ()
    to_running: list = field(default_factory=list)
    bare: list = field(default_factory=list)
    hardened: list = field(default_factory=list)
    phases: list = field(default_factory=list)
    tasks: dict = field(default_factory=dict)
    audit: Counter = field(default_factory=Counter)
    events: int = 0
    engine_calls: Counter = field(default_factory=Counter)
    floor_engine_calls: Counter = field(default_factory=Counter)
    cpu: dict = field(default_factory=dict)
    floor_cpu: dict = field(default_factory=dict)
    load_before: float = 0.0


def measure(args, portal: Portal, engine, counter: EngineCallCounter | None) -> Results:
    results = Results(load_before=os.getloadavg()[0])
    api = portal.api()
    bare_run(engine, portal.world), hardened_start(engine, portal.world)  # warm-up: page cache, image metadata
    dockyard_to_running(portal, api, "warm-up")
    for i in range(args.runs):  # interleaved so drift in the machine's load hits both alike
        results.bare.append(bare_run(engine, portal.world))
        results.hardened.append(hardened_start(engine, portal.world))
        results.to_running.append(dockyard_to_running(portal, api, f"single-{i}"))
    print(f"(e) done: dockyard {results.to_running}, bare {results.bare}", file=sys.stderr)

    floor_batch(engine, portal.world, args.concurrency, args.concurrency)  # warm-up at full concurrency
    results.floor_runs.append(floor_measured(args, results, engine, portal, counter))

    since = datetime.now(UTC)
    offset = portal.worker_log.stat().st_size
    before, cpu = counter.snapshot() if counter else Counter(), CpuMeter(portal.pids)
    results.batch_s, results.posted_s, results.batch_ids = dockyard_batch(portal, args.jobs)
    results.cpu = cpu.used()
    time.sleep(1)  # the worker's last log lines
    results.engine_calls = counter.snapshot() - before if counter else Counter()
    results.tasks = worker_tasks(portal.worker_log, offset, portal.worker_log.stat().st_size)
    results.audit, results.events = rows_written(results.batch_ids, since)
    results.phases = phase_breakdown(results.batch_ids, args.concurrency)
    print(f"(a) done: {results.batch_s:.2f} s (POSTs {results.posted_s:.2f} s)", file=sys.stderr)

    results.floor_runs.append(floor_measured(args, results, engine, portal, counter))
    results.floor_s = statistics.mean(results.floor_runs)
    print(f"(b) done: {results.floor_runs} s", file=sys.stderr)

    results.log_floor = floor_logs(engine, portal.world, args.log_seconds)
    results.log = dockyard_logs(portal, args.log_seconds)
    print("(d) done", file=sys.stderr)
    results.call_costs = call_costs(engine, portal.world)
    return results


def floor_measured(args, results: Results, engine, portal: Portal, counter: EngineCallCounter | None) -> float:
    """One floor batch, its CPU and engine calls added to the results'."""
    before, cpu = counter.snapshot() if counter else Counter(), CpuMeter(portal.pids)
    elapsed = floor_batch(engine, portal.world, args.jobs, args.concurrency)
    for key, value in cpu.used().items():
        results.floor_cpu[key] = results.floor_cpu.get(key, 0.0) + value
    results.floor_engine_calls += counter.snapshot() - before if counter else Counter()
    return elapsed


def report(args, r: Results) -> None:
    ratio = r.batch_s / r.floor_s
    overhead_ms = (r.batch_s - r.floor_s) / args.jobs * args.concurrency * 1000
    steady, first = r.log
    f_steady, f_first = r.log_floor
    med_run, med_bare, med_hard = (statistics.median(v) for v in (r.to_running, r.bare, r.hardened))
    rows = [
        (f"(a) {args.jobs} jobs, C={args.concurrency}: all succeeded (s)", f"{r.batch_s:.2f}", f"{r.floor_s:.2f}",
         f"{ratio:.2f}", "ratio <= 1.3", ratio <= 1.3),
        ("    ... the POSTs alone (s)", f"{r.posted_s:.2f}", "", "", "", None),
        ("(c) overhead per job in its slot (ms)", f"{overhead_ms:.0f}", "", "", "", None),
        (f"(d) log line latency, median (ms, n={len(steady)}/{len(f_steady)})", f"{statistics.median(steady):.1f}",
         f"{statistics.median(f_steady):.1f}", f"{statistics.median(steady) - statistics.median(f_steady):+.1f}",
         "", None),
        ("    ... p95 (ms)", f"{percentile(steady, 95):.1f}", f"{percentile(f_steady, 95):.1f}",
         f"{percentile(steady, 95) - percentile(f_steady, 95):+.1f}", "", None),
        ("    ... first line, submit included (ms)", f"{first:.0f}", f"{f_first:.0f}", "", "", None),
        (f"(e) submit -> running, median of {args.runs} (s)", f"{med_run:.3f}", f"{med_bare:.3f}",
         f"{med_run / med_bare:.2f}", "", None),
        ("    ... hardened create+start on the engine (s)", f"{med_hard:.3f}", f"{med_bare:.3f}",
         f"{med_hard / med_bare:.2f}", "", None),
    ]  # fmt: skip
    print(f"\n{'metric':52}{'value':>10}{'floor':>10}{'ratio':>8}  goal")
    for name, value, floor, rate, goal, met in rows:
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"{name:52}{value:>10}{floor:>10}{rate:>8}  {goal:<14}{verdict}".rstrip())
    print(
        f"settings: DOCKYARD_JOB_WATCH_S={args.watch_s}, worker --pool {args.worker_pool} --concurrency "
        f"{args.worker_concurrency} on queues default,runtime; {os.cpu_count()} CPUs; "
        f"{'engine calls through a counting proxy' if args.count_engine_calls else 'engine on its socket'}; "
        f"load average {r.load_before:.1f} when (e) began\n"
        f"floors: (a) the same containers (digest, hardened config, network, an output volume each) by "
        f"{args.concurrency} threads:\n"
        "            volume create, create, start, wait, logs, remove; the mean of a run just before (a) and\n"
        f"            one just after ({' and '.join(f'{t:.2f}' for t in r.floor_runs)} s): drift in load hits both;\n"
        "        (c) (a - floor) / jobs * C: the time each job adds to the slot it runs in;\n"
        "        (d) logs(follow=True) of the same program in a bare container; lines printed after the first\n"
        "            arrived (the first line's latency includes the start);\n"
        "        (e) docker run -d of the same image and command on the default bridge, until it returns."
    )
    print(f"(e) runs, dockyard: {' '.join(f'{t:.3f}' for t in r.to_running)}; "
          f"bare: {' '.join(f'{t:.3f}' for t in r.bare)}")  # fmt: skip
    report_breakdown(args, r)


def report_breakdown(args, r: Results) -> None:
    cycle = r.batch_s / args.jobs * args.concurrency * 1000
    print(f"\nwhere a job's time goes in (a): a slot turns over every {cycle:.0f} ms "
          f"(floor {r.floor_s / args.jobs * args.concurrency * 1000:.0f} ms)")  # fmt: skip
    print(f"{'phase':52}{'median ms':>10}{'p95 ms':>10}")
    for name, values in r.phases:
        if values:
            print(f"{name:52}{statistics.median(values):>10.0f}{percentile(values, 95):>10.0f}")
    busy = sum(t for times in r.tasks.values() for t in times if t > 0)
    capacity = args.worker_concurrency * r.batch_s
    kind = "processes" if args.worker_pool == "prefork" else "threads"
    print(f"\nworker tasks during (a): {busy:.1f} s of work in {r.batch_s:.1f} s on {args.worker_concurrency} "
          f"{kind} ({100 * busy / capacity:.0f}% busy)")  # fmt: skip
    print(f"{'task':30}{'count':>7}{'per job':>9}{'median ms':>11}{'total s':>9}{'retried':>9}")
    for name, times in sorted(r.tasks.items(), key=lambda item: -sum(t for t in item[1] if t > 0)):
        done = [t for t in times if t > 0]
        median = statistics.median(done) * 1000 if done else 0
        print(f"{name:30}{len(done):>7}{len(done) / args.jobs:>9.2f}{median:>11.1f}{sum(done):>9.2f}"
              f"{len(times) - len(done):>9}")  # fmt: skip
    print()
    cpu_line(f"(a) ({r.batch_s:.1f} s)", r.cpu, args.jobs)
    runs = len(r.floor_runs)
    cpu_line(f"(b) ({runs} runs, {sum(r.floor_runs):.1f} s)", r.floor_cpu, args.jobs * runs)
    print(
        "  engine: dockerd, containerd and live shims; postgres and redis: the whole servers (other databases too);\n"
        "  rest: processes that ended (container shims, runc, the containers) and anything else running"
    )
    audit_total = sum(r.audit.values())
    print(f"\nrows per job: {audit_total / args.jobs:.1f} audit events (each takes the chain lock until its "
          f"transaction commits), {r.events / args.jobs:.1f} workload events")  # fmt: skip
    print("  audit: " + ", ".join(f"{action} {count / args.jobs:.2g}" for action, count in r.audit.most_common()))
    print("\nengine calls on one job's container, one at a time (ms, median of 10):")
    for name, times in r.call_costs.items():
        print(f"  {name:52}{statistics.median(times):>8.1f}")
    if r.engine_calls:
        total, floor_total = sum(r.engine_calls.values()), sum(r.floor_engine_calls.values())
        floor_jobs = args.jobs * len(r.floor_runs)
        print(f"\nengine calls per job: {total / args.jobs:.1f} (floor {floor_total / floor_jobs:.1f})")
        for call, count in r.engine_calls.most_common():
            print(f"  {call:44}{count / args.jobs:>7.2f}")


def cpu_line(name: str, cpu: dict, jobs: int) -> None:
    parts = ", ".join(
        f"{key} {cpu[key]:.1f} s ({cpu[key] / jobs * 1000:.0f} ms/job)"
        for key in ("worker", "web", "bench", *SERVICES, "rest")
        if cpu.get(key, 0) >= 0.05
    )
    print(f"CPU during {name}: machine {100 * cpu['busy'] / cpu['all']:.0f}% busy; {parts}")


def cleanup(engine) -> None:
    """Removes what the run made on the engine. An engine under load may report a network as
    still in use for a while after its last container went: that removal is tried again."""
    from docker.errors import APIError

    label = f"{LABEL[0]}={LABEL[1]}"
    for container in engine.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    for network in engine.networks.list(names=[NETWORK]):
        for attempt in range(20):
            try:
                network.remove()
                break
            except APIError as error:
                if attempt == 19:
                    print(f"could not remove the network {NETWORK}: {error.explanation}", file=sys.stderr)
                time.sleep(0.5)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10, help="the team's max_jobs, and the floor's threads")
    parser.add_argument("--watch-s", type=float, default=0.2, help="DOCKYARD_JOB_WATCH_S for the portal")
    parser.add_argument("--runs", type=int, default=5, help="single jobs for (e)")
    parser.add_argument("--log-seconds", type=float, default=5.0, help="how long the ticker of (d) prints")
    parser.add_argument("--worker-pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--count-engine-calls", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="dockyard-bench-jobs-"))
    counter = EngineCallCounter() if args.count_engine_calls else None
    docker_host = counter.start() if counter else os.environ.get("DOCKER_HOST", "")
    env = portal_env(args, var_dir, docker_host)
    admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DB_NAME}"')
    import docker

    engine = docker.DockerClient(base_url=docker_host, timeout=120) if counter else docker.from_env(timeout=120)
    portal = None
    try:
        setup_django(env)
        flush_redis()
        world = make_world(args.concurrency)
        ensure_network(engine)
        with ExitStack() as stack:
            port = free_port()
            pids = start_portal(stack, args, env, port, var_dir)
            portal = Portal(port=port, world=world, worker_log=var_dir / "worker.log", pids=pids)
            results = measure(args, portal, engine, counter)
        report(args, results)
    finally:
        for client in portal.clients if portal else []:
            client.close()
        best_effort("removing containers, volumes and the network", lambda: cleanup(engine))
        engine.close()
        shutil.rmtree(var_dir / "media", ignore_errors=True)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
            best_effort("flushing Redis", flush_redis)
        if not args.keep:
            best_effort("dropping the database", lambda: admin_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
        if counter:
            counter.stop()
        print(f"logs: {var_dir} (run {RUN_ID})", file=sys.stderr)


def best_effort(what: str, step) -> None:
    """One clean-up step; a failure is reported and the next steps still run."""
    try:
        step()
    except Exception as error:  # noqa: BLE001  (clean-up goes on whatever failed)
        print(f"clean-up: {what} failed: {error!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
