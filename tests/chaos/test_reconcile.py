"""Dockyard converges after crashes: killed workers, killed containers, orphans, an engine
restart and a broker outage, each with real processes, a real engine and a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from jobs.models import Job, JobAttempt
from portal.audit.models import AuditEvent
from portal.quotas.models import Allocation
from tests.chaos.conftest import SLOW_ECHO, built_image, kill, reconcile
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import REPO, wait_for
from tests.workspaces.conftest import ECHO_SERVER, wait_state
from workspaces.models import Workspace

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def _containers(engine, uid):
    return engine.containers.list(all=True, filters={"label": [f"dockyard.uid={uid}", f"{RUN_LABEL}={TEST_RUN}"]})


def _open_allocation(uid) -> bool:
    return Allocation.objects.filter(workload_uid=uid, closed_at__isnull=True).exists()


def _workspace(api, image, name="dev") -> dict:
    response = api.post("/api/v1/workspaces/", json={"name": name, "image": image.slug, "profile": "small",
                                                      "team": "demo"})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()


def test_a_worker_killed_mid_start_leaves_one_running_workspace_after_reconcile(
    processes, people, small, image_slug, engine
):
    image = built_image(image_slug, command=["python3", "-c", SLOW_ECHO])
    worker = processes.start_worker()
    api = processes.portal.client(authorization=f"Bearer {people['tokens']['alice']}")
    workspace = _workspace(api, image)
    wait_for(lambda: _containers(engine, workspace["id"]), timeout=60, interval=0.05, what="the container")
    kill(worker)
    assert Workspace.objects.get(pk=workspace["id"]).state in ("pending", "starting"), "killed before running"

    def converged():
        reconcile()  # what beat does every DOCKYARD_RECONCILE_INTERVAL_S
        return Workspace.objects.get(pk=workspace["id"]).state not in ("pending", "starting")

    wait_for(converged, timeout=60, interval=0.5, what="the workspace to leave pending/starting")
    assert Workspace.objects.get(pk=workspace["id"]).state == "running"
    assert len(_containers(engine, workspace["id"])) == 1
    assert (
        processes.portal.notebook(workspace["id"], authorization=f"Bearer {people['tokens']['alice']}")
        .get("/api/status")
        .status_code
        == 200
    )
    assert reconcile() == [], "a second pass finds nothing to correct"


def test_a_killed_container_fails_its_workspace_releases_quota_and_is_counted(
    processes, people, small, image_slug, engine
):
    image = built_image(image_slug, command=["python3", "-c", ECHO_SERVER])
    processes.start_worker()
    token = people["tokens"]["alice"]
    api = processes.portal.client(authorization=f"Bearer {token}")
    workspace = _workspace(api, image)
    wait_state(processes.portal, token, workspace["id"], "running")
    assert reconcile() == [], "nothing to correct while all is well"

    _containers(engine, workspace["id"])[0].kill()
    corrections = reconcile()
    assert [(c.kind, c.uid, c.result) for c in corrections] == [("exited", workspace["id"], "failed")]
    row = Workspace.objects.get(pk=workspace["id"])
    assert row.state == "failed" and "exited with code 137" in row.error_message
    assert not _open_allocation(workspace["id"]) and not _containers(engine, workspace["id"])
    assert engine.volumes.get(f"dockyard-{workspace['id']}-home"), "the home volume is kept"
    event = AuditEvent.objects.get(action="reconcile.exited")
    assert event.target_id == workspace["id"] and "137" in event.details["reason"]
    assert reconcile() == [], "reconciling again changes nothing"

    metrics = processes.portal.client().get("/metrics").text
    assert 'dockyard_reconcile_corrections_total{kind="exited",workload_kind="workspace"}' in metrics
    assert 'dockyard_workloads{kind="workspace",state="failed"} 1.0' in metrics


def test_an_orphan_container_is_removed_and_its_volume_kept(processes, engine, settings):
    uid = "00000000-0000-4000-8000-" + TEST_RUN
    labels = {RUN_LABEL: TEST_RUN, "dockyard.managed": "true", "dockyard.uid": uid, "dockyard.kind": "workspace"}
    volume = engine.volumes.create(f"dockyard-{uid}-home", labels=labels)
    engine.containers.run(settings.DOCKYARD_BASE_IMAGE, ["sleep", "300"], name=f"dockyard-{uid}", labels=labels,
                          detach=True, volumes={volume.name: {"bind": "/data", "mode": "rw"}})  # fmt: skip
    corrections = reconcile()
    assert [(c.kind, c.uid) for c in corrections] == [("orphan", uid)]
    assert not _containers(engine, uid)
    assert engine.volumes.get(volume.name).name == volume.name
    assert reconcile() == []


def _restart_engine(engine) -> None:
    pid = int(Path("/var/run/docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=90, what="the engine to stop")
    subprocess.run([str(REPO / "scripts" / "ensure-docker.sh")], check=True, capture_output=True, timeout=120)
    wait_for(engine.ping, timeout=60, what="the engine to answer again")


def test_an_engine_restart_stops_workspaces_with_the_reason_and_retries_jobs(
    processes, people, small, image_slug, engine
):
    image = built_image(image_slug, command=["python3", "-c", ECHO_SERVER])
    processes.start_worker()
    token = people["tokens"]["alice"]
    api = processes.portal.client(authorization=f"Bearer {token}")
    workspace = _workspace(api, image)
    job = api.post("/api/v1/jobs/", json={"name": "long", "team": "demo", "image": image.slug, "profile": "small",
                                          "command": "echo attempt $DOCKYARD_JOB_ATTEMPT; sleep 300",
                                          "max_retries": 1}).json()  # fmt: skip
    wait_state(processes.portal, token, workspace["id"], "running")
    wait_for(lambda: Job.objects.get(pk=job["id"]).state == "running", timeout=60, what="the job to run")

    _restart_engine(engine)
    reconcile()

    row = Workspace.objects.get(pk=workspace["id"])
    assert row.state == "stopped" and not _open_allocation(workspace["id"])
    detail = api.get(f"/api/v1/workspaces/{workspace['id']}/").json()
    assert "engine restarted" in detail["events"][-1]["message"]
    first = JobAttempt.objects.get(job_id=job["id"], number=1)
    assert first.reason == "engine_restarted" and first.log.strip() == "attempt 1"
    wait_for(lambda: JobAttempt.objects.filter(job_id=job["id"], number=2, started_at__isnull=False).exists(),
             timeout=60, what="the job's retry to start")  # fmt: skip

    assert api.post(f"/api/v1/workspaces/{workspace['id']}/start/").status_code == 200, "one click starts it again"
    wait_state(processes.portal, token, workspace["id"], "running")
    api.post(f"/api/v1/jobs/{job['id']}/cancel/")
