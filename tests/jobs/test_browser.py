"""Jobs in a real browser: submit one from the form and watch its log and metrics arrive live;
sort an experiment's table and compare two of its jobs."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from jobs.models import Experiment, Job, JobState
from portal.catalog.models import Image, ImageRevision, ImageStatus
from portal.quotas.models import ResourceProfile
from tests.conftest import SCREENSHOTS
from tests.factories import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Prints a line, records three metric points, waits, prints another line.
SCRIPT = (
    "echo 'epoch 1 starting'; "
    'printf \'{"step": 1, "loss": 0.9}\\n{"step": 2, "loss": 0.5}\\n{"step": 3, "loss": 0.3}\\n\' '
    "> /output/metrics.jsonl; sleep 3; echo 'epoch 1 done'"
)


def sign_in(page, url: str, username: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


@pytest.mark.docker
def test_alice_submits_a_job_and_watches_its_log_and_metrics_arrive(page, portal, people, small, python_image):
    sign_in(page, portal.url, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    page.get_by_role("link", name="New job").click()
    expect(page.get_by_label("Archive", exact=True)).to_be_hidden()
    page.get_by_label("Upload a zip or tar").check()
    expect(page.get_by_label("Archive", exact=True)).to_be_visible()
    expect(page.get_by_label("Folder", exact=True)).to_be_hidden()
    page.get_by_label("None (the image has everything)").check()
    page.get_by_label("Name", exact=True).fill("live-train")
    page.get_by_label("Image", exact=True).select_option(python_image.slug)
    page.get_by_label("Size", exact=True).select_option("small")
    page.get_by_label("Command", exact=True).fill(SCRIPT)
    page.get_by_label("Parameters", exact=True).fill("lr 0.1")
    page.get_by_label("Secret environment", exact=True).fill("API_TOKEN=never-shown")
    page.screenshot(path=SCREENSHOTS / "job-form.png", full_page=True)
    page.get_by_role("button", name="Submit").click()

    expect(page.get_by_text("Line 1: write NAME=value.")).to_be_visible()
    expect(page.get_by_label("Secret environment", exact=True)).to_have_value("")
    expect(page.get_by_label("Command", exact=True)).to_have_value(SCRIPT)
    page.screenshot(path=SCREENSHOTS / "job-form-errors.png", full_page=True)
    page.get_by_label("Parameters", exact=True).fill("lr=0.1")
    page.get_by_label("Secret environment", exact=True).fill("API_TOKEN=never-shown")
    page.get_by_role("button", name="Submit").click()

    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}/$"))
    page.evaluate("window.dockyardSamePage = true")
    # The first line shows while the stream is still open (the job sleeps before the second).
    expect(page.locator("#job-log")).to_contain_text("epoch 1 starting", timeout=90_000)
    seen = page.evaluate(
        "({text: document.getElementById('job-log').textContent,"
        " streaming: document.getElementById('job-log').dataset.streaming})"
    )
    assert "epoch 1 done" not in seen["text"] and seen["streaming"] == "true", seen
    page.screenshot(path=SCREENSHOTS / "job-running.png", full_page=True)

    expect(page.locator("#job-log")).to_contain_text("epoch 1 done", timeout=30_000)
    expect(page.locator("#job-state")).to_have_text("Succeeded", timeout=60_000)
    expect(page.locator("#job-metrics figure[data-metric='loss'] canvas")).to_be_visible(timeout=15_000)
    expect(page.locator("#job-metrics figure[data-metric='loss'] figcaption")).to_contain_text("last 0.3 at step 3")
    expect(page.locator("#job-metrics-empty")).to_be_hidden()
    expect(page.get_by_role("link", name="metrics.jsonl")).to_be_visible()
    assert page.evaluate("window.dockyardSamePage") is True, "everything arrived without a reload"
    expect(page.get_by_text("lr=0.1")).to_be_visible()
    expect(page.get_by_text("API_TOKEN=********")).to_be_visible()
    assert "never-shown" not in page.content()
    page.screenshot(path=SCREENSHOTS / "job-succeeded.png", full_page=True)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    row = page.get_by_role("row", name=re.compile("live-train"))
    expect(row).to_contain_text("Succeeded")
    expect(row).to_contain_text("loss 0.3")
    page.screenshot(path=SCREENSHOTS / "job-list.png", full_page=True)


@pytest.fixture
def finished_sweep(alice, make_image):
    """Three finished jobs of a grid over lr, with loss and accuracy series (no containers)."""
    image = make_image("python-minimal")
    revision = image.revisions.get()
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest="sha256:" + "d" * 64)
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    revision.refresh_from_db()
    profile = ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=1)
    team = alice.memberships.get().team
    experiment = Experiment.objects.create(name="lr-grid", owner=alice, team=team,
                                           sweep={"grid": {"lr": [0.3, 0.1, 0.03]}})  # fmt: skip
    for index, (lr, losses, acc) in enumerate(((0.3, [0.9, 0.7], 0.61), (0.1, [0.8, 0.4], 0.82),
                                               (0.03, [0.85, 0.55], 0.74)), start=1):  # fmt: skip
        Job.objects.create(
            name=f"lr-grid-{index}", owner=alice, team=team, image=image, image_revision=revision,
            image_digest=revision.digest, profile=profile, cpus=1, memory_gib=1, state=JobState.SUCCEEDED,
            experiment=experiment, command=["python3", "train.py", "--lr", "{lr}"], parameters={"lr": lr},
            metrics={"loss": [[1, losses[0]], [2, losses[1]]], "acc": [[2, acc]]},
            metrics_last={"loss": losses[1], "acc": acc}, attempt=1, exit_code=0,
        )  # fmt: skip
    return experiment


# live_server speaks WSGI, which reads the log API's async stream synchronously (and says so).
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_experiment_table_sorts_by_a_metric_and_two_jobs_compare(page, live_server, finished_sweep):
    sign_in(page, live_server.url, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    page.get_by_role("link", name="lr-grid").click()

    table = page.locator("table.experiment-table")
    names = table.locator("tbody tr td:first-child")
    expect(names).to_have_text(["lr-grid-1", "lr-grid-2", "lr-grid-3"])
    expect(table.locator("td.best")).to_have_text([re.compile(r"^0\.82"), re.compile(r"^0\.4")])
    table.get_by_role("button", name=re.compile(r"^loss")).click()
    expect(names).to_have_text(["lr-grid-2", "lr-grid-3", "lr-grid-1"])
    expect(table.locator("th[aria-sort='ascending']")).to_contain_text("loss")
    table.get_by_role("button", name=re.compile(r"^loss")).click()
    expect(names).to_have_text(["lr-grid-1", "lr-grid-3", "lr-grid-2"])
    table.get_by_role("button", name="lr", exact=True).click()
    expect(names).to_have_text(["lr-grid-3", "lr-grid-2", "lr-grid-1"])
    expect(page.locator("#overlay-charts figure canvas")).to_have_count(2)
    page.screenshot(path=SCREENSHOTS / "experiment.png", full_page=True)

    names.filter(has_text="lr-grid-1").get_by_role("link").click()
    page.get_by_label("Compare with…").select_option(str(Job.objects.get(name="lr-grid-2").pk))
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_role("heading", name="Compare jobs")).to_be_visible()
    expect(page.locator("tr.differs").filter(has_text="Parameters")).to_have_count(1)
    expect(page.locator("tr.differs")).to_have_count(4)  # name, parameters, and the two metrics
    expect(page.locator("#overlay-charts figure canvas")).to_have_count(2)
    page.screenshot(path=SCREENSHOTS / "job-compare.png", full_page=True)
