"""alice defines her team's environment on the page, watches it build live (a real builds
worker), reads its lock, and starts a workspace from it; a finished job opens in a workspace."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from portal.catalog.models import EnvironmentRevision
from tests.conftest import RUN_LABEL, SCREENSHOTS, TEST_RUN
from tests.factories import PASSWORD
from tests.processes import celery_worker_args, env_on_test_database, running

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def sign_in(page, portal) -> None:
    page.goto(f"{portal.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_alice_defines_an_environment_watches_it_build_and_starts_a_workspace_from_it(
    page, portal, people, small, echo_base, env_slug, tmp_path, engine
):
    env = {**env_on_test_database(), "DOCKYARD_WORKLOAD_LABELS": f"{RUN_LABEL}={TEST_RUN}"}
    builds = celery_worker_args(f"envb-{uuid.uuid4().hex[:6]}", queues="builds")
    with running(builds, env=env, log=tmp_path / "builds.log"):
        define_and_build(page, portal, echo_base, env_slug)
        start_a_workspace_and_save_it(page, env_slug, engine)


def define_and_build(page, portal, echo_base, env_slug) -> None:
    sign_in(page, portal)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Environments").click()
    page.get_by_role("link", name="New environment").click()
    page.get_by_label("Slug").fill(env_slug)
    page.get_by_label("Name", exact=True).fill("Churn model")
    page.get_by_label("Base image").select_option(echo_base.slug)
    page.get_by_label("pip packages").fill("six\n")
    page.get_by_label("Environment", exact=True).fill("MODE=demo\n")
    page.get_by_label("Secret environment").fill("TOKEN=not-shown-anywhere\n")
    page.get_by_label("Start-up script").fill("export GREETING=hello\n")
    page.get_by_role("button", name="Create and build").click()

    expect(page.get_by_label(re.compile(r"^Progress"))).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "environment-building.png")
    # htmx polls the build; when it ends the page reloads with the revision's digest and lock.
    revision = page.locator("#r1")
    expect(revision.locator(".status")).to_have_text("Ready", timeout=300_000)
    expect(revision.get_by_text(re.compile(r"^Lock: 1 package"))).to_be_visible()
    expect(page.get_by_role("button", name="Rebuild r1 from its lock")).to_be_visible()
    expect(page.get_by_text("TOKEN=********")).to_be_visible()
    assert "not-shown-anywhere" not in page.content()
    page.screenshot(path=SCREENSHOTS / "environment-built.png", full_page=True)


def start_a_workspace_and_save_it(page, env_slug, engine) -> None:
    page.get_by_role("link", name="Start a workspace").click()
    expect(page.get_by_label("Image or environment")).to_have_value(f"{env_slug}@1")
    page.get_by_label("Name").fill("from-env")
    page.get_by_label(re.compile(r"^Small")).check()
    page.get_by_role("button", name="Start workspace").click()
    expect(page.locator("#workspace-state")).to_have_text("Running", timeout=120_000)
    expect(page.get_by_text(f"{env_slug}@1")).to_be_visible()
    expect(page.get_by_role("link", name="Save as environment")).to_be_visible()
    built = EnvironmentRevision.objects.get(environment__slug=env_slug, number=1)
    expect(page.get_by_text(built.digest)).to_be_visible()

    workspace_id = page.url.rstrip("/").rsplit("/", 1)[1]
    installed = engine.containers.get(f"dockyard-{workspace_id}").exec_run(["pip", "install", "idna==3.10"],
                                                                          user="1000:100")  # fmt: skip
    assert installed.exit_code == 0, installed.output.decode()[-2000:]

    page.get_by_role("link", name="Save as environment").click()
    expect(page.get_by_text("+ idna==3.10")).to_be_visible()
    expect(page.get_by_label("idna==3.10")).to_be_checked()
    page.get_by_label(re.compile(r"A new revision of Churn model")).check()
    page.screenshot(path=SCREENSHOTS / "environment-save-workspace.png", full_page=True)
    page.get_by_role("button", name="Save and build").click()

    expect(page.get_by_text(f"{env_slug}@2 saved; it is building from the recipe.")).to_be_visible()
    second = page.locator("#r2")
    expect(second.locator(".status")).to_have_text("Ready", timeout=300_000)
    expect(second.get_by_text("+ idna==3.10")).to_be_visible()
    page.screenshot(path=SCREENSHOTS / "environment-revisions.png", full_page=True)
