"""Jobs end to end on the real engine: logs, metrics, outputs, retries, timeouts, cancel, OOM."""

from __future__ import annotations

import itertools

import pytest

from jobs.models import Job, JobAttempt
from portal.audit.models import AuditEvent
from portal.quotas.models import Allocation, ResourceProfile
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.jobs.conftest import BACKOFF_S, submit, wait_job

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

TRAIN = """
import json, sys
print("epoch 1 starting")
with open("/output/metrics.jsonl", "a") as f:
    for step in range(1, 4):
        f.write(json.dumps({"step": step, "loss": 1.0 / step, "acc": step / 4}) + "\\n")
open("/output/model.txt", "w").write("weights v1")
print("done", flush=True)
"""


def _containers(engine, job_id):
    return engine.containers.list(all=True, filters={"label": [f"dockyard.uid={job_id}", f"{RUN_LABEL}={TEST_RUN}"]})


def test_job_succeeds_keeps_logs_metrics_and_outputs(portal, people, small, python_image, engine):
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    job = submit(alice, name="train", team="demo", image=python_image.slug, profile="small",
                 command=["python3", "-c", TRAIN])  # fmt: skip
    assert job["state"] == "queued"
    done = wait_job(portal, people["tokens"]["alice"], job["id"], ["succeeded", "failed"])
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0 and done["image_digest"] == python_image.current_revision.digest
    assert not _containers(engine, job["id"]), "the container is removed once the job ended"
    assert not engine.volumes.list(filters={"name": f"dockyard-{job['id']}-output"}), "outputs copied: volume gone"

    log = alice.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert log.splitlines() == ["epoch 1 starting", "done"]

    metrics = alice.get(f"/api/v1/jobs/{job['id']}/metrics").json()
    assert metrics["metrics"]["loss"] == [[1, 1.0], [2, 0.5], [3, 1 / 3]]
    assert metrics["last"] == {"loss": 1 / 3, "acc": 0.75}
    assert alice.get("/api/v1/jobs/").json()[0]["metrics_last"] == {"loss": 1 / 3, "acc": 0.75}

    outputs = alice.get(f"/api/v1/jobs/{job['id']}/outputs/").json()
    assert {o["path"] for o in outputs} == {"metrics.jsonl", "model.txt"}
    download = alice.get(f"/api/v1/jobs/{job['id']}/outputs/model.txt")
    assert download.status_code == 200 and download.content == b"weights v1"
    assert alice.get(f"/api/v1/jobs/{job['id']}/outputs/../../etc/passwd").status_code == 404

    actions = set(AuditEvent.objects.filter(target_id=job["id"]).values_list("action", flat=True))
    assert {"job.submit", "job.admitted", "job.starting", "job.running", "job.succeeded",
            "job.output_download"} <= actions  # fmt: skip
    assert not Allocation.objects.filter(workload_uid=job["id"], closed_at__isnull=True).exists()


def test_failing_job_is_retried_with_backoff_then_fails(portal, people, small, python_image):
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    job = submit(alice, name="flaky", team="demo", image=python_image.slug, profile="small",
                 command='echo "attempt $DOCKYARD_JOB_ATTEMPT"; exit 3', max_retries=2)  # fmt: skip
    done = wait_job(portal, people["tokens"]["alice"], job["id"], "failed")
    assert done["exit_code"] == 3 and done["attempt"] == 3
    attempts = list(JobAttempt.objects.filter(job_id=job["id"]).order_by("number"))
    assert [(a.number, a.exit_code, a.log.strip()) for a in attempts] == [
        (1, 3, "attempt 1"), (2, 3, "attempt 2"), (3, 3, "attempt 3")
    ]  # fmt: skip
    gaps = [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= BACKOFF_S and gaps[1] >= 2 * BACKOFF_S, gaps
    log = alice.get(f"/api/v1/jobs/{job['id']}/logs").text
    assert log.splitlines() == ["attempt 1", "--- attempt 2 ---", "attempt 2", "--- attempt 3 ---", "attempt 3"]


def test_timeout_kills_the_job(portal, people, small, python_image, engine):
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    job = submit(alice, name="slow", team="demo", image=python_image.slug, profile="small",
                 command=["sleep", "300"], timeout_s=1, max_retries=2)  # fmt: skip
    done = wait_job(portal, people["tokens"]["alice"], job["id"], ["timed_out", "failed", "succeeded"])
    assert done["state"] == "timed_out" and done["reason"] == "timeout" and done["attempt"] == 1
    assert not _containers(engine, job["id"])
    assert not Allocation.objects.filter(workload_uid=job["id"], closed_at__isnull=True).exists()


def test_cancel_while_running_releases_the_allocation(portal, people, small, python_image, engine):
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    job = submit(alice, name="long", team="demo", image=python_image.slug, profile="small",
                 command='echo started; sleep 300')  # fmt: skip
    wait_job(portal, people["tokens"]["alice"], job["id"], "running")
    bob = portal.client(authorization=f"Bearer {people['tokens']['bob']}")
    assert bob.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 403, "a plain teammate cannot cancel"
    response = alice.post(f"/api/v1/jobs/{job['id']}/cancel/")
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    from tests.processes import wait_for

    wait_for(lambda: not Allocation.objects.filter(workload_uid=job["id"], closed_at__isnull=True).exists(),
             timeout=30, what="the allocation to be released")  # fmt: skip
    assert not _containers(engine, job["id"])
    assert alice.post(f"/api/v1/jobs/{job['id']}/cancel/").status_code == 409
    assert "started" in alice.get(f"/api/v1/jobs/{job['id']}/logs").text


def test_memory_hog_fails_oomkilled(portal, people, python_image):
    ResourceProfile.objects.create(slug="tiny", name="Tiny", cpus=1, memory_gib="0.1")
    alice = portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    job = submit(alice, name="hog", team="demo", image=python_image.slug, profile="tiny",
                 command=["python3", "-c", "x = bytearray(512 * 1024 * 1024); print(len(x))"])  # fmt: skip
    done = wait_job(portal, people["tokens"]["alice"], job["id"], ["failed", "succeeded"])
    assert done["state"] == "failed" and done["reason"] == "OOMKilled", done
    assert Job.objects.get(pk=job["id"]).attempts.get().reason == "OOMKilled"


def test_a_job_whose_secrets_cannot_be_read_fails_with_the_reason(people, small, python_image, settings):
    from cryptography.fernet import Fernet

    from jobs import services
    from jobs.models import JobState
    from portal.audit.services import Actor

    job_spec = services.JobSpec(name="sealed", team=people["alice"].memberships.get().team, profile=small,
                                command=["true"], image=python_image, secret_env={"TOKEN": "x"})  # fmt: skip
    job = services.job_submit(owner=people["alice"], job_spec=job_spec, actor=Actor.system())
    Job.objects.filter(pk=job.pk).update(state=JobState.ADMITTED)
    settings.DOCKYARD_SECRETS_KEY = Fernet.generate_key().decode()  # as if the key had been changed
    assert services.job_run_start(job_id=str(job.pk)) is False
    job.refresh_from_db()
    assert job.state == "failed" and "cannot start" in job.error_message and "DOCKYARD_SECRETS_KEY" in job.error_message
    assert not Allocation.objects.filter(workload_uid=job.pk, closed_at__isnull=True).exists()
