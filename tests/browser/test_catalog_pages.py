"""Staff build an image from the catalog page and watch it happen, live, in a real browser."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import expect

from portal.catalog.models import Image
from tests.browser.test_portal_pages import sign_in
from tests.processes import celery_worker_args, env_on_test_database, running

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_staff_build_an_image_and_watch_its_progress(page, live_server, root, make_image, image_slug, tmp_path):
    make_image(image_slug, description="Built from the browser test.")
    sign_in(page, live_server, "root")
    page.get_by_role("link", name="Images").click()
    page.get_by_role("link", name=image_slug).click()
    expect(page.get_by_text("none yet")).to_be_visible()

    page.get_by_role("button", name="Build latest revision").click()
    expect(page).to_have_url(re.compile(r"/images/builds/\d+/$"))
    expect(page.get_by_text("Queued")).to_be_visible()

    worker = celery_worker_args(f"browser-builds-{uuid.uuid4().hex[:6]}", queues="builds")
    with running(worker, env=env_on_test_database(), log=tmp_path / "worker.log"):
        # No reload: the page polls the build and swaps in its progress.
        expect(page.get_by_text("Succeeded")).to_be_visible(timeout=180_000)
    expect(page.get_by_role("progressbar")).to_have_attribute("value", "100")
    expect(page.get_by_label("Build log")).to_contain_text("Step 1/")

    page.get_by_role("link", name=image_slug).click()
    digest = Image.objects.get(slug=image_slug).digest
    expect(page.get_by_text(digest)).to_be_visible()
