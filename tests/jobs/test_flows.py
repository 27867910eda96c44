"""Jobs through the queue, sweeps, exact reruns, code snapshots and followed logs, for real."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from jobs.models import Job
from portal.quotas.models import TeamQuota
from tests.jobs.conftest import submit, wait_job
from tests.processes import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_with_a_running_jobs_limit_of_one_jobs_wait_their_turn_in_order(portal, people, small, python_image):
    TeamQuota.objects.update_or_create(team=people["alice"].memberships.get().team, defaults={"max_jobs": 1})
    token = people["tokens"]["alice"]
    alice = portal.client(authorization=f"Bearer {token}")
    ids = [submit(alice, name=f"j{n}", team="demo", image=python_image.slug, profile="small",
                  command=f"echo {n}; sleep 2")["id"] for n in range(3)]  # fmt: skip
    wait_job(portal, token, ids[0], "running")
    waiting = [alice.get(f"/api/v1/jobs/{pk}/").json() for pk in ids[1:]]
    assert [(j["state"], j["queue_position"]) for j in waiting] == [("queued", 1), ("queued", 2)]
    assert "running jobs 1 of 1 in use" in waiting[0]["wait_reason"], waiting[0]["wait_reason"]
    for pk in ids:
        assert wait_job(portal, token, pk, ["succeeded", "failed"], timeout=120)["state"] == "succeeded"
    jobs = [Job.objects.get(pk=pk) for pk in ids]
    assert jobs[0].started_at < jobs[1].started_at < jobs[2].started_at
    assert jobs[1].started_at >= jobs[0].stopped_at and jobs[2].started_at >= jobs[1].stopped_at, "one at a time"


SWEEP = """
import json, os
lr, layers = float(os.environ["PARAM_LR"]), int(os.environ["PARAM_LAYERS"])
with open("/output/metrics.jsonl", "w") as f:
    for step in (1, 2):
        f.write(json.dumps({"step": step, "loss": lr * layers / step}) + "\\n")
"""


def test_a_two_by_two_grid_sweep_runs_four_jobs_with_their_final_metrics(portal, people, small, python_image):
    token = people["tokens"]["alice"]
    alice = portal.client(authorization=f"Bearer {token}")
    response = alice.post("/api/v1/experiments/", json={
        "name": "grid", "team": "demo", "image": python_image.slug, "profile": "small",
        "command": ["python3", "-c", SWEEP], "sweep": {"grid": {"lr": [0.1, 0.2], "layers": [1, 2]}},
    })  # fmt: skip
    assert response.status_code == 201, response.text
    experiment = response.json()
    for row in experiment["jobs"]:
        assert wait_job(portal, token, row["id"], ["succeeded", "failed"])["state"] == "succeeded"
    table = alice.get(f"/api/v1/experiments/{experiment['id']}/").json()
    rows = {(r["parameters"]["lr"], r["parameters"]["layers"]): r for r in table["jobs"]}
    assert {k: r["metrics"]["loss"] for k, r in rows.items()} == {
        (0.1, 1): 0.05, (0.1, 2): 0.1, (0.2, 1): 0.1, (0.2, 2): 0.2
    }  # fmt: skip
    assert table["best"]["loss"] == rows[(0.1, 1)]["id"]


TRAIN = b"""
import os, sys
print(f"lr={os.environ['PARAM_LR']} arg={sys.argv[2]} mode={os.environ['MODE']}")
try:
    open("/code/train.py", "a").write("changed")
    print("code is writable")
except OSError:
    print("code is read-only")
