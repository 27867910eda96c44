"""Usage accounting from allocations, and the usage page, its CSV and its chart data."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from portal.quotas import selectors
from portal.quotas.services import admit, release
from tests.quotas.conftest import SYSTEM, ask, inventory, team_limits

pytestmark = pytest.mark.django_db

MARCH = datetime(2025, 3, 1, tzinfo=timezone.get_fixed_timezone(0))


def run(team, user, *, start: datetime, hours: float, gpus: int = 0, cpus: str = "2", close: bool = True):
    with time_machine.travel(start, tick=False):
        allocation = admit(request=ask(team, user, gpus=gpus, cpus=cpus), actor=SYSTEM)
    if close:
        with time_machine.travel(start + timedelta(hours=hours), tick=False):
            release(workload=allocation.workload_ref, actor=SYSTEM)
    return allocation


def test_cpu_and_gpu_hours_are_split_at_the_month_boundary(demo_team, alice, two_nodes):
    run(demo_team, alice, start=MARCH - timedelta(hours=2), hours=5, gpus=2)

    with time_machine.travel(MARCH + timedelta(days=40), tick=False):
        february = selectors.usage_rows(teams=[demo_team], month=(MARCH - timedelta(days=1)).date())
        march = selectors.usage_rows(teams=[demo_team], month=MARCH.date())

    assert [(r.cpu_hours, r.gpu_hours) for r in february] == [(Decimal("4.00"), Decimal("4.00"))]
    assert [(r.cpu_hours, r.gpu_hours) for r in march] == [(Decimal("6.00"), Decimal("6.00"))]


def test_open_allocations_count_up_to_now(demo_team, alice, two_nodes):
    run(demo_team, alice, start=MARCH, hours=0, gpus=1, close=False)

    with time_machine.travel(MARCH + timedelta(hours=3), tick=False):
        [row] = selectors.usage_rows(teams=[demo_team], month=MARCH.date())

    assert row.gpu_hours == Decimal("3.00") and row.cpu_hours == Decimal("6.00")


def test_daily_gpu_hours_are_stacked_per_team_and_day(demo_team, research_team, alice, carol, two_nodes):
    now = timezone.now()
    run(demo_team, alice, start=now - timedelta(days=1, hours=1), hours=1, gpus=2)
    run(research_team, carol, start=now - timedelta(days=1, hours=1), hours=1, gpus=1)

    data = selectors.daily_gpu_hours(team_ids=None, days=30)

    assert len(data["days"]) == 30
    assert sum(data["teams"]["demo"]) == pytest.approx(2) and sum(data["teams"]["research"]) == pytest.approx(1)


def test_usage_page_shows_a_members_bars(web, bob, demo_team):
    team_limits(demo_team, gpus=4, max_jobs=2)
    admit(request=ask(demo_team, bob), actor=SYSTEM)

    response = web(bob).get("/usage/")

    html = response.content.decode()
    assert response.status_code == 200
    assert "You in Demo team" in html
    assert 'aria-label="running jobs: 1 of 2"' in html
    assert "Members of" not in html and "daily-gpu-hours" not in html


def test_usage_page_shows_team_admins_their_members_and_a_chart(web, alice, bob, demo_team):
    response = web(alice).get("/usage/")
    html = response.content.decode()
    assert "Members of Demo team" in html and ">bob<" in html and 'id="daily-gpu-hours"' in html
    assert 'id="gpu-utilisation"' not in html


def test_usage_page_shows_staff_every_team_and_utilisation(web, root, demo_team, research_team):
    html = web(root).get("/usage/").content.decode()
    assert "Every team" in html and ">research<" in html and 'id="gpu-utilisation"' in html


def test_chart_json_for_staff_has_utilisation(web, root, alice, demo_team, two_nodes):
    run(demo_team, alice, start=timezone.now() - timedelta(hours=2), hours=1, gpus=4)

    data = web(root).get("/usage/charts.json").json()

    assert sum(data["daily_gpu_hours"]["teams"]["demo"]) == pytest.approx(4)
    assert data["utilisation"]["devices"] == 8 and max(data["utilisation"]["percent"]) > 0


def test_chart_json_for_a_member_holds_no_other_teams(web, bob, carol, research_team, two_nodes):
    run(research_team, carol, start=timezone.now() - timedelta(hours=2), hours=1, gpus=1)
    data = web(bob).get("/usage/charts.json").json()
    assert data["daily_gpu_hours"]["teams"] == {} and "utilisation" not in data


def test_csv_export_lists_hours_per_person(web, alice, bob, demo_team):
    run(demo_team, bob, start=timezone.now() - timedelta(hours=3), hours=2, cpus="1")

    response = web(alice).get("/usage/export.csv")

    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert response["Content-Type"].startswith("text/csv")
    assert rows[0] == ["month", "team", "user", "cpu_hours", "gpu_hours"]
    assert rows[1][1:] == ["demo", "bob", "2.00", "0.00"]


def test_inventory_sync_is_idempotent_and_marks_missing_devices(db):
    from portal.audit.models import AuditEvent
    from portal.quotas.models import GpuDevice, GpuHealth
    from portal.quotas.services import gpu_inventory_sync
    from portal.quotas.values import GpuInfo, NodeInfo

    def report(count):
        gpus = tuple(GpuInfo(index=i, uuid=f"GPU-h1-{i}", model="L4", memory_mib=24576) for i in range(count))
        return [NodeInfo(name="host-1", backend="docker", cpus=Decimal(32), memory_gib=Decimal(128), gpus=gpus)]

    first = gpu_inventory_sync(backend="docker", nodes=report(2))
    again = gpu_inventory_sync(backend="docker", nodes=report(2))
    shrunk = gpu_inventory_sync(backend="docker", nodes=report(1))

    assert len(first.added) == 3 and not again.has_changes and shrunk.missing == ["host-1/1"]
    assert GpuDevice.objects.get(uuid="GPU-h1-1").health == GpuHealth.MISSING
    assert AuditEvent.objects.filter(action="gpu.inventory_sync").count() == 2


def test_declared_nodes_are_left_alone_by_sync(db):
    from portal.quotas.models import GpuDevice
    from portal.quotas.services import gpu_inventory_sync

    inventory({"declared-1": 2})
    result = gpu_inventory_sync(backend="docker", nodes=[])
    assert result.missing == [] and GpuDevice.objects.filter(health="healthy").count() == 2
