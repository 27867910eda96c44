"""Environments for real: builds on the engine (pip from PyPI, with the CA bundle), locks and
rebuilds from them, a workspace saved as an environment, a job reproduced in a workspace,
export and import, secrets, and another team. The small pure-Python packages keep builds quick,
and the engine's layer cache makes them quicker still on the next run."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import uuid
import zipfile

import pytest

from jobs import archives
from jobs.models import Job
from portal.accounts.models import Role
from portal.accounts.services import token_create
from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.catalog import services as catalog_services
from portal.catalog.environments import services as env_services
from portal.catalog.models import Environment, EnvironmentRevision, ImageBuild
from tests.factories import MembershipFactory, UserFactory
from tests.jobs.conftest import submit, wait_job
from tests.workspaces.conftest import wait_state

pytestmark = pytest.mark.docker

LOCK_LINE = re.compile(r"^[a-z0-9-]+==[^ ]+ --hash=sha256:[0-9a-f]{64}$")
SECRET = "s3cr3t-" + uuid.uuid4().hex  # never written anywhere but the containers' env


def define(slug, base, owner, **recipe) -> Environment:
    shared = recipe.pop("shared", True)
    team = owner.memberships.get().team
    return env_services.environment_create(
        slug=slug, name=slug, team=team, recipe=env_services.Recipe(base_image=base, **recipe), by=owner,
        actor=Actor.system(), shared=shared,
    )  # fmt: skip


def build_now(build: ImageBuild) -> EnvironmentRevision:
    """Runs a queued build here (the portal's worker in these tests serves no `builds` queue)."""
    catalog_services.build_run(build_id=build.pk)
    build.refresh_from_db()
    assert build.status == ImageBuild.Status.SUCCEEDED, build.log[-3000:]
    return EnvironmentRevision.objects.select_related("image_revision").get(image_revision=build.revision_id)


def build_environment(environment: Environment, by) -> EnvironmentRevision:
    return build_now(env_services.environment_build(environment=environment, by=by, actor=Actor.system()))


def freeze(engine, digest: str) -> list[str]:
    output = engine.containers.run(
        digest, ["pip", "freeze", "--all"], entrypoint=[], remove=True, network_mode="none", stderr=False
    )
    return sorted(output.decode().split())


def token_for(user) -> str:
    return token_create(user=user, name="test", expires_at=None, actor=Actor.system())[1]


@pytest.mark.django_db
def test_a_build_locks_exact_versions_with_hashes_and_a_rebuild_from_the_lock_installs_the_same(
    engine, alice, env_slug, echo_base
):
    environment = define(env_slug, echo_base, alice, pip=("six",))

    first = build_environment(environment, alice)

    assert first.lock and all(LOCK_LINE.match(line) for line in first.lock), first.lock
    assert any(line.startswith("six==") for line in first.lock)
    second = build_environment(environment, alice)  # a built revision is rebuilt from its lock
    assert (second.number, second.origin, second.from_lock) == (2, "lock", first.lock)
    log = second.image_revision.builds.get().log
    assert "pip install --require-hashes --no-deps -r /etc/dockyard/pip.lock" in log
    assert second.lock == first.lock and second.digest != first.digest
    installed = freeze(engine, first.digest)
    assert any(p.startswith("six==") for p in installed)
    assert freeze(engine, second.digest) == installed


@pytest.mark.django_db(transaction=True)
def test_a_package_installed_in_a_workspace_is_proposed_and_the_saved_revision_contains_it(
    portal, people, small, engine, env_slug, echo_base
):
    alice, token = people["alice"], people["tokens"]["alice"]
    first = build_environment(define(env_slug, echo_base, alice, pip=("six",), profile=small), alice)
    client = portal.client(authorization=f"Bearer {token}")
    workspace = client.post(
        "/api/v1/workspaces/", json={"name": "saver", "environment": first.ref, "team": "demo"}
    ).json()
    wait_state(portal, token, workspace["id"], "running")
    assert workspace["environment"] == first.ref and workspace["image_digest"] == first.digest
    container = engine.containers.get(f"dockyard-{workspace['id']}")
    installed = container.exec_run(["pip", "install", "idna==3.10"], user="1000:100")
    assert installed.exit_code == 0, installed.output.decode()[-2000:]

    proposal = client.get(f"/api/v1/environments/from-workspace/{workspace['id']}/").json()
    assert proposal["proposed"] == ["idna==3.10"] and proposal["added"] == ["idna==3.10"]
    saved = client.post(f"/api/v1/environments/from-workspace/{workspace['id']}/", json={"environment": env_slug})
    assert saved.status_code == 201, saved.text

    second = build_now(ImageBuild.objects.get(pk=saved.json()["build"]["id"]))
    assert (second.number, second.origin, second.pip_requirements) == (2, "workspace", ["six", "idna==3.10"])
    assert any(line.startswith("idna==3.10 --hash=sha256:") for line in second.lock)
    assert "idna==3.10" in freeze(engine, second.digest)
    changes = client.get(f"/api/v1/environments/{env_slug}/").json()["revisions"][0]["changes"]
    assert changes["added"] == ["idna==3.10"]


TRAIN = """\
import os
print("greeting", os.environ.get("GREETING"))
print("mode", os.environ["MODE"])
for name in sorted(n for n in os.environ if n.startswith("PARAM_")):
    print(f"{name}={os.environ[name]}")
"""


@pytest.mark.django_db(transaction=True)
def test_a_finished_job_opens_in_a_workspace_with_its_digest_code_and_parameters(
    portal, people, small, engine, env_slug, echo_base
):
    alice, token = people["alice"], people["tokens"]["alice"]
    environment = define(
        env_slug, echo_base, alice, pip=("six",), env={"MODE": "repro"}, startup_script="export GREETING=hello\n"
    )
    revision = build_environment(environment, alice)
    client = portal.client(authorization=f"Bearer {token}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("train.py", TRAIN)
        archive.writestr("data/config.txt", "epochs=3\n")
    spec = {"name": "train", "team": "demo", "environment": revision.ref, "profile": "small",
            "command": ["python3", "/code/train.py"], "parameters": {"lr": 0.1, "epochs": 3}}  # fmt: skip
    response = client.post("/api/v1/jobs/", data={"spec": json.dumps(spec)}, files={"code": ("c.zip", code.getvalue())})
    assert response.status_code == 201, response.text
    job = wait_job(portal, token, response.json()["id"], ["succeeded", "failed"])
    assert job["state"] == "succeeded", job
    log = client.get(f"/api/v1/jobs/{job['id']}/logs").text.splitlines()
    assert log[:2] == ["greeting hello", "mode repro"]  # the start-up script ran before the command
    job_params = dict(line.split("=", 1) for line in log if line.startswith("PARAM_"))

    opened = client.post(f"/api/v1/jobs/{job['id']}/workspace/", json={})
    assert opened.status_code == 201, opened.text
    workspace = wait_state(portal, token, opened.json()["id"], "running")

    assert workspace["image_digest"] == job["image_digest"] == revision.digest
    assert (workspace["environment"], workspace["source_job"]) == (revision.ref, job["id"])
    container = engine.containers.get(f"dockyard-{workspace['id']}")
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert {k: v for k, v in env.items() if k.startswith("PARAM_")} == job_params == {"PARAM_EPOCHS": "3",
                                                                                      "PARAM_LR": "0.1"}  # fmt: skip
    assert env["MODE"] == "repro"
    stream, _ = container.get_archive("/code")
    with Job.objects.get(pk=job["id"]).code.file.open("rb") as original:
        assert _content_checksum(b"".join(stream)) == archives.content_checksum(original)
    assert container.exec_run(["touch", "/code/new.txt"], user="1000:100").exit_code != 0


def _content_checksum(container_tar: bytes) -> str:
    """The checksum jobs use for code, of a tar of /code read from a container."""
    relative = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(container_tar)) as source, tarfile.open(fileobj=relative, mode="w") as out:
        for member in source:
            if member.isfile():
                data = source.extractfile(member).read()
                member.name = member.name.split("/", 1)[1]
                out.addfile(member, io.BytesIO(data))
    relative.seek(0)
    return archives.content_checksum(relative)


@pytest.mark.django_db
def test_export_then_import_on_a_clean_team_gives_the_same_lock_and_base_digest(
    api, alice, carol, env_slug, echo_base, engine
):
    original = build_environment(define(env_slug, echo_base, alice, pip=("six",)), alice)

    exported = api(alice).get(f"/api/v1/environments/{env_slug}/export")
    assert exported.status_code == 200
    copy = f"{env_slug}-c"
    response = api(carol).post(
        "/api/v1/environments/import", {"team": "research", "yaml": exported.content.decode(), "slug": copy},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    imported = build_environment(Environment.objects.get(slug=copy), carol)

    assert imported.environment.team.slug == "research"
    assert imported.lock == original.lock and imported.from_lock == original.lock
    assert imported.base_digest == original.base_digest
    assert freeze(engine, imported.digest) == freeze(engine, original.digest)
    engine.images.remove(f"dockyard/{env_services.IMAGE_PREFIX}{copy}:r1", force=True)


@pytest.mark.django_db(transaction=True)
def test_secret_values_never_appear_in_api_output_pages_logs_exports_or_audit(
    portal, people, small, engine, env_slug, echo_base, tmp_path, client
):
    alice, token = people["alice"], people["tokens"]["alice"]
    environment = define(
        env_slug, echo_base, alice, pip=("six",), env={"MODE": "x"}, secret_env={"API_TOKEN": SECRET}, profile=small
    )
    revision = build_environment(environment, alice)
    api = portal.client(authorization=f"Bearer {token}")
    check = "import hashlib, os; print(hashlib.sha256(os.environ['API_TOKEN'].encode()).hexdigest())"
    job = submit(api, name="uses-secret", team="demo", environment=revision.ref, command=["python3", "-c", check])
    job = wait_job(portal, token, job["id"], ["succeeded", "failed"])
    job_log = api.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert job_log.strip() == hashlib.sha256(SECRET.encode()).hexdigest()  # the container had the value

    client.force_login(alice)
    seen = {
        "api list": api.get("/api/v1/environments/").text,
        "api detail": api.get(f"/api/v1/environments/{env_slug}/").text,
        "api job": api.get(f"/api/v1/jobs/{job['id']}/").text,
        "export": api.get(f"/api/v1/environments/{env_slug}/export").text,
        "page detail": client.get(f"/environments/{env_slug}/").content.decode(),
        "page revise": client.get(f"/environments/{env_slug}/revise/").content.decode(),
        "page job": client.get(f"/jobs/{job['id']}/").content.decode(),
        "build log": "\n".join(
            ImageBuild.objects.filter(revision__image=environment.image).values_list("log", flat=True)
        ),
        "job log": job_log,
        "audit": json.dumps(list(AuditEvent.objects.values("action", "details")), default=str),
        "portal logs": "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log")),
        "image": json.dumps(engine.images.get(revision.digest).attrs),
    }
    assert "API_TOKEN" in seen["api detail"] and "API_TOKEN" in seen["export"]
    assert "API_TOKEN=********" in seen["page detail"]
    leaks = [where for where, text in seen.items() if SECRET in text]
    assert leaks == []