"""


def test_rerun_reproduces_the_recorded_spec(portal, people, small, python_image):
    token = people["tokens"]["alice"]
    alice = portal.client(authorization=f"Bearer {token}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("train.py", TRAIN)
    spec = {"name": "train", "team": "demo", "image": python_image.slug, "profile": "small",
            "command": ["python3", "train.py", "--lr", "{lr}"], "parameters": {"lr": 0.5}, "env": {"MODE": "full"},
            "secret_env": {"TOKEN": "hidden"}}  # fmt: skip
    response = alice.post(
        "/api/v1/jobs/", data={"spec": json.dumps(spec)}, files={"code": ("code.zip", code.getvalue())}
    )
    assert response.status_code == 201, response.text
    first = wait_job(portal, token, response.json()["id"], ["succeeded", "failed"])
    assert first["state"] == "succeeded", first
    assert alice.get(f"/api/v1/jobs/{first['id']}/logs").text.splitlines() == [
        "lr=0.5 arg=0.5 mode=full", "code is read-only"
    ]  # fmt: skip

    rerun = alice.post(f"/api/v1/jobs/{first['id']}/rerun/")
    assert rerun.status_code == 201
    second = wait_job(portal, token, rerun.json()["id"], ["succeeded", "failed"])
    same = ["image_digest", "code_sha256", "command", "shell", "parameters", "env", "secret_env", "profile"]
    assert {k: second[k] for k in same} == {k: first[k] for k in same}
    assert second["rerun_of"] == first["id"] and second["state"] == "succeeded"
    assert alice.get(f"/api/v1/jobs/{second['id']}/logs").text == alice.get(f"/api/v1/jobs/{first['id']}/logs").text


def test_a_workspace_folder_is_snapshotted_at_submit_time(portal, people, small, python_image, image_slug, engine):
    from tests.workspaces.conftest import ECHO_SERVER, built_image, wait_state

    echo_image = built_image(f"{image_slug}-ws", command=["python3", "-c", ECHO_SERVER])
    token = people["tokens"]["alice"]
    alice = portal.client(authorization=f"Bearer {token}")
    workspace = alice.post("/api/v1/workspaces/", json={"name": "dev", "image": echo_image.slug, "profile": "small",
                                                         "team": "demo"}).json()  # fmt: skip
    wait_state(portal, token, workspace["id"], "running")
    container = engine.containers.get(f"dockyard-{workspace['id']}")

    def edit(text: str) -> None:
        result = container.exec_run(["sh", "-c", f"mkdir -p src && echo {text} > src/data.txt"], user="1000:100",
                                    workdir="/home/jovyan")  # fmt: skip
        assert result.exit_code == 0, result.output

    edit("v1")
    job = submit(alice, name="snap", team="demo", image=python_image.slug, profile="small",
                 command="cat /code/data.txt", code_workspace=workspace["id"], code_path="src")  # fmt: skip
    edit("v2")
    done = wait_job(portal, token, job["id"], ["succeeded", "failed"])
    assert done["state"] == "succeeded" and done["code_source"] == "workspace: alice/dev:src"
    assert alice.get(f"/api/v1/jobs/{job['id']}/logs").text.strip() == "v1"
    missing = alice.post("/api/v1/jobs/", json={"name": "x", "team": "demo", "image": python_image.slug,
                         "profile": "small", "command": "true", "code_workspace": workspace["id"],
                         "code_path": "nope"})  # fmt: skip
    assert missing.status_code == 400 and "code_path" in missing.json()["errors"]


def test_following_the_log_streams_lines_while_the_job_runs(portal, people, small, python_image):
    token = people["tokens"]["alice"]
    alice = portal.client(authorization=f"Bearer {token}")
    job = submit(alice, name="chatty", team="demo", image=python_image.slug, profile="small",
                 command="echo first; sleep 3; echo second")  # fmt: skip
    lines, state_at_first_line = [], None
    with alice.stream("GET", f"/api/v1/jobs/{job['id']}/logs?follow=1", timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            lines.append(line)
            if state_at_first_line is None:
                state_at_first_line = alice.get(f"/api/v1/jobs/{job['id']}/").json()["state"]
    assert state_at_first_line == "running", "the first line arrived while the job still ran"
    assert lines == ["first", "second"]
    wait_for(lambda: alice.get(f"/api/v1/jobs/{job['id']}/").json()["state"] == "succeeded", timeout=30,
             what="the job to end")  # fmt: skip
