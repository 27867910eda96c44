"""Environments through the API, the pages and the services, with builds marked done by hand
(no engine): who sees what, revisions and their changes, locks, the team default, launching,
export and import. The real builds and containers are in test_environments_docker.py."""

from __future__ import annotations

import json

import pytest
import yaml

from jobs import services as job_services
from jobs.models import Job
from portal.audit.models import AuditEvent
from portal.audit.services import Actor
from portal.catalog.environments import envfile, exchange, selectors
from portal.catalog.environments import services as env_services
from portal.catalog.environments.packages import package_diff, requirements_pinned, site_packages_versions
from portal.catalog.models import Environment, EnvironmentRevision, Image, ImageRevision, ImageStatus
from portal.quotas.models import ResourceProfile
from workspaces import services as workspace_services
from workspaces.models import Workspace

pytestmark = pytest.mark.django_db

SECRET = "s3cr3t-do-not-leak-81f2"
SIX = "six==1.17.0 --hash=sha256:" + "4" * 64
IDNA = "idna==3.10 --hash=sha256:" + "9" * 64


def ready_image(image: Image, digest: str) -> Image:
    revision = image.revisions.get(number=1)
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest=digest, packages=[["pip", "23.0.1"]])
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    return Image.objects.get(pk=image.pk)


def built(revision: EnvironmentRevision, *, lock=(SIX,), packages=(("pip", "23.0.1"), ("six", "1.17.0"))):
    """Marks a revision built, as a finished build would."""
    image_revision = revision.image_revision
    ImageRevision.objects.filter(pk=image_revision.pk).update(
        status="ready",
        digest="sha256:" + f"{revision.pk:064d}",
        pip_lock=list(lock),
        packages=[list(p) for p in packages],
    )
    Image.objects.filter(pk=image_revision.image_id).update(current_revision=image_revision, status=ImageStatus.READY)
    return EnvironmentRevision.objects.select_related("image_revision", "environment").get(pk=revision.pk)


@pytest.fixture
def lab(make_image):
    return ready_image(make_image("lab", default_command=["jupyter-lab"]), "sha256:" + "b" * 64)


@pytest.fixture
def small(db):
    return ResourceProfile.objects.create(slug="small", name="Small", cpus=1, memory_gib=2)


def create_body(**overrides) -> dict:
    return {
        "slug": "churn", "name": "Churn model", "team": "demo", "base_image": "lab", "pip": ["six==1.17.0"],
        "apt": [], "env": {"MODE": "train"}, "secret_env": {"API_TOKEN": SECRET}, "profile": "small",
        "startup_script": "export GREETING=hello\n", "shared": True, **overrides,
    }  # fmt: skip


@pytest.fixture
def churn(api, alice, lab, small) -> Environment:
    response = api(alice).post("/api/v1/environments/", create_body(), format="json")
    assert response.status_code == 201, response.json()
    return Environment.objects.get(slug="churn")


def test_defining_an_environment_answers_201_with_its_first_revision_not_built(api, alice, churn):
    detail = api(alice).get("/api/v1/environments/churn/").json()

    assert (detail["team"], detail["shared"], detail["status"]) == ("demo", True, "draft")
    revision = detail["revisions"][0]
    assert (revision["number"], revision["status"], revision["digest"], revision["lock"]) == (1, "pending", "", [])
    assert revision["ref"] == "churn@1" and revision["base_image"] == "lab"
    assert revision["base_digest"] == "sha256:" + "b" * 64
    assert revision["secret_env"] == {"API_TOKEN": "********"}
    assert AuditEvent.objects.get(action="environment.create").details["secret_names"] == "********"


def test_environment_images_stay_out_of_the_catalog(api, alice, root, churn):
    assert [i["slug"] for i in api(alice).get("/api/v1/images/").json()] == ["lab"]
    assert api(root).get(f"/api/v1/images/{churn.image.slug}/").status_code == 404
    response = api(alice).post(
        "/api/v1/workspaces/",
        {"name": "x", "image": churn.image.slug, "profile": "small", "team": "demo"},
        format="json",
    )
    assert response.status_code == 400


