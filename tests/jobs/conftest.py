"""Jobs run for real: uvicorn and a Celery worker on the test database, containers on the
engine, from an image built from the local base (cached by the engine)."""

from __future__ import annotations

import pytest

from tests.processes import wait_for
from tests.workspaces.conftest import Portal, built_image, people, portal, small  # noqa: F401  (fixtures)

# Short waits so retries and watching take a moment, not minutes.
BACKOFF_S = 0.5


@pytest.fixture
def make_ready_image(make_image):
    """A catalog image marked built at `digest`, with no engine involved (for tests that never
    run its container, or run it on the fake Kubernetes API)."""
    from portal.catalog.models import Image, ImageRevision, ImageStatus

    def make(slug: str, digest: str = "sha256:" + "c" * 64) -> Image:
        image = make_image(slug)
        revision = image.revisions.get()
        ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest=digest)
        Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
        return Image.objects.get(pk=image.pk)

    return make


@pytest.fixture
def ready_image(make_ready_image):
    """A jobs-only image (no workspace command), built as far as the catalog knows."""
    return make_ready_image("python-minimal")


@pytest.fixture
def portal_env(tmp_path, settings) -> dict[str, str]:
    media = tmp_path / "media"
    settings.MEDIA_ROOT = str(media)
    return {
        "DOCKYARD_MEDIA_ROOT": str(media),
        "DOCKYARD_JOB_WATCH_S": "0.2",
        "DOCKYARD_JOB_METRICS_INTERVAL_S": "0.5",
        "DOCKYARD_JOB_RETRY_BACKOFF_S": str(BACKOFF_S),
        "DOCKYARD_JOB_STOP_GRACE_S": "1",
    }


@pytest.fixture
def python_image(transactional_db, image_slug):
    """Like the demo's python-minimal: Debian with python3, no default command (jobs only)."""
    return built_image(image_slug)


def submit(client, **spec) -> dict:
    response = client.post("/api/v1/jobs/", json=spec)
    assert response.status_code == 201, response.text
    return response.json()


def wait_job(target: Portal, token: str, job_id, states, timeout: float = 90) -> dict:
    states = {states} if isinstance(states, str) else set(states)
    client = target.client(authorization=f"Bearer {token}")

    def check():
        data = client.get(f"/api/v1/jobs/{job_id}/").json()
        return data if data["state"] in states else None

    return wait_for(check, timeout=timeout, what=f"job {job_id} to be {' or '.join(sorted(states))}")
