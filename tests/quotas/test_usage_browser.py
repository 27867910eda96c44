"""The usage page in a real browser: the charts draw under the portal's CSP."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from playwright.sync_api import expect

from portal.quotas.services import admit, release
from tests.factories import PASSWORD
from tests.quotas.conftest import SYSTEM, ask

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def charts_as_staff(page, url: str) -> dict:
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{url}/usage/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Every team")).to_be_visible()
    expect(page.locator("body")).to_have_attribute("data-charts-ready", "true")
    return {
        "series": page.evaluate(
            "() => document.getElementById('daily-gpu-hours').chart.data.datasets"
            ".map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
        ),
        "utilisation_lines": page.evaluate(
            "() => document.getElementById('gpu-utilisation').chart.data.datasets.length"
        ),
        "height": page.locator("#daily-gpu-hours").bounding_box()["height"],
        "problems": problems,
    }


def test_staff_see_the_daily_gpu_hours_and_utilisation_charts(page, live_server, root, alice, demo_team, two_nodes):
    with time_machine.travel(timezone.now() - timedelta(hours=5), tick=False):
        allocation = admit(request=ask(demo_team, alice, gpus=2), actor=SYSTEM)
    release(workload=allocation.workload_ref, actor=SYSTEM)

    seen = charts_as_staff(page, live_server.url)

    assert seen["series"] == [["demo", pytest.approx(10, abs=0.1)]]
    assert seen["utilisation_lines"] == 1
    assert seen["height"] > 100
    # No CSP violation or script error: Chart.js runs without eval or inline styles.
    assert seen["problems"] == []
