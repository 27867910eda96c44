"""Workspaces end to end, against floors measured in the same run (not a test).

    .venv/bin/python bench/workspaces.py [--runs 5] [--crowd 20] [--file-mib 100] [--executions 200]

Needs what `make test` sets up once: a Docker engine, the base image, PostgreSQL at
127.0.0.1:5432 (trust auth) and Redis at 127.0.0.1:6379. It makes a scratch database
(`dockyard_bench_ws`, on the server of DOCKYARD_BENCH_DATABASE_URL), uses Redis db 13
(DOCKYARD_BENCH_REDIS_URL), builds the JupyterLab catalog image the tests use (cached by the
engine after the first time), runs uvicorn and a Celery worker, measures, and removes all it
made: every container and volume labelled dockyard.bench=workspaces, the processes, the
database.

(a) click-to-ready: from `POST /api/v1/workspaces/` until Jupyter answers `/api/status`
    through the proxy; floor: `docker run` of the same image and command on the default
    bridge until its Jupyter answers at the container's address. Medians of --runs,
    interleaved. Goal: ratio <= 1.10.
(b) --crowd workspaces created at once through the API: time until all run, and how many
    failed (goal: none); floor: as many bare `docker run`s at once until all answer.
(c) a --file-mib MiB file downloaded through the proxy against straight from the container's
    Jupyter (its token sent as the proxy does). Medians of --runs. Goal: >= 0.90x.
(d) a kernel executing `1`, over its channels WebSocket, through the proxy against straight
    to the container: p50 and p99 over --executions. Goal: p99 overhead <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from benchkit import admin_sql, database_url, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("DOCKYARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
SCRATCH = "dockyard_bench_ws"
LABEL = ("dockyard.bench", "workspaces")
JUPYTER = ["jupyter-lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.allow_remote_access=True"]
PIP = ("jupyterlab>=4", "numpy>=2", "pandas>=2", "matplotlib>=3.8")  # as the tests' image: same cached layers
POLL_S = 0.02  # how often both sides ask "does Jupyter answer yet?"
START_DEADLINE_S = 240


def setup_django(port: int, var_dir: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": database_url(SCRATCH),
            "REDIS_URL": REDIS_URL,
            "DOCKYARD_VAR_DIR": var_dir,
            "DOCKYARD_RUNTIME": "docker",
            "DOCKYARD_NOTEBOOK_PORT": str(port),
            "DOCKYARD_PORTAL_URL": f"http://127.0.0.1:{port}",
            "DOCKYARD_WORKSPACE_READY_POLL_S": "0.1",
            "DOCKYARD_WORKLOAD_LABELS": f"{LABEL[0]}={LABEL[1]}",
        }
    )
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the table


# --- The world: a team with no limits, its owner, a token, profiles, the JupyterLab image ----


@dataclass
class World:
    token: str
    image_slug: str
    image_ref: str


def make_world() -> World:
    from django.conf import settings

    from portal.accounts.models import Membership, Role, Team, User
    from portal.accounts.services import token_create
    from portal.audit.services import Actor
    from portal.catalog import services as catalog_services
    from portal.catalog.models import SourceType
    from portal.catalog.services import SourceSpec
    from portal.quotas.models import ResourceProfile

    team = Team.objects.create(slug="bench", name="Bench")  # no TeamQuota row: no limits
    owner = User.objects.create_user(username="bench-owner")
    Membership.objects.create(user=owner, team=team, role=Role.TEAM_ADMIN)
    _, raw = token_create(user=owner, name="bench", expires_at=None, actor=Actor.system())
    # `wide` leaves Jupyter's start unthrottled like the floor's; `small` is for the crowd.
    ResourceProfile.objects.create(slug="wide", name="Wide", cpus=os.cpu_count() or 2, memory_gib=4)
    ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=1)
    slug = f"bench-ws-{uuid.uuid4().hex[:6]}"
    source = SourceSpec(source_type=SourceType.BUILD, base_image=settings.DOCKYARD_BASE_IMAGE, pip_requirements=PIP)
    image = catalog_services.image_create(
        slug=slug, source=source, details={"name": slug, "default_command": JUPYTER}, by=None, actor=Actor.system()
    )
    build = catalog_services.image_build(image=image, by=None, actor=Actor.system())
    catalog_services.build_run(build_id=build.pk)
    image.refresh_from_db()
    if image.current_revision is None:
        build.refresh_from_db()
        raise SystemExit(f"the JupyterLab image did not build:\n{build.log[-3000:]}")
    return World(token=raw, image_slug=slug, image_ref=image.current_revision.digest)


# --- The portal's processes ---------------------------------------------------------------------


@contextmanager
def running(args: list[str], log: Path):
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=os.environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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


def start_portal(stack: ExitStack, port: int, var_dir: Path) -> None:
    from portal.celery import app as celery_app

    web = [
        sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--proxy-headers", "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip
    worker = [
        str(VENV_BIN / "celery"), "-A", "portal", "worker", "-Q", "default,runtime", "--pool", "threads", "-c", "8",
        "-n", "bench-ws@%h", "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip
    stack.enter_context(running(web, var_dir / "web.log"))
    stack.enter_context(running(worker, var_dir / "worker.log"))
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, timeout=60, what="uvicorn")
    wait_for(lambda: celery_app.control.ping(timeout=0.5), timeout=60, what="the worker")


@dataclass
class Portal:
    port: int
    token: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", headers={"authorization": f"Bearer {self.token}"}, timeout=60
        )

    def host(self, workspace_id: str) -> str:
        return f"{workspace_id}.nb.localhost:{self.port}"

    def notebook(self, workspace_id: str) -> httpx.Client:
        """Python cannot resolve *.localhost: connect to 127.0.0.1 and name the host."""
        headers = {"host": self.host(workspace_id), "authorization": f"Bearer {self.token}"}
        return httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=60)

    def create(self, api: httpx.Client, name: str, image: str, profile: str) -> httpx.Response:
        return api.post("/api/v1/workspaces/", json={"name": name, "image": image, "profile": profile, "team": "bench"})

    def delete_all(self) -> None:
        api = self.api()
        for workspace in api.get("/api/v1/workspaces/").json():
            api.delete(f"/api/v1/workspaces/{workspace['id']}/?delete_data=1")
        wait_for(lambda: api.get("/api/v1/workspaces/").json() == [], timeout=180, what="workspaces to go")


def failure(api: httpx.Client, workspace_id: str) -> str:
    data = api.get(f"/api/v1/workspaces/{workspace_id}/").json()
    return f"{data['state']}: {data.get('error_message')} {data.get('error_detail', '')[-1500:]}"


def answers(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.TransportError:
        return False


def wait_answering(client: httpx.Client, url: str, what: str) -> None:
    """Asks every POLL_S until Jupyter answers 200; no sleep beyond the polling itself."""
    deadline = time.monotonic() + START_DEADLINE_S
    while not answers(client, url):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer within {START_DEADLINE_S} s")
        time.sleep(POLL_S)


# --- (a) click-to-ready -------------------------------------------------------------------------


def floor_container(engine, world: World):
    token = uuid.uuid4().hex
    container = engine.containers.run(
        world.image_ref, JUPYTER, detach=True, labels=dict([LABEL]), environment={"JUPYTER_TOKEN": token}
    )
    return container, token


def container_ip(container) -> str:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]


def floor_start(engine, world: World) -> float:
    started = time.perf_counter()
    container, token = floor_container(engine, world)
    direct = httpx.Client(headers={"authorization": f"token {token}"}, timeout=2)
    wait_answering(direct, f"http://{container_ip(container)}:8888/api/status", "a bare container")
    elapsed = time.perf_counter() - started
    container.remove(force=True)
    return elapsed


def dockyard_start(portal: Portal, world: World, name: str, *, keep: bool = False) -> tuple[float, str]:
    api = portal.api()
    started = time.perf_counter()
    created = portal.create(api, name, world.image_slug, "wide")
    if created.status_code != 201:
        raise SystemExit(f"create refused: {created.status_code} {created.text}")
    workspace_id = created.json()["id"]
    try:
        wait_answering(portal.notebook(workspace_id), "/api/status", "a workspace through the proxy")
    except SystemExit:
        raise SystemExit(f"workspace never answered: {failure(api, workspace_id)}") from None
    elapsed = time.perf_counter() - started
    if not keep:
        api.delete(f"/api/v1/workspaces/{workspace_id}/?delete_data=1")
        wait_for(
            lambda: api.get(f"/api/v1/workspaces/{workspace_id}/").status_code == 404, timeout=120, what="deletion"
        )
    return elapsed, workspace_id


# --- (b) a crowd at once ------------------------------------------------------------------------


def crowd(portal: Portal, world: World, count: int) -> tuple[float, int]:
    """Seconds until every workspace runs (or failed), and how many did not run."""

    def create(i: int) -> httpx.Response:
        return portal.create(portal.api(), f"crowd-{i:02d}", world.image_slug, "small")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        responses = list(pool.map(create, range(count)))
    refused = sum(r.status_code != 201 for r in responses)
    api = portal.api()

    def settled():
        states = [w["state"] for w in api.get("/api/v1/workspaces/").json()]
        return states if all(s in ("running", "failed") for s in states) else None

    states = wait_for(settled, timeout=START_DEADLINE_S + 60, what="the crowd to start", interval=0.1)
    elapsed = time.perf_counter() - started
    failed = refused + sum(s != "running" for s in states)
    portal.delete_all()
    return elapsed, failed


def floor_crowd(engine, world: World, count: int) -> float:
    def one(_):
        container, token = floor_container(engine, world)
        direct = httpx.Client(headers={"authorization": f"token {token}"}, timeout=2)
        wait_answering(direct, f"http://{container_ip(container)}:8888/api/status", "a bare container")
        return container

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        containers = list(pool.map(one, range(count)))
    elapsed = time.perf_counter() - started
    for container in containers:
        container.remove(force=True)
    return elapsed


# --- (c) download, (d) kernel round trips ------------------------------------------------------


@dataclass
class Target:
    """One way to reach the same Jupyter: through the proxy, or straight to the container."""

    http: httpx.Client
    ws_url: str
    ws_headers: dict[str, str]
    ws_sock: object = None  # a function giving a connected socket, for the notebook host


def targets(portal: Portal, workspace_id: str) -> tuple[Target, Target]:
    from workspaces.models import Workspace

    workspace = Workspace.objects.get(pk=workspace_id)
    host = portal.host(workspace_id)
    proxied = Target(
        http=portal.notebook(workspace_id),
        ws_url=f"ws://{host}",
        ws_headers={"Authorization": f"Bearer {portal.token}", "Origin": f"http://{host}"},
        ws_sock=lambda: socket.create_connection(("127.0.0.1", portal.port)),
    )
    auth = {"Authorization": f"token {workspace.jupyter_token}"}
    direct = Target(
        http=httpx.Client(base_url=f"http://{workspace.endpoint}", headers=auth, timeout=60),
        ws_url=f"ws://{workspace.endpoint}",
        ws_headers=auth,
    )
    return proxied, direct


def execute_request(code: str, session: str) -> tuple[str, str]:
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "", "session": session, "msg_type": "execute_request", "version": "5.3"}
    body = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell"}
    return msg_id, json.dumps({**body, "content": {"code": code, "silent": False, "store_history": False}})


async def round_trips(target: Target, kernel_id: str, code: str, count: int, warm_up: int = 5) -> list[float]:
    """Seconds from sending each execution until its reply and the kernel's idle both arrived."""
    from websockets.asyncio.client import connect

    url = f"{target.ws_url}/api/kernels/{kernel_id}/channels"
    sock = target.ws_sock() if target.ws_sock else None
    times = []
    async with connect(url, sock=sock, additional_headers=target.ws_headers, max_size=None, open_timeout=30) as ws:
        session = uuid.uuid4().hex
        for i in range(warm_up + count):
            msg_id, request = execute_request(code, session)
            started = time.perf_counter()
            await ws.send(request)
            replied = idle = False
            while not (replied and idle):
                message = json.loads(await asyncio.wait_for(ws.recv(), timeout=600))
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                replied = replied or message["msg_type"] == "execute_reply"
                idle = idle or (message["msg_type"] == "status" and message["content"]["execution_state"] == "idle")
                if message["msg_type"] == "execute_reply" and message["content"]["status"] != "ok":
                    raise SystemExit(f"the kernel refused {code!r}: {message['content']}")
            if i >= warm_up:
                times.append(time.perf_counter() - started)
    return times


