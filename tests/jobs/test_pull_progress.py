"""A workload whose pinned image is no longer on the engine is pulled again by its catalog
reference, and its owner sees the pull's percentage, as catalog pulls show it.

No registry is reachable from the test machine, so a stand-in backend plays the engine: it
misses the digest and reports a pull's progress the way DockerBackend._pull does."""

from __future__ import annotations

import pytest

from jobs import services
from jobs.models import Job, JobState
from portal.catalog.models import ImageRevision, SourceType
from portal.runtime.base import Handle, ImageInfo, Progress, RuntimeError_

pytestmark = pytest.mark.django_db
DIGEST = "sha256:" + "c" * 64
REF = "localhost:5000/tiny:1"  # never contacted: the stand-in answers for it


class PullingEngine:
    """Has no image by digest; pulling REF gives DIGEST after reporting 0% .. 100%."""

    name = "stand-in"
    starts_at_once = True

    def __init__(self, pulled_digest: str = DIGEST):
        self.pulled_digest = pulled_digest
        self.pulls: list[str] = []

    def ensure_image(self, ref, on_progress=None):
        if ref.startswith("sha256:"):
            raise RuntimeError_(f"image {ref} is not on this engine", reason="image_missing", permanent=True)
        self.pulls.append(ref)
        for percent in (None, 0.0, 3.0, 42.0, 42.4, 77.0, 100.0):
            on_progress(Progress(percent, "layer Downloading"))
        return ImageInfo(digest=self.pulled_digest, size_bytes=1, reference=ref)

    def handle_for(self, uid):
        return Handle(uid=uid, name=f"dockyard-{uid}")

    def start(self, spec):
        return self.handle_for(spec.uid)

    def remove(self, handle, keep_data=True):
        """Nothing was started: nothing to remove."""


def _admitted_job(api, user) -> Job:
    body = {"name": "t", "image": "python-minimal", "profile": "small", "team": "demo", "command": ["true"]}
    response = api(user).post("/api/v1/jobs/", body, format="json")
    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    ImageRevision.objects.filter(pk=job.image_revision_id).update(source_type=SourceType.PULL, pull_ref=REF)
    Job.objects.filter(pk=job.pk).update(state=JobState.ADMITTED)  # as admission leaves it
    return job


def test_a_start_that_must_pull_shows_the_pull_percentage(api, alice, web, ready_image, small, monkeypatch):
    job = _admitted_job(api, alice)
    engine = PullingEngine()
    monkeypatch.setattr(services, "get_backend", lambda: engine)

    assert services.job_run_start(job_id=job.uid) is True
    assert engine.pulls == [REF]
    detail = api(alice).get(f"/api/v1/jobs/{job.pk}/").json()
    assert detail["state"] == "running"
    pulling = [e["message"] for e in detail["events"] if e["message"].startswith("Pulling image")]
    assert pulling == ["Pulling image: 0%", "Pulling image: 42%", "Pulling image: 77%", "Pulling image: 100%"]
    page = web(alice).get(f"/jobs/{job.pk}/").content.decode()
    assert "Pulling image: 42%" in page


def test_a_pull_that_gives_another_image_than_the_pinned_one_fails_the_start_clearly(
    api, alice, ready_image, small, monkeypatch
):
    job = _admitted_job(api, alice)
    monkeypatch.setattr(services, "get_backend", lambda: PullingEngine(pulled_digest="sha256:" + "d" * 64))

    assert services.job_run_start(job_id=job.uid) is False
    job.refresh_from_db()
    assert job.state == JobState.FAILED
    assert job.error_message.startswith(f"{REF} now names a different image than the one this job was pinned to")
