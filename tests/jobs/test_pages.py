"""The job and experiment pages: who sees what, the submit form, cancel and rerun, secrets
never shown, comparing, sweeps (no containers: nothing is committed, so no task runs)."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from jobs import services
from jobs.models import CodeArchive, Experiment, Job, JobState
from portal.audit.services import Actor
from portal.core.secrets import MASK
from portal.quotas.models import ResourceProfile
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-value-never-shown"


@pytest.fixture
def small(db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=2)


@pytest.fixture
def make_job(ready_image, small, demo_team):
    def make(owner, *, team=None, **fields) -> Job:
        job_spec = services.JobSpec(
            name=fields.pop("name", "train"), team=team or demo_team, image=ready_image,
            profile=small, command=fields.pop("command", ["python3", "train.py"]), **fields,
        )  # fmt: skip
        return services.job_submit(owner=owner, job_spec=job_spec, actor=Actor.system())

    return make


def form_data(**overrides) -> dict:
    return {"name": "train", "team": "demo", "image": "python-minimal", "profile": "small", "priority": "0",
            "command": "python3 train.py", "max_retries": "0", "code_from": "none", **overrides}  # fmt: skip


# --- The list -------------------------------------------------------------------------------------


def test_team_members_see_the_teams_jobs_and_others_get_404(web, alice, bob, carol, root, make_job):
    job = make_job(alice, name="alices-run")

    assert "alices-run" in web(bob).get("/jobs/").content.decode()
    assert web(bob).get(f"/jobs/{job.pk}/").status_code == 200
    assert "alices-run" not in web(carol).get("/jobs/").content.decode()
    assert web(carol).get(f"/jobs/{job.pk}/").status_code == 404
    assert web(carol).get(f"/jobs/compare/?a={job.pk}&b={job.pk}").status_code == 404
    assert web(root).get(f"/jobs/{job.pk}/").status_code == 200, "staff see every job"


def test_anonymous_people_are_sent_to_sign_in(client, alice, make_job):
    job = make_job(alice)
    for path in ("/jobs/", "/jobs/new/", f"/jobs/{job.pk}/", "/experiments/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path


def test_list_shows_state_queue_place_attempt_image_profile_and_last_metrics(web, alice, make_job):
    older = make_job(alice, name="older")
    make_job(alice, name="newer")
    Job.objects.filter(pk=older.pk).update(metrics_last={"loss": 0.123456789, "acc": 0.75})

    html = web(alice).get("/jobs/").content.decode()

    assert re.findall(r'href="/jobs/[0-9a-f-]{36}/">([^<]+)</a>', html) == ["newer", "older"]
    assert "#1 in queue" in html and "#2 in queue" in html
    assert "python-minimal" in html and ">small<" in html
    assert "0.123457" in html and "0.75" in html
    assert 'class="job-state job-state-queued"' in html


def test_list_filters_by_state_team_experiment_and_mine(web, alice, bob, carol, make_job, research_team):
    MembershipFactory(user=alice, team=research_team)
    mine = make_job(alice, name="alice-demo")
    make_job(alice, name="alice-research", team=research_team)
    make_job(bob, name="bob-demo")
    Job.objects.filter(pk=mine.pk).update(state=JobState.SUCCEEDED)
    experiment = Experiment.objects.create(name="sweep", owner=alice, team=mine.team, sweep={"grid": {"a": [1]}})
    Job.objects.filter(name="bob-demo").update(experiment=experiment)

    def names(query: str) -> set[str]:
        html = web(alice).get(f"/jobs/?{query}").content.decode()
        return set(re.findall(r'href="/jobs/[0-9a-f-]{36}/">([^<]+)</a>', html))

    assert names("") == {"alice-demo", "alice-research", "bob-demo"}
    assert names("state=succeeded") == {"alice-demo"}
    assert names("team=research") == {"alice-research"}
    assert names("mine=1") == {"alice-demo", "alice-research"}
    assert names(f"experiment={experiment.pk}") == {"bob-demo"}
    assert names("state=nonsense&experiment=not-a-uuid") == {"alice-demo", "alice-research", "bob-demo"}


def test_list_costs_the_same_queries_for_one_job_as_for_five(web, alice, bob, make_job):
    client = web(alice)
    experiment = Experiment.objects.create(name="sweep", owner=alice, team=alice.memberships.get().team, sweep={})

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/jobs/").status_code == 200
        return len(queries)

    make_job(alice, name="j0")
    one = count()
    for n in range(1, 5):
        job = make_job(bob if n % 2 else alice, name=f"j{n}")
        Job.objects.filter(pk=job.pk).update(experiment=experiment, metrics_last={"loss": n / 10})
    assert Job.objects.count() == 5
    assert count() == one


def test_rows_refresh_only_while_some_job_is_active(web, alice, make_job):
    job = make_job(alice)
    client = web(alice)
    assert 'hx-trigger="every 2s"' in client.get("/jobs/").content.decode()
    partial = client.get("/jobs/?mine=1", headers={"HX-Request": "true"}).content.decode()
    assert partial.lstrip().startswith('<tbody id="job-rows"') and 'hx-get="/jobs/?mine=1"' in partial

    Job.objects.filter(pk=job.pk).update(state=JobState.SUCCEEDED)
    assert "hx-trigger" not in client.get("/jobs/", headers={"HX-Request": "true"}).content.decode()


# --- Submitting -----------------------------------------------------------------------------------


def test_form_offers_jobs_only_images_and_starts_on_the_active_team(web, alice, ready_image, small):
    html = web(alice).get("/jobs/new/").content.decode()
    assert 'value="python-minimal"' in html, "images without a workspace command are for jobs"
    assert re.search(r'<option value="demo" selected>', html)
    assert "Small — 1 CPU, 2 GiB" in html


def test_a_bad_parameter_line_is_explained_and_nothing_is_created(web, alice, ready_image, small):
    response = web(alice).post("/jobs/new/", form_data(parameters="lr=0.1\nthis line has no equals sign"))

    assert response.status_code == 400
    assert "Line 2: write NAME=value." in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"profile": "huge"}, "Select a valid choice"),
        ({"parameters": "bad name=1"}, "not a valid parameter name"),
        ({"env": "PARAM_X=1"}, "set by Dockyard"),
        ({"command": '["python3", 3]'}, "Every argument must be a string"),
        ({"command": "[not json"}, "not a JSON list of arguments"),
        ({"timeout_s": "0"}, "greater than or equal to 1"),
        ({"priority": "5"}, "Only team admins"),
        ({"sweep": "lr="}, "give lr at least one value"),
        ({"metric_goals": "loss=lowest"}, "write metric=min or metric=max"),
        ({"code_from": "upload"}, "Choose a zip or tar file"),
        ({"env": "A=1", "secret_env": "A=2"}, "either in the environment or secret"),
    ],
)
def test_form_errors_are_shown_and_nothing_is_created(web, bob, ready_image, small, overrides, message):
    response = web(bob).post("/jobs/new/", form_data(**overrides))

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Job.objects.exists() and not Experiment.objects.exists() and not CodeArchive.objects.exists()


def test_secret_values_are_not_echoed_back_when_the_form_has_errors(web, alice, ready_image, small):
    response = web(alice).post("/jobs/new/", form_data(profile="huge", secret_env=f"TOKEN={SECRET}", env="MODE=x"))

    html = response.content.decode()
    assert response.status_code == 400 and SECRET not in html
    assert "MODE=x" in html, "plain fields are kept"


def test_submitting_queues_a_job_with_typed_parameters_and_sealed_secrets(web, alice, ready_image, small):
    response = web(alice).post("/jobs/new/", form_data(
        command='echo "{lr}" && python3 train.py', parameters="lr=0.1\nlayers=3\nwarm=true\ntag=\"7\"\nnote=big",
        env="MODE=full", secret_env=f"TOKEN={SECRET}", timeout_s="600", max_retries="2", priority="3",
    ))  # fmt: skip

    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.state == JobState.QUEUED and job.owner == alice and job.team.slug == "demo"
    assert job.command == ['echo "{lr}" && python3 train.py'] and job.shell
    assert job.parameters == {"lr": 0.1, "layers": 3, "warm": True, "tag": "7", "note": "big"}
    assert job.env == {"MODE": "full"} and job.secret_env_names == ["TOKEN"] and SECRET not in job.secret_env
    assert (job.timeout_s, job.max_retries, job.priority) == (600, 2, 3)


def test_a_json_list_is_submitted_as_arguments(web, bob, ready_image, small):
    web(bob).post("/jobs/new/", form_data(command='["python3", "train.py", "--lr", "{lr}"]', parameters="lr=1e-3"))

    job = Job.objects.get()
    assert job.command == ["python3", "train.py", "--lr", "{lr}"] and not job.shell
    assert job.parameters == {"lr": 0.001}


def test_an_uploaded_zip_becomes_the_jobs_code(web, bob, ready_image, small):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("train.py", "print('hi')")
    archive.seek(0)
    archive.name = "train.zip"

    response = web(bob).post("/jobs/new/", {**form_data(code_from="upload"), "code": archive})

    job = Job.objects.get()
    assert response.status_code == 302
    assert job.code.source == "upload: train.zip" and job.code.file_count == 1


def test_a_file_that_is_no_archive_is_refused_on_the_form(web, bob, ready_image, small):
    upload = io.BytesIO(b"just text")
    upload.name = "notes.txt"
    response = web(bob).post("/jobs/new/", {**form_data(code_from="upload"), "code": upload})
    assert response.status_code == 400 and not Job.objects.exists()


def test_a_grid_makes_an_experiment_with_a_job_per_point(web, alice, ready_image, small):
    response = web(alice).post(
        "/jobs/new/",
        form_data(name="grid", parameters="epochs=2", sweep="lr=0.1, 0.01\nlayers=1,2", metric_goals="acc=max"),
    )

    experiment = Experiment.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/experiments/{experiment.pk}/"
    assert experiment.sweep == {"grid": {"lr": [0.1, 0.01], "layers": [1, 2]}}
    assert experiment.metric_goals == {"acc": "max"}
    points = sorted((j.parameters["lr"], j.parameters["layers"], j.parameters["epochs"]) for j in experiment.jobs.all())
    assert points == [(0.01, 1, 2), (0.01, 2, 2), (0.1, 1, 2), (0.1, 2, 2)]
    assert set(experiment.jobs.values_list("state", flat=True)) == {JobState.QUEUED}


def test_someone_outside_every_team_cannot_submit(web, dave, ready_image, small):
    response = web(dave).post("/jobs/new/", form_data())
    assert response.status_code == 400 and not Job.objects.exists()


# --- One job --------------------------------------------------------------------------------------


def test_job_page_shows_the_recorded_spec_and_why_it_waits(web, alice, make_job):
    job = make_job(alice, name="spec-check", parameters={"lr": 0.5}, env={"MODE": "full"},
                   secret_env={"TOKEN": SECRET}, timeout_s=60)  # fmt: skip

    html = web(alice).get(f"/jobs/{job.pk}/").content.decode()

    assert "sha256:" + "c" * 64 in html
    assert "lr=0.5" in html and "MODE=full" in html and f"TOKEN={MASK}" in html
    assert "Number <strong>1</strong> in the queue" in html and "Waiting because:" in html
    assert f'data-url="/api/v1/jobs/{job.pk}/logs?follow=1"' in html
    assert f'data-url="/api/v1/jobs/{job.pk}/metrics"' in html
    assert 'hx-trigger="every 2s"' in html


def test_the_polled_part_carries_the_history_out_of_band_and_stops_when_final(web, alice, make_job):
    job = make_job(alice)
    client = web(alice)
    partial = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert partial.startswith('<div id="job-live"') and 'id="job-history" hx-swap-oob="true"' in partial

    services.job_cancel(job=job, by=alice, actor=Actor.system())
    final = client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()
    assert "hx-trigger" not in final and "Cancelled" in final
    page = client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'data-url="/api/v1/jobs/{job.pk}/logs"' in page, "a finished job's log is read whole"


def test_secret_values_never_appear_in_any_page(web, alice, make_job):
    job = make_job(alice, name="with-secret", secret_env={"TOKEN": SECRET}, parameters={"lr": 1})
    other = make_job(alice, name="other", secret_env={"TOKEN": SECRET + "2"})
    experiment = Experiment.objects.create(name="sweep", owner=alice, team=job.team, sweep={"grid": {"lr": [1]}})
    Job.objects.filter(pk=job.pk).update(experiment=experiment)
    client = web(alice)

    pages = ["/jobs/", f"/jobs/{job.pk}/", f"/jobs/compare/?a={job.pk}&b={other.pk}", "/experiments/",
             f"/experiments/{experiment.pk}/", f"/experiments/{experiment.pk}/series.json"]  # fmt: skip
    for path in pages:
        response = client.get(path)
        assert response.status_code == 200, path
        assert SECRET not in response.content.decode(), path
    assert SECRET not in client.get(f"/jobs/{job.pk}/", headers={"HX-Request": "true"}).content.decode()


def test_cancel_and_rerun_need_the_csrf_token(alice, make_job):
    job = make_job(alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert client.post(f"/jobs/{job.pk}/rerun/").status_code == 403
    job.refresh_from_db()
    assert job.state == JobState.QUEUED and Job.objects.count() == 1


def test_a_plain_teammate_cannot_cancel_and_the_owner_can(web, alice, bob, carol, make_job):
    job = make_job(bob)
    assert web(carol).post(f"/jobs/{job.pk}/cancel/").status_code == 404
    other = make_job(alice)
    assert web(bob).post(f"/jobs/{other.pk}/cancel/").status_code == 403
    assert "Cancel job" not in web(bob).get(f"/jobs/{other.pk}/").content.decode()

    response = web(bob).post(f"/jobs/{job.pk}/cancel/")

    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED
    again = web(bob).post(f"/jobs/{job.pk}/cancel/", follow=True)
    assert "it cannot become cancelled now" in again.content.decode()


def test_a_team_admin_cancels_a_members_job(web, alice, bob, make_job):
    job = make_job(bob)
    assert "Cancel job" in web(alice).get(f"/jobs/{job.pk}/").content.decode()
    web(alice).post(f"/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED


def test_rerun_makes_a_new_job_with_the_recorded_spec(web, alice, bob, carol, make_job):
    job = make_job(alice, parameters={"lr": 0.1}, secret_env={"TOKEN": SECRET}, timeout_s=30)
    assert web(carol).post(f"/jobs/{job.pk}/rerun/").status_code == 404

    response = web(bob).post(f"/jobs/{job.pk}/rerun/")

    rerun = Job.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{rerun.pk}/"
    assert rerun.rerun_of == job and rerun.owner == bob
    # Everything but alice's typed secrets, which go only to her (tests/jobs/test_secrets_reproduce.py).
    assert services.job_spec_record(rerun) == {**services.job_spec_record(job), "secret_env": {}}
    assert job.name in web(bob).get(f"/jobs/{rerun.pk}/").content.decode()


def test_staff_outside_the_team_see_no_rerun_button_and_are_refused(web, root, alice, make_job):
    job = make_job(alice)
    assert "Rerun" not in web(root).get(f"/jobs/{job.pk}/").content.decode()
    assert web(root).post(f"/jobs/{job.pk}/rerun/").status_code == 403


# --- Comparing and experiments --------------------------------------------------------------------


def test_compare_puts_two_specs_side_by_side_and_marks_what_differs(web, alice, make_job):
    a = make_job(alice, name="a", parameters={"lr": 0.1}, env={"MODE": "full"})
    b = make_job(alice, name="b", parameters={"lr": 0.2}, env={"MODE": "full"})
    Job.objects.filter(pk=a.pk).update(metrics_last={"loss": 0.5}, metrics={"loss": [[1, 0.5]]})
    Job.objects.filter(pk=b.pk).update(metrics_last={"loss": 0.25}, metrics={"loss": [[1, 0.25]]})

    html = web(alice).get(f"/jobs/compare/?a={a.pk}&b={b.pk}").content.decode()

    rows = re.findall(r'<tr( class="differs")?>\s*<th scope="row">([^<]+)', html)
    differs = {label.strip(): bool(marked) for marked, label in rows}
    assert differs["Parameters"] and differs["Name"] and differs["loss"]
    assert not differs["Environment"] and not differs["Image digest"] and not differs["Command"]
    assert "0.5" in html and "0.25" in html and 'id="overlay-data"' in html
    detail = web(alice).get(f"/jobs/{a.pk}/").content.decode()
    assert f'<option value="{b.pk}"' in detail, "the job page offers the team's other jobs to compare"
    assert web(alice).get(f"/jobs/compare/?a={a.pk}").status_code == 302
    assert web(alice).get("/jobs/compare/?a=nonsense&b=x").status_code == 404


def test_experiment_page_has_a_column_per_parameter_and_metric_and_marks_the_best(web, alice, bob, make_job):
    experiment = Experiment.objects.create(name="grid", owner=alice, team=alice.memberships.get().team,
                                           sweep={"grid": {"lr": [0.1, 0.2]}}, metric_goals={"acc": "max"})  # fmt: skip
    for lr, loss, acc in ((0.1, 0.5, 0.7), (0.2, 0.3, 0.6)):
        job = make_job(alice, name=f"grid-{lr}", parameters={"lr": lr})
        Job.objects.filter(pk=job.pk).update(experiment=experiment, metrics_last={"loss": loss, "acc": acc},
                                             metrics={"loss": [[1, loss]]}, state=JobState.SUCCEEDED)  # fmt: skip

    html = web(bob).get(f"/experiments/{experiment.pk}/").content.decode()

    assert 'data-sort-key="p:lr"' in html and 'data-sort-key="m:loss"' in html and 'data-sort-key="m:acc"' in html
    best = re.findall(r'<td class="num best" data-sort="([^"]+)"', html)
    assert sorted(best) == ["0.3", "0.7"], "lowest loss, highest accuracy"
    assert "hx-trigger" not in html, "every job has ended: nothing to poll"
    series = web(bob).get(f"/experiments/{experiment.pk}/series.json").json()
    assert series["active"] is False and {j["name"] for j in series["jobs"]} == {"grid-0.1", "grid-0.2"}
    listed = web(bob).get("/experiments/").content.decode()
    assert f"/experiments/{experiment.pk}/" in listed


def test_experiments_of_other_teams_are_404(web, alice, carol):
    experiment = Experiment.objects.create(name="x", owner=alice, team=alice.memberships.get().team, sweep={})
    assert web(carol).get(f"/experiments/{experiment.pk}/").status_code == 404
    assert web(carol).get(f"/experiments/{experiment.pk}/series.json").status_code == 404
    assert "/experiments/" + str(experiment.pk) not in web(carol).get("/experiments/").content.decode()


def test_someone_in_no_team_sees_no_jobs(web, make_job, alice, dave):
    make_job(alice)
    assert "No jobs yet" in web(dave).get("/jobs/").content.decode()
