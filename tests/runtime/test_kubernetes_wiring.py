"""What the rest of Dockyard hands the Kubernetes backend: a changed team quota is mirrored
into the team's namespace, and specs carry GPUs, model, nodes, timeout and team limits."""

from __future__ import annotations

import pytest

from jobs.models import Job
from jobs.services import job_spec_for_runtime
from portal.audit.services import Actor
from portal.catalog.models import Image, ImageRevision, ImageStatus
from portal.quotas.models import ResourceProfile
from portal.quotas.services.quota import team_quota_set
from portal.quotas.tasks import team_sync_task
from portal.runtime import get_backend
from portal.runtime import k8s_manifests as m
from tests.runtime.k8s_harness import start_fake
from tests.runtime.test_kubernetes import read

pytestmark = pytest.mark.django_db


@pytest.fixture
def on_fake_cluster(tmp_path, settings):
    fake, kubeconfig = start_fake(tmp_path)
    settings.DOCKYARD_RUNTIME, settings.KUBECONFIG, settings.DOCKYARD_K8S_WATCH = "kubernetes", kubeconfig, False
    yield get_backend()
    fake.close()


def test_a_changed_team_quota_is_mirrored_into_the_namespace(on_fake_cluster, demo_team, root):
    team_quota_set(team=demo_team, changes={"cpus": 4, "gpus": 2}, by=root, actor=Actor.system())
    team_sync_task(demo_team.pk)  # what the worker runs once the change commits
    quota = read(on_fake_cluster, "read_namespaced_resource_quota", m.QUOTA_NAME, "dockyard-demo")
    assert quota["spec"]["hard"]["requests.cpu"] in ("4", "4000m")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"


def test_a_job_spec_carries_gpus_model_nodes_timeout_and_team_limits(make_image, alice, root, demo_team):
    image = make_image("trainer")
    revision = image.revisions.get()
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest="sha256:" + "d" * 64)
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    profile = ResourceProfile.objects.create(slug="a100", name="A100", cpus=4, memory_gib=16, gpus=1,
                                             gpu_model="NVIDIA-A100-SXM4-80GB")  # fmt: skip
    team_quota_set(team=demo_team, changes={"gpus": 8}, by=root, actor=Actor.system())
    job = Job.objects.create(owner=alice, team=demo_team, name="ddp", image=image, image_revision=revision,
                             image_digest=revision.digest, profile=profile, cpus=4, memory_gib=16, gpus=1,
                             state="starting", command=["torchrun", "train.py"], nodes=2, timeout_s=600)  # fmt: skip
    spec = job_spec_for_runtime(job)
    assert (spec.gpus, spec.gpu_model, spec.nodes, spec.timeout_s) == (1, "NVIDIA-A100-SXM4-80GB", 2, 600)
    assert spec.team_limits == {"gpus": 8}