@pytest.mark.django_db(transaction=True)
def test_another_team_cannot_see_or_launch_a_team_environment(portal, people, small, env_slug, echo_base, carol):
    alice, bob = people["alice"], people["bob"]
    revision = build_environment(define(env_slug, echo_base, alice, pip=("six",), profile=small), alice)
    outsider = portal.client(authorization=f"Bearer {token_for(carol)}")
    teammate = portal.client(authorization=f"Bearer {people['tokens']['bob']}")

    assert env_slug not in outsider.get("/api/v1/environments/").text
    assert outsider.get(f"/api/v1/environments/{env_slug}/").status_code == 404
    assert outsider.get(f"/api/v1/environments/{env_slug}/export").status_code == 404
    workspace = outsider.post("/api/v1/workspaces/", json={"name": "x", "environment": revision.ref,
                                                           "team": "research", "profile": "small"})  # fmt: skip
    job = outsider.post("/api/v1/jobs/", json={"name": "x", "environment": revision.ref, "team": "research",
                                               "profile": "small", "command": "true"})  # fmt: skip
    assert (workspace.status_code, job.status_code) == (400, 400)
    assert "you can use" in workspace.json()["detail"] and env_slug in workspace.json()["detail"]
    assert not Job.objects.filter(owner=carol).exists()
    assert teammate.get(f"/api/v1/environments/{env_slug}/").status_code == 200

    private = define(f"{env_slug}-p", echo_base, bob, shared=False)
    assert teammate.get(f"/api/v1/environments/{private.slug}/").status_code == 200
    alice_client = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    assert alice_client.get(f"/api/v1/environments/{private.slug}/").status_code == 404


@pytest.fixture
def carol(transactional_db, research_team):
    user = UserFactory(username="carol")
    MembershipFactory(user=user, team=research_team, role=Role.TEAM_ADMIN)
    return user