def test_bad_recipes_are_refused_naming_the_field(api, alice, lab, small):
    cases = {
        "pip": {"pip": ["numpy; rm -rf /"]},
        "apt": {"apt": ["vim && curl x"]},
        "env": {"env": {"PARAM_X": "1"}},
        "slug": {"slug": "new"},
        "base_image": {"base_image": "nope"},
    }
    for field, override in cases.items():
        response = api(alice).post("/api/v1/environments/", create_body(**override), format="json")
        assert response.status_code == 400, field
        assert field in response.json()["errors"], (field, response.json())
    assert not Environment.objects.exists()


def test_building_answers_202_and_a_built_revision_is_rebuilt_from_its_lock(
    api, alice, churn, django_capture_on_commit_callbacks
):
    response = api(alice).post("/api/v1/environments/churn/build/", {}, format="json")
    assert response.status_code == 202
    assert (response.json()["revision"], response.json()["status"]) == (1, "queued")
    built(churn.revisions.get(number=1))

    again = api(alice).post("/api/v1/environments/churn/build/", {}, format="json").json()

    assert again["revision"] == 2
    second = churn.revisions.get(number=2)
    assert (second.origin, second.from_lock, second.pip_requirements) == ("lock", [SIX], ["six==1.17.0"])
    assert second.secret_env_names == ["API_TOKEN"]
    assert AuditEvent.objects.filter(action="environment.build").count() == 2


def test_members_launch_but_only_the_creator_and_team_admins_change_it(api, alice, bob, churn):
    response = api(bob).post("/api/v1/environments/churn/build/", {}, format="json")

    assert response.status_code == 403
    assert AuditEvent.objects.get(action="environment.build").outcome == "denied"
    assert api(bob).get("/api/v1/environments/churn/").status_code == 200


def test_a_revision_lists_what_changed_in_its_packages(api, alice, churn):
    built(churn.revisions.get(number=1))
    body = {"pip": ["six==1.17.0", "idna==3.10"], "env": {"MODE": "serve"}}

    response = api(alice).post("/api/v1/environments/churn/revisions/", body, format="json")

    assert response.status_code == 201, response.json()
    second = churn.revisions.get(number=2)
    assert second.secret_env_names == ["API_TOKEN"]  # left out: kept
    built(second, lock=(SIX, IDNA), packages=(("pip", "23.0.1"), ("six", "1.17.0"), ("idna", "3.10")))
    changes = api(alice).get("/api/v1/environments/churn/").json()["revisions"][0]["changes"]
    assert changes["added"] == ["idna==3.10"] and changes["compared"] == "installed"
    assert "env changed: MODE" in changes["recipe"]


def test_an_unchanged_recipe_makes_no_revision(api, alice, churn):
    response = api(alice).post("/api/v1/environments/churn/revisions/", {}, format="json")
    assert response.status_code == 400 and "Nothing changed" in response.json()["detail"]


def test_masked_secret_values_keep_the_stored_ones(alice, churn):
    previous = churn.revisions.get()
    recipe = env_services.Recipe(
        base_image=previous.base_revision.image, pip=("six==1.17.0",), secret_env={"API_TOKEN": "********"},
        env={"MODE": "other"},
    )  # fmt: skip
    revision = env_services.environment_revise(environment=churn, recipe=recipe, by=alice, actor=Actor.system())
    assert env_services.environment_workload_env(revision)["API_TOKEN"] == SECRET


def test_package_changes_say_added_removed_upgraded_and_downgraded():
    diff = package_diff({"a": "1.0", "b": "2.0", "c": "1.0"}, {"a": "1.1", "c": "0.9", "d": "3"})
    assert diff.as_dict() == {"added": ["d==3"], "removed": ["b==2.0"], "upgraded": ["a 1.0 → 1.1"],
                              "downgraded": ["c 1.0 → 0.9"]}  # fmt: skip
    assert requirements_pinned(["six", "idna>=3"], ["idna==3.10"]) == ["six", "idna==3.10"]


def test_a_site_packages_tar_lists_its_distributions():
    import io
    import tarfile

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        names = [
            "site-packages",
            "site-packages/six-1.17.0.dist-info",
            "site-packages/six.py",
            "site-packages/typing_extensions-4.12.2.dist-info",
            "site-packages/six-1.17.0.dist-info/METADATA",
        ]
        for name in names:
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.REGTYPE if name.endswith((".py", "METADATA")) else tarfile.DIRTYPE
            tar.addfile(entry, io.BytesIO(b""))
    assert site_packages_versions([out.getvalue()]) == {"six": "1.17.0", "typing-extensions": "4.12.2"}


