"""The job API's edges: bad specs, profiles that can never run, quota queueing, visibility,
secrets, code archives, sweeps (no containers needed: nothing is committed, so no task runs)."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Experiment, Job
from portal.audit.models import AuditEvent
from portal.core.secrets import secrets_open
from portal.quotas.models import QueuedRequest, ResourceProfile, TeamQuota
from tests.factories import MembershipFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def small(db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=2)


def body(**overrides):
    return {"name": "train", "image": "python-minimal", "profile": "small", "team": "demo",
            "command": ["python3", "train.py"], **overrides}  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"command": []}, "command"),
        ({"command": ["python3", 3]}, "command"),
        ({"command": "   "}, "command"),
        ({"parameters": {"bad name": 1}}, "parameters"),
        ({"parameters": {"lr": [1, 2]}}, "parameters"),
        ({"env": {"PARAM_X": "1"}}, "env"),
        ({"env": {"A": "1"}, "secret_env": {"A": "2"}}, "secret_env"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"max_retries": 99}, "max_retries"),
        ({"priority": 5}, "priority"),
        ({"image": "nope"}, "image"),
        ({"profile": "huge"}, "profile"),
        ({"team": "other"}, "team"),
        ({"is_staff": True}, "is_staff"),
    ],
)
def test_invalid_specs_are_refused_naming_the_field(api, bob, ready_image, small, overrides, field):
    TeamFactory(slug="other")
    response = api(bob).post("/api/v1/jobs/", body(**overrides), format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert not Job.objects.exists() and not QueuedRequest.objects.exists()


def test_a_profile_over_the_hard_limits_is_refused_but_current_usage_only_queues(api, alice, ready_image, small):
    TeamQuota.objects.update_or_create(team=alice.memberships.get().team, defaults={"cpus": 4, "max_jobs": 0})
    ResourceProfile.objects.create(slug="big", name="Big", cpus=8, memory_gib=2)
    response = api(alice).post("/api/v1/jobs/", body(profile="big"), format="json")
    assert response.status_code == 400 and "can never run here" in response.json()["errors"]["profile"][0]

    TeamQuota.objects.filter(team__slug="demo").update(max_jobs=1)
    gpu = ResourceProfile.objects.create(slug="gpu-1", name="GPU", cpus=1, memory_gib=2, gpus=1)
    response = api(alice).post("/api/v1/jobs/", body(profile=gpu.slug), format="json")
    assert response.status_code == 400 and "no node has 1 GPUs" in response.json()["detail"]

    response = api(alice).post("/api/v1/jobs/", body(), format="json")
    assert response.status_code == 201 and response.json()["state"] == "queued"
    assert QueuedRequest.objects.filter(workload_uid=response.json()["id"], state="waiting").exists()


def test_secret_values_are_stored_encrypted_and_never_shown(api, alice, ready_image, small):
    response = api(alice).post(
        "/api/v1/jobs/", body(env={"MODE": "fast"}, secret_env={"WANDB_KEY": "s3cr3t-value"}), format="json"
    )
    assert response.status_code == 201
    data = response.json()
    assert data["env"] == {"MODE": "fast"} and data["secret_env"] == {"WANDB_KEY": "********"}
    job = Job.objects.get(pk=data["id"])
    assert "s3cr3t" not in job.secret_env and secrets_open(job.secret_env) == {"WANDB_KEY": "s3cr3t-value"}
    for text in (json.dumps(api(alice).get(f"/api/v1/jobs/{job.pk}/").json()),
                 json.dumps(list(AuditEvent.objects.values_list("details", flat=True)))):  # fmt: skip
        assert "s3cr3t" not in text

    rerun = api(alice).post(f"/api/v1/jobs/{job.pk}/rerun/").json()
    assert secrets_open(Job.objects.get(pk=rerun["id"]).secret_env) == {"WANDB_KEY": "s3cr3t-value"}


def test_jobs_are_visible_to_the_team_only(api, alice, bob, ready_image, small):
    job_id = api(alice).post("/api/v1/jobs/", body(), format="json").json()["id"]
    outsider = UserFactory(username="eve")
    MembershipFactory(user=outsider, team=TeamFactory(slug="elsewhere"))
    assert api(bob).get(f"/api/v1/jobs/{job_id}/").status_code == 200
    assert api(outsider).get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert api(outsider).get("/api/v1/jobs/").json() == []
    assert api(bob).post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 403
    denied = AuditEvent.objects.filter(action="job.cancel", outcome="denied")
    assert denied.count() == 1 and denied.get().actor_name == "bob"


def test_cancelling_a_queued_job_takes_it_out_of_the_queue(api, alice, ready_image, small):
    job_id = api(alice).post("/api/v1/jobs/", body(), format="json").json()["id"]
    response = api(alice).post(f"/api/v1/jobs/{job_id}/cancel/")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert not QueuedRequest.objects.filter(workload_uid=job_id, state="waiting").exists()
    assert api(alice).post(f"/api/v1/jobs/{job_id}/cancel/").status_code == 409


def test_list_filters_and_constant_query_count(api, alice, ready_image, small):
    client = api(alice)

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/api/v1/jobs/?team=demo").status_code == 200
        return len(queries)

    client.post("/api/v1/jobs/", body(), format="json")
    one = count_queries()
    for index in range(5):
        client.post("/api/v1/jobs/", body(name=f"t{index}", parameters={"i": index}), format="json")
    assert count_queries() == one
    assert len(client.get("/api/v1/jobs/?state=queued").json()) == 6
    assert client.get("/api/v1/jobs/?state=running").json() == []
    assert client.get("/api/v1/jobs/?state=bogus").status_code == 400
    positions = sorted(j["queue_position"] for j in client.get("/api/v1/jobs/").json())
    assert positions == [1, 2, 3, 4, 5, 6]


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_code_archives_are_checked_and_recorded_with_their_checksum(api, alice, ready_image, small, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    client = api(alice)
    data = _zip({"train.py": b"print('hi')\n", "lib/util.py": b"X = 1\n"})
    upload = io.BytesIO(data)
    upload.name = "code.zip"
    response = client.post("/api/v1/jobs/", {"spec": json.dumps(body()), "code": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    import hashlib

    assert response.json()["code_sha256"] == hashlib.sha256(data).hexdigest()
    assert response.json()["code_source"] == "upload: code.zip"

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../../etc/cron.d/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    evil.seek(0)
    evil.name = "evil.tar"
    response = client.post("/api/v1/jobs/", {"spec": json.dumps(body()), "code": evil}, format="multipart")
    assert response.status_code == 400 and "outside" in response.json()["errors"]["code"][0]

    junk = io.BytesIO(b"not an archive at all")
    junk.name = "junk.bin"
    response = client.post("/api/v1/jobs/", {"spec": json.dumps(body()), "code": junk}, format="multipart")
    assert response.status_code == 400 and "code" in response.json()["errors"]
    assert Job.objects.count() == 1


def test_sweeps_make_one_job_per_point_or_nothing(api, alice, ready_image, small):
    client = api(alice)
    grid = {"grid": {"lr": [0.1, 0.01], "layers": [1, 2, 3]}}
    response = client.post("/api/v1/experiments/", {**body(name="sweep"), "sweep": grid}, format="json")
    assert response.status_code == 201, response.json()
    experiment = Experiment.objects.get()
    params = sorted((j.parameters["lr"], j.parameters["layers"]) for j in experiment.jobs.all())
    assert params == [(0.01, 1), (0.01, 2), (0.01, 3), (0.1, 1), (0.1, 2), (0.1, 3)]
    assert len(response.json()["jobs"]) == 6

    sample = {"random": {"samples": 5, "seed": 7, "ranges": {"lr": {"min": 1e-4, "max": 1e-1, "log": True},
                                                               "opt": {"values": ["sgd", "adam"]}}}}  # fmt: skip
    first = client.post("/api/v1/experiments/", {**body(name="rand"), "sweep": sample}, format="json").json()
    again = client.post("/api/v1/experiments/", {**body(name="rand2"), "sweep": sample}, format="json").json()
    assert [j["parameters"] for j in first["jobs"]] == [j["parameters"] for j in again["jobs"]], "seeded"
    assert all(1e-4 <= j["parameters"]["lr"] <= 1e-1 for j in first["jobs"])

    before = Job.objects.count()
    for bad in ({"grid": {"lr": []}}, {"grid": {"x": list(range(300))}}, {"random": {"samples": 0, "ranges": {}}},
                {"other": {}}):  # fmt: skip
        response = client.post("/api/v1/experiments/", {**body(name="bad"), "sweep": bad}, format="json")
        assert response.status_code == 400 and "sweep" in response.json()["errors"], response.json()
    assert Job.objects.count() == before


def test_a_job_on_several_nodes_needs_kubernetes_and_is_admitted_for_all_its_pods(
    api, alice, ready_image, small, settings
):
    response = api(alice).post("/api/v1/jobs/", body(nodes=2), format="json")
    assert response.status_code == 400 and "Kubernetes" in response.json()["errors"]["nodes"][0]
    settings.DOCKYARD_RUNTIME = "kubernetes"
    assert api(alice).post("/api/v1/jobs/", body(nodes=99), format="json").status_code == 400
    TeamQuota.objects.update_or_create(team=alice.memberships.get().team, defaults={"cpus": 3})
    response = api(alice).post("/api/v1/jobs/", body(nodes=4), format="json")
    assert response.status_code == 400 and "x 4 nodes can never run here" in response.json()["detail"]
    response = api(alice).post("/api/v1/jobs/", body(nodes=2), format="json")
    assert response.status_code == 201 and response.json()["nodes"] == 2
    entry = QueuedRequest.objects.get(workload_uid=response.json()["id"])
    assert (entry.cpus, entry.memory_gib) == (2, 4), "two pods of the small profile"
