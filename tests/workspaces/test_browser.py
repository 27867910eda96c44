"""alice's first notebook, in a real browser: start it from the page, watch it, open it, run a cell."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import SCREENSHOTS
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.docker]


def test_alice_starts_jupyterlab_from_the_page_and_runs_a_cell(page, portal, people, small, jupyter_image):
    page.goto(f"{portal.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Workspaces").click()
    page.get_by_role("link", name="New workspace").click()
    page.get_by_label("Name").fill("first-lab")
    page.get_by_label("Image").select_option(label=jupyter_image.name)
    page.get_by_label(re.compile(r"^Small")).check()
    page.get_by_role("button", name="Start workspace").click()

    steps = page.get_by_role("list", name="Start progress")
    expect(steps).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "workspace-starting.png")
    expect(page.locator("#workspace-state")).to_have_text("Running", timeout=180_000)  # no reload: htmx polls
    expect(steps.get_by_role("listitem")).to_have_count(5)
    page.screenshot(path=SCREENSHOTS / "workspace-running.png")

    with page.expect_popup() as opened:
        page.get_by_role("link", name="Open JupyterLab").click()
    lab = opened.value
    lab.set_default_timeout(60_000)
    expect(lab).to_have_url(re.compile(r"^http://[0-9a-f-]{36}\.nb\.localhost:\d+/lab"), timeout=60_000)
    lab.locator(".jp-LauncherCard[data-category='Notebook']").first.click()
    # The kernel talks over a WebSocket through the proxy: wait until it is connected and idle.
    expect(lab.locator(".jp-Notebook")).to_be_visible(timeout=60_000)
    expect(lab.get_by_text(re.compile(r"Python 3 \(ipykernel\) \| Idle"))).to_be_visible(timeout=60_000)
    cell = lab.locator(".jp-Notebook .jp-Cell .cm-content").first
    cell.click()
    cell.press_sequentially("print(6*7)")
    expect(cell).to_have_text("print(6*7)")
    lab.keyboard.press("Shift+Enter")
    lab.screenshot(path=SCREENSHOTS / "jupyterlab-cell.png")
    expect(lab.locator(".jp-OutputArea-output").first).to_have_text("42", timeout=60_000)
    lab.screenshot(path=SCREENSHOTS / "jupyterlab-42.png")
