"""Several web and worker processes at once: killing one of each in the middle of a burst of
workspace starts loses no request that can be retried and no workspace, and starts none twice."""

from __future__ import annotations

import httpx
import pytest

from portal.quotas.models import ResourceProfile
from tests.chaos.conftest import SLOW_ECHO, built_image, kill, reconcile
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.processes import wait_for
from workspaces.models import Workspace

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]

BURST = 10


def _create(clients: list[httpx.Client], name: str, image: str) -> dict:
    """POSTs to the first web process that answers, as a load balancer retrying a refused
    connection would."""
    for client in clients:
        try:
            response = client.post("/api/v1/workspaces/", json={"name": name, "image": image, "profile": "tiny",
                                                                 "team": "demo"})  # fmt: skip
        except httpx.ConnectError:
            continue  # that process is gone: the next one takes the request
        assert response.status_code == 201, response.text
        return response.json()
    raise AssertionError("no web process answered")


def test_killing_a_web_and_a_worker_during_a_burst_of_starts_loses_and_doubles_nothing(
    processes, people, engine, image_slug
):
    image = built_image(image_slug, command=["python3", "-c", SLOW_ECHO]).slug
    ResourceProfile.objects.create(slug="tiny", name="Tiny", cpus="0.1", memory_gib="0.125")
    worker_a, _ = processes.start_worker(), processes.start_worker()
    web_b, portal_b = processes.start_web()
    headers = {"authorization": f"Bearer {people['tokens']['alice']}"}
    first, second = processes.portal.client(**headers), portal_b.client(**headers)

    made = [_create([first, second] if i % 2 else [second, first], f"burst-{i}", image) for i in range(BURST // 2)]
    wait_for(lambda: Workspace.objects.filter(state="starting").exists(), timeout=60, interval=0.05,
             what="a start under way")  # fmt: skip
    kill(worker_a)
    kill(web_b)
    made += [_create([second, first], f"burst-{i}", image) for i in range(BURST // 2, BURST)]

    def all_running():
        reconcile()  # what beat does every DOCKYARD_RECONCILE_INTERVAL_S: re-drives lost steps
        return Workspace.objects.filter(state="running").count() == BURST

    wait_for(all_running, timeout=180, interval=1, what=f"all {BURST} workspaces to run")
    assert sorted(w["name"] for w in made) == sorted(f"burst-{i}" for i in range(BURST))
    assert Workspace.objects.count() == BURST
    containers = engine.containers.list(all=True, filters={"label": [f"{RUN_LABEL}={TEST_RUN}",
                                                                     "dockyard.kind=workspace"]})  # fmt: skip
    assert sorted(c.labels["dockyard.uid"] for c in containers) == sorted(w["id"] for w in made), "one each"
    for workspace in made:
        status = processes.portal.notebook(workspace["id"], **headers).get("/api/status").status_code
        assert status == 200, workspace["name"]
    assert reconcile() == []
