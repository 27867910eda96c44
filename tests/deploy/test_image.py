"""The portal image, built from the local Debian base and run as Compose runs it: migrate once,
then web and worker against this machine's PostgreSQL and Redis until /readyz says ready.

The containers run as docker-compose.yml runs them (its commands and healthchecks, the host's
network, the engine's socket through its group) and as restricted as Kubernetes runs them
(read-only root, all capabilities dropped, no privilege escalation), with production settings.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from django.conf import settings
from psycopg import sql

from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import REPO, free_port, wait_for

pytestmark = pytest.mark.docker

IMAGE = "dockyard/portal:test"
# The build context's optional CA bundle for pip (see Dockerfile).
BUILD_CA = REPO / "var" / "build-ca.crt"
# Redis database of these containers' broker: apart from the suite's (its Celery workers must
# never see this worker, nor this worker their tasks).
REDIS_DB = 8
SOCKET = "/var/run/docker.sock"
PORTAL_UID = 10001
# Headers a probe sends (docs/operations.md): a host in ALLOWED_HOSTS, and "came over TLS".
PROBE_HEADERS = {"Host": "localhost", "X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def portal_image(engine) -> str:
    """Builds the image; unchanged layers come from the engine's cache on later runs."""
    # pip inside the build trusts what this machine trusts (as catalog builds do).
    bundle = Path(settings.DOCKYARD_BUILD_CA_BUNDLE) if settings.DOCKYARD_BUILD_CA_BUNDLE else None
    if bundle and (not BUILD_CA.exists() or BUILD_CA.read_bytes() != bundle.read_bytes()):
        BUILD_CA.parent.mkdir(exist_ok=True)
        shutil.copyfile(bundle, BUILD_CA)
    log: list[str] = []
    for event in engine.api.build(
        path=str(REPO),
        tag=IMAGE,
        buildargs={"BASE": settings.DOCKYARD_BASE_IMAGE},
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    ):
        log.extend((event.get("stream") or "").splitlines())
        assert "error" not in event, "\n".join([*log[-40:], event["error"]])
    return IMAGE


@pytest.fixture(scope="module")
def database_url():
    """A database of its own on the suite's PostgreSQL server, dropped afterwards."""
    server = urlsplit(os.environ["DATABASE_URL"])
    name = f"dockyard_deploy_{secrets.token_hex(4)}"
    admin = urlunsplit(server._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield urlunsplit(server._replace(path=f"/{name}"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def redis_url():
    url = urlunsplit(urlsplit(os.environ["REDIS_URL"])._replace(path=f"/{REDIS_DB}"))
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def stack(engine, portal_image, compose, database_url, redis_url):
    """migrate, then worker and web, from the image with Compose's commands; removed at the end
    (and by the session's clean-up of everything labelled with this run, should this fail)."""
    port = free_port()
    env = {
        "DJANGO_DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DOCKYARD_AUDIT_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "dockyard.test,localhost",
        "DOCKYARD_HTTPS": "1",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DOCKYARD_RUNTIME": "docker",
        # The backend sees only this run's workloads (there are none).
        "DOCKYARD_WORKLOAD_LABELS": f"{RUN_LABEL}={TEST_RUN}",
        "UVICORN_HOST": "127.0.0.1",
        "UVICORN_PORT": str(port),
    }
    services = compose["services"]
    started = []

    def run(name: str, **options):
        container = engine.containers.run(
            portal_image,
            command=services[name].get("command"),
            name=f"dockyard-deploy-{name}-{TEST_RUN}",
            labels={RUN_LABEL: TEST_RUN, "dockyard.deploy-test": name},
            environment=env,
            network_mode="host",
            read_only=True,
            tmpfs={"/tmp": "", "/var/lib/dockyard": f"uid={PORTAL_UID},gid={PORTAL_UID}"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            detach=True,
            **options,
        )
        started.append(container)
        return container

    engine_access = {"volumes": {SOCKET: {"bind": SOCKET, "mode": "rw"}}, "group_add": [os.stat(SOCKET).st_gid]}
    try:
        migrate = run("migrate")
        outcome = migrate.wait(timeout=300)
        assert outcome["StatusCode"] == 0, migrate.logs().decode()[-4000:]
        worker = run("worker", **engine_access)
        web = run("web", **engine_access)
        yield {"web": web, "worker": worker, "url": f"http://127.0.0.1:{port}", "services": services}
    finally:
        for container in started:
            container.remove(force=True)


def get(url: str, *, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={**PROBE_HEADERS, **(headers or {})})  # noqa: S310  (our own server)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _logs(stack) -> str:
    return "\n".join(f"--- {name} ---\n{stack[name].logs().decode()[-3000:]}" for name in ("web", "worker"))


@pytest.fixture(scope="module")
def readiness(stack) -> dict:
    """/readyz once database, broker, worker and the engine all answer."""

    def ready():
        status, body = get(f"{stack['url']}/readyz")
        return json.loads(body) if status == 200 else None

    try:
        return wait_for(ready, timeout=180, what="/readyz to answer 200", interval=1.0)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_logs(stack)}") from None


def test_web_and_worker_become_ready_against_this_machines_stores(readiness):
    # runtime is ok too: web and worker hold the engine's socket, as in docker-compose.yml.
    assert {k: readiness[k] for k in ("database", "broker", "worker", "runtime")} == dict.fromkeys(
        ("database", "broker", "worker", "runtime"), "ok"
    )


def test_compose_healthchecks_pass_inside_the_containers(stack, readiness):
    for name in ("web", "worker"):
        test = stack["services"][name]["healthcheck"]["test"]
        command = ["sh", "-c", test[1].replace("$$", "$")] if test[0] == "CMD-SHELL" else test[1:]
        result = stack[name].exec_run(command)
        assert result.exit_code == 0, (name, result.output.decode())


def test_pages_and_hashed_static_files_are_served(stack, readiness):
    status, page = get(f"{stack['url']}/accounts/login/")
    assert status == 200
    stylesheet = next(part.split('"')[0] for part in page.decode().split('href="')[1:] if ".css" in part.split('"')[0])
    assert stylesheet.startswith("/static/") and stylesheet.count(".") >= 2  # a hashed name from collectstatic
    assert get(f"{stack['url']}{stylesheet}")[0] == 200


def test_plain_http_is_redirected_to_https(stack, readiness):
    request = urllib.request.Request(f"{stack['url']}/accounts/login/", headers={"Host": "localhost"})  # noqa: S310
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(request, timeout=15)
    assert answer.value.code == 301
    assert answer.value.headers["Location"].startswith("https://localhost/")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_the_images_production_settings_pass_the_deploy_security_checks(stack):
    # The image's defaults plus the few settings every deployment gives (tests/core/test_settings.py
    # runs every check; here only the security ones, which the image's environment decides).
    command = ["python", "manage.py", "check", "--deploy", "--tag", "security", "--fail-level", "WARNING"]
    result = stack["web"].exec_run(command)
    assert result.exit_code == 0, result.output.decode()


def test_processes_run_unprivileged(stack):
    for name in ("web", "worker"):
        assert stack[name].exec_run(["id", "-u"]).output.decode().strip() == str(PORTAL_UID)
        # The code belongs to root: the portal cannot change what it runs.
        assert stack[name].exec_run(["touch", "/app/manage.py"]).exit_code != 0
