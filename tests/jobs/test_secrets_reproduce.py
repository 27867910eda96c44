"""Secrets stay with the people allowed to launch them: a teammate who reruns a job, or opens
it in a workspace, runs without the secrets its owner typed (and is told which), and nobody
runs a workload on another team's environment or on someone's private one. Builds are marked
done by hand: no engine."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from jobs import services as job_services
from jobs.models import Job
from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.catalog.environments import services as env_services
from portal.catalog.models import Environment
from portal.core.secrets import secrets_open
from tests.catalog import test_environments_api as environment_tests
from tests.catalog.test_environments_api import SECRET, built, create_body
from tests.factories import MembershipFactory
from workspaces import services as workspace_services
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()
TYPED = "typed-by-alice-5d1e"
# The environment tests' fixtures: a built JupyterLab image, a small profile, demo's `churn`.
lab, small, churn = environment_tests.lab, environment_tests.small, environment_tests.churn


@pytest.fixture
def alices_job(alice, churn, small):
    """alice's finished job on the team's shared environment, with a secret she typed."""
    revision = built(churn.revisions.get(number=1))
    job_spec = job_services.JobSpec(
        name="train", team=churn.team, profile=small, command=["python3", "train.py"], environment_revision=revision,
        secret_env={"WANDB_KEY": TYPED},
    )  # fmt: skip
    job = job_services.job_submit(owner=alice, job_spec=job_spec, actor=SYSTEM)
    Job.objects.filter(pk=job.pk).update(state="succeeded")
    return Job.objects.get(pk=job.pk)


def test_a_teammates_rerun_runs_without_the_owners_typed_secrets_and_says_so(api, web, alice, bob, alices_job):
    response = api(bob).post(f"/api/v1/jobs/{alices_job.pk}/rerun/")

    assert response.status_code == 201, response.json()
    assert response.json()["secret_env"] == {} and response.json()["secrets_left_out"] == ["WANDB_KEY"]
    rerun = Job.objects.get(pk=response.json()["id"])
    assert secrets_open(rerun.secret_env) == {}
    env = job_services.job_spec_for_runtime(rerun).env
    assert "WANDB_KEY" not in env and TYPED not in env.values()
    assert env["API_TOKEN"] == SECRET  # the environment's own secret: bob may launch it
    assert any("WANDB_KEY" in e["message"] for e in response.json()["events"])
    page = web(bob).get(f"/jobs/{rerun.pk}/").content.decode()
    assert "Secrets left out" in page and "WANDB_KEY" in page and TYPED not in page


def test_the_owners_own_rerun_keeps_the_secrets(api, alice, alices_job):
    response = api(alice).post(f"/api/v1/jobs/{alices_job.pk}/rerun/")

    assert response.status_code == 201
    assert response.json()["secrets_left_out"] == []
    rerun = Job.objects.get(pk=response.json()["id"])
    assert job_services.job_spec_for_runtime(rerun).env["WANDB_KEY"] == TYPED


def test_a_teammates_workspace_from_the_job_runs_without_its_typed_secrets(api, web, alice, bob, alices_job):
    response = api(bob).post(f"/api/v1/jobs/{alices_job.pk}/workspace/", {}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["secrets_left_out"] == ["WANDB_KEY"]
    workspace = Workspace.objects.get(pk=response.json()["id"])
    env = workspace_services.workspace_spec(workspace).env
    assert "WANDB_KEY" not in env and TYPED not in env.values()
    audit = AuditEvent.objects.get(action="workspace.create", target_id=str(workspace.pk))
    assert audit.details["left_out"] == ["WANDB_KEY"]
    page = web(bob).get(f"/workspaces/{workspace.pk}/").content.decode()
    assert "Secrets left out" in page and "WANDB_KEY" in page and TYPED not in page

    own = workspace_services.workspace_reproduce(job=alices_job, by=alice, actor=SYSTEM)
    assert workspace_services.workspace_spec(own).env["WANDB_KEY"] == TYPED


def test_a_job_on_someones_private_environment_is_not_reproduced_by_others(api, alice, bob, lab, small):
    api(alice).post("/api/v1/environments/", create_body(slug="mine", shared=False), format="json")
    revision = built(Environment.objects.get(slug="mine").revisions.get(number=1))
    job_spec = job_services.JobSpec(
        name="train", team=revision.environment.team, profile=small, command=["true"], environment_revision=revision
    )
    job = job_services.job_submit(owner=alice, job_spec=job_spec, actor=SYSTEM)
    Job.objects.filter(pk=job.pk).update(state="succeeded")

    rerun = api(bob).post(f"/api/v1/jobs/{job.pk}/rerun/")
    reproduce = api(bob).post(f"/api/v1/jobs/{job.pk}/workspace/", {}, format="json")

    assert rerun.status_code == 400 and "no environment 'mine' you can use" in rerun.json()["detail"]
    assert reproduce.status_code == 400 and "no environment 'mine' you can use" in reproduce.json()["detail"]
    assert Job.objects.count() == 1 and not Workspace.objects.exists()


def test_an_environment_runs_only_workloads_of_its_own_team(alice, carol, churn, small, research_team):
    revision = built(churn.revisions.get(number=1))
    MembershipFactory(user=alice, team=research_team)  # alice sees churn (demo) and may work in research

    job_spec = job_services.JobSpec(
        name="x", team=research_team, profile=small, command=["true"], environment_revision=revision
    )
    with pytest.raises(ValidationError, match="belongs to another team: workloads of research cannot use it"):
        job_services.job_submit(owner=alice, job_spec=job_spec, actor=SYSTEM)
    with pytest.raises(ValidationError, match="belongs to another team"):
        workspace_services.workspace_create(
            owner=alice, team=research_team, name="x", profile=small, environment_revision=revision, actor=SYSTEM
        )
    with pytest.raises(ValidationError, match="belongs to another team"):
        env_services.environment_require_launchable(revision=revision, user=alice, team=research_team)
    assert not Job.objects.exists() and not Workspace.objects.exists()