def download(target: Target, path: str, size: int) -> float:
    """MB/s of one GET, read in 1 MiB pieces and thrown away."""
    received = 0
    started = time.perf_counter()
    with target.http.stream("GET", path, headers={"accept-encoding": "identity"}) as response:
        if response.status_code != 200:
            raise SystemExit(f"download answered {response.status_code}")
        for chunk in response.iter_raw(1 << 20):
            received += len(chunk)
    elapsed = time.perf_counter() - started
    if received != size:
        raise SystemExit(f"downloaded {received} bytes, expected {size}")
    return size / elapsed / 1e6


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --- The run -----------------------------------------------------------------------------------


def cleanup(engine, slug: str | None) -> None:
    label = f"{LABEL[0]}={LABEL[1]}"
    for container in engine.containers.list(all=True, filters={"label": label}):
        container.remove(force=True)
    for volume in engine.volumes.list(filters={"label": label}):
        volume.remove(force=True)
    if slug:
        for image in engine.images.list(name=f"dockyard/{slug}*"):
            for tag in image.tags:
                engine.images.remove(tag, force=True)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def measure(args, portal: Portal, world: World, engine) -> list[tuple]:
    floor_start(engine, world)  # warm-up: page cache, the engine's image metadata, the worker
    dockyard_start(portal, world, "warm-up")
    click, bare = [], []
    for i in range(args.runs):  # interleaved so drift in the machine's load hits both alike
        bare.append(floor_start(engine, world))
        click.append(dockyard_start(portal, world, f"click-{i}")[0])
    print(f"(a) done: dockyard {click}, floor {bare}", file=sys.stderr)

    crowd_s, crowd_failed = crowd(portal, world, args.crowd)
    crowd_floor_s = floor_crowd(engine, world, args.crowd)
    print(f"(b) done: {crowd_s:.1f} s, {crowd_failed} failed; floor {crowd_floor_s:.1f} s", file=sys.stderr)

    _, workspace_id = dockyard_start(portal, world, "perf", keep=True)
    proxied, direct = targets(portal, workspace_id)
    kernel_id = direct.http.post("/api/kernels", json={"name": "python3"}).json()["id"]
    size = args.file_mib << 20
    write = (
        "import os\nwith open('big.bin', 'wb') as f:\n"
        f"    for _ in range({args.file_mib}):\n        f.write(os.urandom(1 << 20))"
    )
    asyncio.run(round_trips(direct, kernel_id, write, 1, warm_up=0))
    download(proxied, "/files/big.bin", size), download(direct, "/files/big.bin", size)  # warm-up
    via_proxy, straight = [], []
    for _ in range(args.runs):
        straight.append(download(direct, "/files/big.bin", size))
        via_proxy.append(download(proxied, "/files/big.bin", size))
    print(f"(c) done: proxy {via_proxy}, direct {straight}", file=sys.stderr)

    rt_proxy, rt_direct = [], []
    block = max(1, args.executions // 5)
    while len(rt_proxy) < args.executions:  # blocks in turn, one connection open at a time
        rt_direct += asyncio.run(round_trips(direct, kernel_id, "1", block))
        rt_proxy += asyncio.run(round_trips(proxied, kernel_id, "1", block))
    portal.delete_all()
    return [
        ("a", statistics.median(click), statistics.median(bare), click, bare),
        ("b", crowd_s, crowd_floor_s, crowd_failed),
        ("c", statistics.median(via_proxy), statistics.median(straight)),
        ("d", [t * 1000 for t in rt_proxy], [t * 1000 for t in rt_direct]),
    ]


def report(args, results) -> None:
    a, b, c, d = results
    p50, p99 = percentile(d[1], 50), percentile(d[1], 99)
    d50, d99 = percentile(d[2], 50), percentile(d[2], 99)
    rows = [
        (f"(a) click-to-ready, median of {args.runs} (s)", f"{a[1]:.2f}", f"{a[2]:.2f}", f"{a[1] / a[2]:.2f}",
         "ratio <= 1.10", a[1] / a[2] <= 1.10),
        (f"(b) {args.crowd} at once: all running (s)", f"{b[1]:.1f}", f"{b[2]:.1f}", f"{b[1] / b[2]:.2f}", "", None),
        ("    ... failed", str(b[3]), "", "", "none", b[3] == 0),
        (f"(c) {args.file_mib} MiB download, median (MB/s)", f"{c[1]:.0f}", f"{c[2]:.0f}", f"{c[1] / c[2]:.2f}",
         "ratio >= 0.90", c[1] / c[2] >= 0.90),
        (f"(d) kernel round trip p50 (ms, n={len(d[1])})", f"{p50:.2f}", f"{d50:.2f}", f"{p50 - d50:+.2f}", "", None),
        ("    ... p99 (ms)", f"{p99:.2f}", f"{d99:.2f}", f"{p99 - d99:+.2f}", "overhead <= 2 ms", p99 - d99 <= 2),
    ]  # fmt: skip
    print(f"{'':46}{'dockyard':>10}{'floor':>10}{'ratio':>8}  goal")
    for name, value, floor, ratio, goal, met in rows:
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"{name:46}{value:>10}{floor:>10}{ratio:>8}  {goal:<18}{verdict}".rstrip())
    print(
        "floors: (a) docker run of the same image and command on the default bridge, until /api/status answers\n"
        "            at the container's address;\n"
        f"        (b) {args.crowd} such docker runs at once, until all answer;\n"
        "        (c) the same file straight from the container's Jupyter, with its token;\n"
        "        (d) the same kernel over a WebSocket straight to the container."
    )
    print(f"(a) runs, dockyard: {' '.join(f'{t:.2f}' for t in a[3])}; floor: {' '.join(f'{t:.2f}' for t in a[4])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--crowd", type=int, default=20)
    parser.add_argument("--file-mib", type=int, default=100)
    parser.add_argument("--executions", type=int, default=200)
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="dockyard-bench-ws-"))
    port = free_port()
    admin_sql(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
    admin_sql(f"CREATE DATABASE {SCRATCH}")
    import docker

    engine = docker.from_env(timeout=120)
    world = None
    try:
        setup_django(port, str(var_dir))
        flush_redis()
        world = make_world()
        with ExitStack() as stack:
            start_portal(stack, port, var_dir)
            portal = Portal(port=port, token=world.token)
            results = measure(args, portal, world, engine)
        report(args, results)
    finally:
        cleanup(engine, world.image_slug if world else None)
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
            flush_redis()
        admin_sql(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)")
        print(f"logs: {var_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