def test_only_team_admins_choose_the_team_default(api, alice, bob, churn):
    built(churn.revisions.get(number=1))

    refused = api(bob).post("/api/v1/environments/churn/default/", {"revision": 1}, format="json")
    chosen = api(alice).post("/api/v1/environments/churn/default/", {"revision": 1}, format="json")

    assert refused.status_code == 403
    assert chosen.status_code == 200 and chosen.json()["team_default"] == 1
    events = AuditEvent.objects.filter(action="environment.default_set").order_by("id")
    outcomes = list(events.values_list("outcome", flat=True))
    assert outcomes == ["denied", "ok"]
    assert api(alice).post("/api/v1/environments/churn/share/", {"shared": False}, format="json").status_code == 400


def test_an_unbuilt_revision_cannot_be_the_default_or_launched(api, alice, churn, small):
    assert api(alice).post("/api/v1/environments/churn/default/", {"revision": 1}, format="json").status_code == 400
    response = api(alice).post(
        "/api/v1/workspaces/", {"name": "x", "environment": "churn@1", "team": "demo"}, format="json"
    )
    assert response.status_code == 400 and "not built" in response.json()["detail"]


def test_a_workspace_started_from_an_environment_records_it_and_gets_its_env(api, alice, churn):
    revision = built(churn.revisions.get(number=1))

    response = api(alice).post(
        "/api/v1/workspaces/", {"name": "from-env", "environment": "churn@1", "team": "demo"}, format="json"
    )

    assert response.status_code == 201, response.json()
    data = response.json()
    assert (data["environment"], data["image_digest"], data["profile"]) == ("churn@1", revision.digest, "small")
    workspace = Workspace.objects.get(pk=data["id"])
    spec = workspace_services.workspace_spec(workspace)
    assert spec.env["MODE"] == "train" and spec.env["API_TOKEN"] == SECRET
    assert spec.command[:2] == ("/bin/sh", "-c") and spec.command[-1] == "jupyter-lab"
    assert SECRET not in json.dumps(data)


