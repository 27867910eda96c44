"""A workload whose pods wait on a cluster (Kueue's queue, the scheduler, an image pull) stays
starting, tells its owner why, and records the node once it runs. The cluster is the fake API
server of tests/runtime (no real cluster can run here; the backend's own tests also run
against a real one when DOCKYARD_TEST_KUBECONFIG is set)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from jobs.models import Job, JobAttempt
from jobs.services import job_run_start, jobs_watch
from portal.audit.services import Actor
from portal.quotas.models import ResourceProfile
from portal.quotas.services.quota import team_quota_set
from portal.runtime import get_backend
from portal.workloads.models import WorkloadEvent
from tests.runtime.k8s_harness import FakeDriver, start_fake
from workspaces.models import Workspace
from workspaces.services import workspace_check_ready, workspace_run_start

pytestmark = pytest.mark.django_db

UNSCHEDULABLE = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


@pytest.fixture
def cluster(tmp_path, settings):
    fake, kubeconfig = start_fake(tmp_path)
    settings.DOCKYARD_RUNTIME, settings.KUBECONFIG, settings.DOCKYARD_K8S_WATCH = "kubernetes", kubeconfig, False
    yield get_backend(), FakeDriver(fake)
    fake.close()


@pytest.fixture
def ready_image(make_ready_image):
    return make_ready_image("trainer", digest="registry.example/trainer@sha256:" + "e" * 64)


@pytest.fixture
def profile():
    return ResourceProfile.objects.create(slug="one", name="One", cpus=1, memory_gib=1)


def _admitted_job(image, profile, owner, team, **fields) -> Job:
    revision = image.current_revision
    return Job.objects.create(owner=owner, team=team, name="train", image=image, image_revision=revision,
                              image_digest=revision.digest, profile=profile, cpus=Decimal(1), memory_gib=Decimal(1),
                              state="admitted", command=["python", "train.py"], **fields)  # fmt: skip


def _messages(workload) -> list[str]:
    return list(
        WorkloadEvent.objects.filter(kind=workload.KIND, uid=workload.pk, step="scheduling")
        .order_by("id").values_list("message", flat=True)
    )  # fmt: skip


def test_a_job_handed_to_kueue_stays_starting_until_admitted_and_its_timeout_starts_then(
    cluster, settings, ready_image, profile, alice, demo_team
):
    backend, driver = cluster
    settings.DOCKYARD_KUEUE_QUEUES = {"demo": "demo-queue"}
    job = _admitted_job(ready_image, profile, alice, demo_team, timeout_s=600)

    assert job_run_start(job_id=job.uid) is False
    jobs_watch()
    jobs_watch()

    job.refresh_from_db()
    assert (job.state, job.error_message, job.error_detail[:1500]) == ("starting", "", "")
    assert job.deadline is None
    assert _messages(job) == ["Waiting: waiting for Kueue admission"], "said once, however often it is looked at"
    assert JobAttempt.objects.get(job=job).started_at is None

    handle = backend.handle_for(job.uid)
    driver.kueue_admits("demo", handle)
    driver.runs(handle)
    before = timezone.now()
    jobs_watch()

    job.refresh_from_db()
    assert job.state == "running" and job.node == "node-a"
    assert job.deadline >= before + timedelta(seconds=600), "the timeout counts from when it runs"
    assert JobAttempt.objects.get(job=job).started_at >= before


def test_an_unschedulable_job_waits_and_says_why(cluster, ready_image, profile, alice, demo_team, client):
    backend, driver = cluster
    job = _admitted_job(ready_image, profile, alice, demo_team)
    job_run_start(job_id=job.uid)

    driver.unschedulable(backend.handle_for(job.uid), UNSCHEDULABLE)
    jobs_watch()

    job.refresh_from_db()
    assert job.state == "starting"
    assert _messages(job) == [f"Waiting: {UNSCHEDULABLE}"]
    assert WorkloadEvent.objects.filter(uid=job.pk, step="scheduling").get().level == "info"
    client.force_login(alice)
    page = client.get(f"/jobs/{job.pk}/")
    assert UNSCHEDULABLE in page.content.decode()


def test_a_job_held_up_by_an_image_pull_error_fails_after_the_start_timeout(
    cluster, settings, ready_image, profile, alice, demo_team
):
    backend, driver = cluster
    job = _admitted_job(ready_image, profile, alice, demo_team)
    job_run_start(job_id=job.uid)
    message = 'Back-off pulling image "registry.example/trainer@sha256:eee"'
    driver.pull_fails(backend.handle_for(job.uid), message)

    jobs_watch()
    job.refresh_from_db()
    assert job.state == "starting"
    assert WorkloadEvent.objects.filter(uid=job.pk, step="scheduling").get().level == "error"

    settings.DOCKYARD_JOB_START_TIMEOUT_S = 0
    jobs_watch()

    job.refresh_from_db()
    assert (job.state, job.reason) == ("failed", "ImagePullBackOff")
    assert message in job.error_message


def test_a_pending_workspace_says_why_it_waits_and_its_timeout_names_it(
    cluster, ready_image, profile, alice, demo_team
):
    backend, driver = cluster
    revision = ready_image.current_revision
    workspace = Workspace.objects.create(owner=alice, team=demo_team, name="w", image=ready_image,
                                         image_revision=revision, image_digest=revision.digest, profile=profile,
                                         cpus=Decimal(1), memory_gib=Decimal(1), state="pending",
                                         jupyter_token="t")  # fmt: skip
    assert workspace_run_start(workspace_id=workspace.uid) is True

    driver.unschedulable(backend.handle_for(workspace.uid), UNSCHEDULABLE)
    assert workspace_check_ready(workspace_id=workspace.uid) is None
    assert workspace_check_ready(workspace_id=workspace.uid) is None
    assert _messages(workspace) == [f"Waiting: {UNSCHEDULABLE}"]

    Workspace.objects.filter(pk=workspace.pk).update(ready_deadline=timezone.now() - timedelta(seconds=1))
    assert workspace_check_ready(workspace_id=workspace.uid) is False

    workspace.refresh_from_db()
    assert workspace.state == "failed"
    assert UNSCHEDULABLE in workspace.error_message


def test_the_image_pull_shows_while_a_job_starts(cluster, ready_image, profile, alice, demo_team):
    backend, driver = cluster
    job = _admitted_job(ready_image, profile, alice, demo_team)
    job_run_start(job_id=job.uid)
    pod = driver.pods(backend.handle_for(job.uid))[0]["metadata"]
    pulling = f'Pulling image "{job.image_digest}"'

    driver.fake.event(pod["namespace"], pod["name"], "Scheduled", "Successfully assigned to node-a")
    driver.fake.event(pod["namespace"], pod["name"], "Pulling", pulling)
    jobs_watch()

    assert _messages(job) == [f"Waiting: {pulling}"]


def test_a_job_whose_pods_the_clusters_quota_refuses_says_so_and_fails_after_the_start_timeout(
    cluster, settings, ready_image, profile, alice, demo_team, root
):
    backend, driver = cluster
    team_quota_set(team=demo_team, changes={"cpus": 0.5}, by=root, actor=Actor.system())
    job = _admitted_job(ready_image, profile, alice, demo_team)  # 1 CPU: over the namespace's quota
    job_run_start(job_id=job.uid)

    jobs_watch()
    job.refresh_from_db()
    assert job.state == "starting"
    assert driver.pods(backend.handle_for(job.uid)) == []
    [waiting] = WorkloadEvent.objects.filter(uid=job.pk, step="scheduling")
    assert "exceeded quota" in waiting.message and waiting.level == "error"

    settings.DOCKYARD_JOB_START_TIMEOUT_S = 0
    jobs_watch()

    job.refresh_from_db()
    assert (job.state, job.reason) == ("failed", "FailedCreate")
    assert "exceeded quota: dockyard-team-quota" in job.error_message


def test_a_workspace_whose_service_name_does_not_resolve_fails_naming_the_lookup(
    cluster, settings, ready_image, profile, alice, demo_team
):
    backend, driver = cluster
    settings.DOCKYARD_K8S_REACH = "service"  # the default, from a portal outside the cluster
    revision = ready_image.current_revision
    workspace = Workspace.objects.create(owner=alice, team=demo_team, name="w", image=ready_image,
                                         image_revision=revision, image_digest=revision.digest, profile=profile,
                                         cpus=Decimal(1), memory_gib=Decimal(1), state="pending",
                                         jupyter_token="t")  # fmt: skip
    workspace_run_start(workspace_id=workspace.uid)
    handle = backend.handle_for(workspace.uid)
    driver.runs(handle)
    assert workspace_check_ready(workspace_id=workspace.uid) is None

    Workspace.objects.filter(pk=workspace.pk).update(ready_deadline=timezone.now() - timedelta(seconds=1))
    assert workspace_check_ready(workspace_id=workspace.uid) is False

    workspace.refresh_from_db()
    assert workspace.state == "failed"
    assert f"cannot resolve {handle.name}.dockyard-demo.svc.cluster.local" in workspace.error_message
