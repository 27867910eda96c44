"""Building and pulling catalog images on the real engine."""

from __future__ import annotations

import re
import uuid

import pytest
from django.core.exceptions import ValidationError

from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.catalog import services
from portal.catalog.models import Image, ImageBuild, ImageStatus, SourceType
from portal.catalog.services import SourceSpec
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import State, WorkloadSpec
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import celery_worker_args, env_on_test_database, running, wait_for
from tests.runtime.test_docker import REPORT

pytestmark = pytest.mark.docker


def build_now(image: Image) -> ImageBuild:
    build = services.image_build(image=image, by=None, actor=Actor.system())
    services.build_run(build_id=build.pk)
    build.refresh_from_db()
    return build


@pytest.mark.django_db(transaction=True)
def test_python_minimal_builds_through_a_real_worker_and_runs_hardened(make_image, image_slug, engine, tmp_path):
    image = make_image(image_slug)
    build = services.image_build(image=image, by=None, actor=Actor.system())
    assert Image.objects.get(pk=image.pk).status == ImageStatus.BUILDING

    worker = celery_worker_args(f"builds-{uuid.uuid4().hex[:6]}", queues="builds")
    with running(worker, env=env_on_test_database(), log=tmp_path / "worker.log"):
        wait_for(
            lambda: ImageBuild.objects.get(pk=build.pk).status == ImageBuild.Status.SUCCEEDED,
            timeout=300,
            what="the build to succeed (worker log: %s)" % (tmp_path / "worker.log"),
        )

    image.refresh_from_db()
    revision = image.current_revision
    build.refresh_from_db()
    assert image.status == ImageStatus.READY
    assert revision.digest.startswith("sha256:") and revision.size_bytes > 0
    assert "Step 1/" in build.log and build.progress == 100
    assert ["pip", revision.packages[0][1]] in revision.packages or any(p[0] == "pip" for p in revision.packages)
    assert AuditEvent.objects.filter(action="image.build_finish", outcome="ok", target_id=str(image.pk)).count() == 1

    spec = WorkloadSpec(
        uid=str(uuid.uuid4()), kind="probe", owner="root", team="demo", image=revision.digest,
        command=("sh", "-c", REPORT), cpus=0.5, memory_mib=128, pids_limit=64, labels={RUN_LABEL: TEST_RUN},
    )  # fmt: skip
    backend = get_backend()
    handle = backend.start(spec)
    wait_for(lambda: backend.inspect(handle).state == State.EXITED, timeout=60, what="the workload to finish")
    output = "\n".join(backend.logs(handle))
    assert output.splitlines()[0] == "1000"
    assert re.search(r"^CapEff:\s+0{16}$", output, re.M)
    assert re.search(r"^NoNewPrivs:\s+1$", output, re.M)
    assert str(128 * 1024 * 1024) in output and "pids=64" in output and "cpu=50000" in output


@pytest.mark.django_db
def test_failed_build_keeps_its_log_and_the_previous_digest(make_image, image_slug):
    image = make_image(image_slug)
    assert build_now(image).status == ImageBuild.Status.SUCCEEDED
    image.refresh_from_db()
    good_digest = image.digest

    source = SourceSpec(
        source_type=SourceType.BUILD,
        base_image=image.current_revision.base_image,
        pip_requirements=("dockyard-no-such-package-0000",),
    )
    services.image_revise(image=image, source=source, by=None, actor=Actor.system())
    failed = build_now(image)

    image.refresh_from_db()
    assert failed.status == ImageBuild.Status.FAILED
    assert failed.revision.number == 2 and failed.revision.status == "failed"
    assert "dockyard-no-such-package-0000" in failed.log
    assert failed.error
    assert image.status == ImageStatus.READY
    assert image.digest == good_digest
    assert services.image_require_startable(image=image).number == 1
    event = AuditEvent.objects.filter(action="image.build_finish").order_by("-id").first()
    assert event.outcome == "error"


@pytest.mark.django_db(transaction=True)
def test_build_past_its_time_limit_fails_and_its_log_says_why(make_image, image_slug, settings):
    settings.DOCKYARD_BUILD_TIMEOUT_S = 0  # stopped as soon as the engine starts it
    image = make_image(image_slug)

    build = build_now(image)

    message = "The build ran past its time limit of 0 s and was stopped."
    assert build.status == ImageBuild.Status.FAILED
    assert build.error == message
    assert build.log.rstrip().endswith(message)
    event = AuditEvent.objects.filter(action="image.build_finish").order_by("-id").first()
    assert event.outcome == "error" and event.details["error"] == message


@pytest.mark.django_db
def test_second_build_request_while_one_is_queued_returns_the_same_build(make_image, image_slug):
    image = make_image(image_slug)

    first = services.image_build(image=image, by=None, actor=Actor.system())
    second = services.image_build(image=image, by=None, actor=Actor.system())

    assert first.pk == second.pk
    assert ImageBuild.objects.filter(revision__image=image).count() == 1


@pytest.mark.django_db
def test_a_build_redelivered_after_it_finished_does_nothing(make_image, image_slug):
    image = make_image(image_slug)
    build = build_now(image)
    log = build.log

    services.build_run(build_id=build.pk)

    build.refresh_from_db()
    assert (build.status, build.log) == (ImageBuild.Status.SUCCEEDED, log)


@pytest.mark.django_db
def test_deprecated_image_refuses_new_work_and_names_its_successor(make_image, image_slug):
    image = make_image(image_slug)
    build_now(image)
    successor = make_image(image_slug + "-next")
    image.refresh_from_db()

    services.image_deprecate(image=image, successor=successor, message="Moved to 3.12.", actor=Actor.system())

    with pytest.raises(ValidationError) as refused:
        services.image_require_startable(image=image)
    assert f"Use {successor.slug} instead" in str(refused.value)
    assert image.current_revision.digest  # reruns still find the exact digest


@pytest.mark.django_db
def test_an_image_that_never_built_is_not_startable(make_image, image_slug):
    image = make_image(image_slug)
    with pytest.raises(ValidationError, match="not ready yet"):
        services.image_require_startable(image=image)


def test_pull_from_an_unreachable_registry_fails_with_a_readable_reason():
    progress = []
    with pytest.raises(RuntimeError_) as raised:
        get_backend().ensure_image("registry.invalid/nothing:1", on_progress=progress.append)

    assert raised.value.reason == "pull_failed"
    assert "could not be pulled" in raised.value.user_message
