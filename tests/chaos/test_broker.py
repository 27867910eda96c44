"""A broker outage: the web stays up and says so, work submitted meanwhile runs exactly once."""

from __future__ import annotations

import subprocess

import pytest

from jobs.models import Job, JobAttempt
from tests.chaos.conftest import built_image
from tests.processes import free_port, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own, so that stopping it touches nothing else."""
    port = free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--maxmemory-policy", "noeviction", "--dir", str(tmp_path)]  # fmt: skip

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        process: subprocess.Popen | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            import redis

            wait_for(lambda: redis.Redis(port=port).ping(), timeout=20, what="Redis to answer")

        def stop(self) -> None:
            self.process.terminate()
            self.process.wait(timeout=20)

    server = Server()
    server.start()
    yield server
    if server.process.poll() is None:
        server.stop()


@pytest.fixture
def chaos_env(own_redis) -> dict[str, str]:
    return {
        "REDIS_URL": own_redis.url,
        "DOCKYARD_ADMISSION_PASS_INTERVAL_S": "1",
        "DOCKYARD_RECONCILE_INTERVAL_S": "2",
        "DOCKYARD_JOB_WATCH_BEAT_S": "1",
    }


def test_with_redis_down_a_submitted_job_is_accepted_and_runs_exactly_once_when_it_is_back(
    own_redis, processes, people, small, image_slug
):
    image = built_image(image_slug)
    processes.start_worker()
    processes.start_beat()
    token = people["tokens"]["alice"]
    api = processes.portal.client(authorization=f"Bearer {token}")
    wait_for(lambda: api.get("/readyz").status_code == 200, timeout=60, what="the portal to be ready")

    own_redis.stop()
    readiness = api.get("/readyz")
    assert readiness.status_code == 503 and readiness.json()["broker"] != "ok"
    response = api.post("/api/v1/jobs/", json={"name": "offline", "team": "demo", "image": image.slug,
                                               "profile": "small", "command": "echo ran once"})  # fmt: skip
    assert response.status_code == 201 and response.json()["state"] == "queued"

    own_redis.start()
    wait_for(lambda: Job.objects.get(pk=response.json()["id"]).state == "succeeded", timeout=120,
             what="the job to run once the broker is back")  # fmt: skip
    attempts = JobAttempt.objects.filter(job_id=response.json()["id"])
    assert attempts.count() == 1 and attempts.get().log.strip() == "ran once"
