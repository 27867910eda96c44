"""What an admission pass hands on to jobs: each admitted job learns its GPUs (in device
order) and moves on, with the lookups done once for the whole pass, not once per job."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from jobs.models import Job
from jobs.services import JobSpec, job_submit
from portal.audit.services import Actor
from portal.quotas.models import ResourceProfile
from portal.quotas.services.queue import admission_pass
from tests.quotas.conftest import inventory

pytestmark = pytest.mark.django_db


def _submit(image, profile, owner, team, name) -> Job:
    spec = JobSpec(name=name, team=team, profile=profile, command=["python", "train.py"], image=image)
    return job_submit(owner=owner, job_spec=spec, actor=Actor.system())


def test_admitted_jobs_get_their_gpus_in_device_order(
    ready_image, alice, demo_team, django_capture_on_commit_callbacks
):
    inventory({"node-a": 2})
    two = ResourceProfile.objects.create(slug="two-gpu", name="Two GPUs", cpus=1, memory_gib=1, gpus=2)
    cpu = ResourceProfile.objects.create(slug="cpu", name="CPU", cpus=1, memory_gib=1)
    jobs = [_submit(ready_image, two, alice, demo_team, "gpu"), _submit(ready_image, cpu, alice, demo_team, "cpu")]

    with django_capture_on_commit_callbacks(execute=True):  # the listener runs once the pass commits
        admission_pass()

    gpu_job, cpu_job = (Job.objects.get(pk=j.pk) for j in jobs)
    assert (gpu_job.state, gpu_job.gpu_device_ids) == ("admitted", ["GPU-node-a-0", "GPU-node-a-1"])
    assert (cpu_job.state, cpu_job.gpu_device_ids) == ("admitted", [])


def test_the_jobs_a_pass_admits_are_read_in_a_fixed_number_of_queries(
    ready_image, alice, demo_team, django_capture_on_commit_callbacks
):
    from jobs.services import jobs_admitted
    from portal.quotas.models import Allocation
    from portal.quotas.values import WorkloadRef

    cpu = ResourceProfile.objects.create(slug="cpu", name="CPU", cpus=1, memory_gib=1)

    def reads_for(count: int) -> int:
        made = [_submit(ready_image, cpu, alice, demo_team, f"j{i}") for i in range(count)]
        with django_capture_on_commit_callbacks(execute=False):  # admitted, not yet handed on
            admission_pass()
        Job.objects.filter(pk__in=[j.pk for j in made]).update(state="cancelled")  # nothing to move on
        admitted = [(WorkloadRef("job", j.pk), Allocation.objects.get(workload_uid=j.pk).pk) for j in made]
        with CaptureQueriesContext(connection) as queries:
            jobs_admitted(admitted)
        return len(queries)

    assert reads_for(2) == reads_for(8)