def test_the_team_default_is_used_when_nothing_is_named(api, alice, churn, lab):
    revision = built(churn.revisions.get(number=1))
    env_services.environment_default_set(team=churn.team, revision=revision, by=alice, actor=Actor.system())

    response = api(alice).post("/api/v1/workspaces/", {"name": "plain", "team": "demo"}, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["environment"] == "churn@1"


def test_a_job_from_an_environment_runs_its_start_up_script_first(api, alice, churn):
    built(churn.revisions.get(number=1))
    body = {"name": "train", "team": "demo", "environment": "churn@1", "command": ["python3", "train.py"],
            "parameters": {"lr": 0.1}}  # fmt: skip

    response = api(alice).post("/api/v1/jobs/", body, format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["environment"] == "churn@1"
    job = Job.objects.get(pk=response.json()["id"])
    spec = job_services.job_spec_for_runtime(job)
    assert spec.command[-2:] == ("python3", "train.py") and ". /etc/dockyard/startup.sh" in spec.command[2]
    assert (spec.env["MODE"], spec.env["API_TOKEN"], spec.env["PARAM_LR"]) == ("train", SECRET, "0.1")
    assert job_services.job_spec_record(job)["environment"] == "churn@1"


def test_another_team_cannot_see_or_launch_the_teams_environment(api, carol, churn, small):
    built(churn.revisions.get(number=1))
    client = api(carol)

    assert client.get("/api/v1/environments/").json() == []
    assert client.get("/api/v1/environments/churn/").status_code == 404
    assert client.get("/api/v1/environments/churn/export").status_code == 404
    response = client.post(
        "/api/v1/workspaces/", {"name": "x", "environment": "churn@1", "team": "research", "profile": "small"},
        format="json",
    )  # fmt: skip
    assert (
        response.status_code == 400
        and response.json()["detail"] == "environment: There is no environment 'churn' you can use."
    )
    job = {"name": "x", "team": "research", "environment": "churn@1", "command": "true", "profile": "small"}
    assert client.post("/api/v1/jobs/", job, format="json").status_code == 400


def test_a_private_environment_is_its_creators_alone(api, alice, bob, lab, small):
    api(bob).post("/api/v1/environments/", create_body(slug="mine", shared=False), format="json")

    assert api(alice).get("/api/v1/environments/mine/").status_code == 404
    assert [e["slug"] for e in api(bob).get("/api/v1/environments/").json()] == ["mine"]


def test_export_then_import_on_another_team_keeps_lock_and_base_digest(api, alice, carol, churn, lab, small):
    revision = built(churn.revisions.get(number=1))

    exported = api(alice).get("/api/v1/environments/churn/export")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/yaml")
    text = exported.content.decode()
    assert SECRET not in text
    document = yaml.safe_load(text)
    assert document["lock"] == [SIX] and document["secret_env"] == ["API_TOKEN"]

    response = api(carol).post(
        "/api/v1/environments/import", {"team": "research", "yaml": text, "slug": "churn-copy"}, format="json"
    )

    assert response.status_code == 201, response.json()
    imported = EnvironmentRevision.objects.get(environment__slug="churn-copy")
    assert (imported.from_lock, imported.base_digest, imported.origin) == ([SIX], revision.base_digest, "import")
    assert any("API_TOKEN" in w for w in response.json()["warnings"])
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"environment.export", "environment.import"} <= actions


def test_the_exported_file_can_be_uploaded_as_a_form_and_a_binary_one_is_refused(api, alice, churn, lab):
    from django.core.files.uploadedfile import SimpleUploadedFile

    built(churn.revisions.get(number=1))
    _, text = exchange.environment_export(environment=churn, by=alice, actor=Actor.system())

    uploaded = api(alice).post("/api/v1/environments/import", {
        "team": "demo", "slug": "churn-upload", "file": SimpleUploadedFile("churn.yaml", text.encode())
    }, format="multipart")  # fmt: skip
    binary = api(alice).post("/api/v1/environments/import", {
        "team": "demo", "slug": "churn-binary", "file": SimpleUploadedFile("churn.yaml", b"\xff\xfe\x00yaml")
    }, format="multipart")  # fmt: skip

    assert uploaded.status_code == 201, uploaded.json()
    assert EnvironmentRevision.objects.get(environment__slug="churn-upload").from_lock == [SIX]
    assert binary.status_code == 400 and "not UTF-8 text" in binary.json()["errors"]["file"][0]
    assert not Environment.objects.filter(slug="churn-binary").exists()


def test_an_import_says_what_it_cannot_honour(api, alice, churn, lab):
    built(churn.revisions.get(number=1))
    _, text = exchange.environment_export(environment=churn, by=alice, actor=Actor.system())
    document = envfile.parse(text)

    unknown_base = text.replace("image: lab", "image: no-such-image")
    refused = api(alice).post(
        "/api/v1/environments/import?team=demo&slug=x", unknown_base, content_type="application/yaml"
    )
    other_digest = text.replace(document.base_digest, "sha256:" + "c" * 64)
    checked = api(alice).post(
        "/api/v1/environments/import?team=demo&slug=other&dry_run=1", other_digest, content_type="application/yaml"
    )

    assert refused.status_code == 400 and "no-such-image" in refused.json()["detail"]
    assert checked.status_code == 200 and checked.json()["environment"] is None
    assert any("not sha256:cccc" in w for w in checked.json()["warnings"])
    assert not Environment.objects.filter(slug__in=["x", "other"]).exists()


def test_pages_show_revisions_and_never_secret_values(web, alice, churn):
    built(churn.revisions.get(number=1))
    client = web(alice)

    pages = ["/environments/", "/environments/churn/", "/environments/churn/revise/", "/environments/new/",
             "/environments/import/"]  # fmt: skip
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url
    detail = client.get("/environments/churn/").content.decode()
    assert "churn@1" in detail and "API_TOKEN=********" in detail and "six==1.17.0 --hash=sha256:" in detail


def test_the_define_page_creates_and_queues_a_build(web, alice, lab, small, django_capture_on_commit_callbacks):
    form = {"slug": "page-env", "name": "Page env", "team": "demo", "shared": "on", "base_image": "lab",
            "pip": "six==1.17.0\n", "apt": "", "env": "MODE=a", "secret_env": f"TOKEN={SECRET}", "profile": "small",
            "startup_script": ""}  # fmt: skip

    response = web(alice).post("/environments/new/", form)

    assert response.status_code == 302, response.content.decode()[:2000]
    revision = EnvironmentRevision.objects.get(environment__slug="page-env")
    assert revision.image_revision.status == "building"
    assert env_services.environment_workload_env(revision) == {"MODE": "a", "TOKEN": SECRET}


def test_the_environment_list_costs_a_fixed_number_of_queries(api, alice, lab, small, django_assert_num_queries):
    for n in range(4):
        api(alice).post("/api/v1/environments/", create_body(slug=f"env{n}"), format="json")
    client = api(alice)
    client.get("/api/v1/environments/")
    with django_assert_num_queries(3):
        assert len(client.get("/api/v1/environments/").json()) == 4


def test_launch_choices_offer_built_revisions_people_may_see(alice, carol, churn):
    built(churn.revisions.get(number=1))
    assert [r.ref for r in selectors.environment_launch_choices(user=alice, workspace=True)] == ["churn@1"]
    assert selectors.environment_launch_choices(user=carol) == []


def test_a_finished_job_opens_in_a_workspace_from_its_page(web, alice, carol, churn, small):
    revision = built(churn.revisions.get(number=1))
    job_spec = job_services.JobSpec(
        name="train", team=churn.team, profile=small, command=["python3", "train.py"], environment_revision=revision,
        parameters={"lr": 0.1}, secret_env={"KEY": SECRET},
    )  # fmt: skip
    job = job_services.job_submit(owner=alice, job_spec=job_spec, actor=Actor.system())
    client = web(alice)
    assert "Open in workspace" not in client.get(f"/jobs/{job.pk}/").content.decode()  # not finished yet
    Job.objects.filter(pk=job.pk).update(state="succeeded")

    page = client.get(f"/jobs/{job.pk}/").content.decode()
    response = client.post(f"/jobs/{job.pk}/workspace/")

    assert "Open in workspace" in page and SECRET not in page
    workspace = Workspace.objects.get(source_job=job)
    assert response.status_code == 302 and response["Location"] == f"/workspaces/{workspace.pk}/"
    assert (workspace.image_digest, workspace.environment_revision_id) == (job.image_digest, revision.pk)
    spec = workspace_services.workspace_spec(workspace)
    assert (spec.env["PARAM_LR"], spec.env["KEY"], spec.env["API_TOKEN"]) == ("0.1", SECRET, SECRET)
    detail = client.get(f"/workspaces/{workspace.pk}/").content.decode()
    assert "Reproduces" in detail and "KEY=********" in detail and SECRET not in detail
    assert AuditEvent.objects.get(action="workspace.create").details["reproduces"] == str(job.pk)
    web(carol)
    assert client.post(f"/jobs/{job.pk}/workspace/").status_code == 404


def test_the_job_form_offers_environments_and_submits_from_one(web, alice, churn, small):
    built(churn.revisions.get(number=1))
    client = web(alice)

    page = client.get("/jobs/new/?image=churn@1").content.decode()
    form = {"name": "from-form", "team": "demo", "image": "churn@1", "profile": "small", "command": "echo hi",
            "priority": "0", "max_retries": "0", "code_from": "none"}  # fmt: skip
    response = client.post("/jobs/new/", form)

    assert '<option value="churn@1" selected>' in page and '<optgroup label="Environments">' in page
    assert response.status_code == 302, response.content.decode()[:3000]
    job = Job.objects.get(name="from-form")
    assert job.environment_revision.ref == "churn@1" and job.image == churn.image


def test_a_job_naming_nothing_runs_the_team_default_at_its_size(api, alice, churn):
    revision = built(churn.revisions.get(number=1))
    env_services.environment_default_set(team=churn.team, revision=revision, by=alice, actor=Actor.system())

    response = api(alice).post("/api/v1/jobs/", {"name": "d", "team": "demo", "command": "true"}, format="json")

    assert response.status_code == 201, response.json()
    assert (response.json()["environment"], response.json()["profile"]) == ("churn@1", "small")


def test_the_import_page_imports_the_file_and_builds_it_from_its_lock(web, alice, churn):
    built(churn.revisions.get(number=1))
    _, text = exchange.environment_export(environment=churn, by=alice, actor=Actor.system())

    response = web(alice).post("/environments/import/", {"team": "demo", "text": text, "slug": "copy"}, follow=True)

    page = response.content.decode()
    assert "copy imported; it is building from its lock." in page and "set API_TOKEN in a new revision" in page
    imported = EnvironmentRevision.objects.get(environment__slug="copy")
    assert (imported.image_revision.status, imported.from_lock) == ("building", [SIX])
