"""The catalog through the API and the pages: who sees what, who may change it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from portal.audit.models import AuditEvent
from portal.catalog.models import Image, ImageRevision, ImageStatus

pytestmark = pytest.mark.django_db


def ready(image: Image, digest: str = "sha256:" + "a" * 64) -> Image:
    """Marks an image built, as a finished build would (no engine needed for these tests)."""
    revision = image.revisions.get(number=1)
    ImageRevision.objects.filter(pk=revision.pk).update(status="ready", digest=digest, size_bytes=123)
    Image.objects.filter(pk=image.pk).update(current_revision=revision, status=ImageStatus.READY)
    return Image.objects.get(pk=image.pk)


def test_people_see_ready_images_visible_to_their_team(api, bob, carol, make_image, research_team):
    ready(make_image("open-ready"))
    make_image("open-draft")
    private = ready(make_image("research-only", all_teams=False))
    private.teams.set([research_team])

    bobs = [i["slug"] for i in api(bob).get("/api/v1/images/").json()]
    carols = [i["slug"] for i in api(carol).get("/api/v1/images/").json()]

    assert bobs == ["open-ready"]
    assert carols == ["open-ready", "research-only"]
    assert api(bob).get("/api/v1/images/research-only/").status_code == 404
    detail = api(carol).get("/api/v1/images/research-only/").json()
    assert detail["digest"] == "sha256:" + "a" * 64 and detail["revisions"][0]["number"] == 1


def test_list_filters_by_framework_gpu_and_version(api, bob, make_image):
    ready(make_image("torch", framework="PyTorch", framework_version="2.5.1", gpu_capable=True))
    ready(make_image("plain"))

    assert [i["slug"] for i in api(bob).get("/api/v1/images/?framework=pytorch").json()] == ["torch"]
    assert [i["slug"] for i in api(bob).get("/api/v1/images/?gpu=no").json()] == ["plain"]
    assert [i["slug"] for i in api(bob).get("/api/v1/images/?version=2.5").json()] == ["torch"]


def test_image_list_costs_a_fixed_number_of_queries(api, bob, make_image, django_assert_num_queries):
    for n in range(5):
        ready(make_image(f"img{n}"))
    client = api(bob)
    client.get("/api/v1/images/")
    with django_assert_num_queries(1):
        assert len(client.get("/api/v1/images/").json()) == 5


def test_staff_create_an_image_through_the_api(api, root, research_team):
    body = {
        "slug": "cuda-torch",
        "name": "Torch",
        "framework": "PyTorch",
        "teams": ["research"],
        "source": {"type": "pull", "pull_ref": "pytorch/pytorch:2.5.1"},
    }

    response = api(root).post("/api/v1/images/", body, format="json")

    assert response.status_code == 201, response.json()
    image = Image.objects.get(slug="cuda-torch")
    assert (image.status, image.all_teams, list(image.teams.all())) == ("draft", False, [research_team])
    assert AuditEvent.objects.get(action="image.create").actor_name == "root"


def test_spec_errors_come_back_as_sentences(api, root):
    body = {"slug": "bad", "name": "Bad", "source": {"type": "build", "apt_packages": ["vim; rm -rf /"]}}

    response = api(root).post("/api/v1/images/", body, format="json")

    assert response.status_code == 400
    assert "Not a Debian package name" in response.json()["detail"]
    assert not Image.objects.filter(slug="bad").exists()


def test_people_who_are_not_staff_cannot_change_the_catalog(api, alice, make_image):
    make_image("x")
    client = api(alice)

    assert client.post("/api/v1/images/", {}, format="json").status_code == 403
    assert client.post("/api/v1/images/x/builds/", {}, format="json").status_code == 403
    assert client.post("/api/v1/images/x/deprecate/", {}, format="json").status_code == 403


def test_staff_queue_a_build_through_the_api(api, root, make_image, django_capture_on_commit_callbacks):
    make_image("x")

    with django_capture_on_commit_callbacks() as callbacks:
        response = api(root).post("/api/v1/images/x/builds/", {}, format="json")

    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert len(callbacks) == 1  # the task is sent only once the build row is committed


def test_catalog_page_shows_digest_and_filters(web, bob, make_image):
    ready(make_image("torch", framework="PyTorch", gpu_capable=True, cuda_version="12.4"))
    ready(make_image("plain"))
    client = web(bob)

    page = client.get(reverse("image-list"), {"gpu": "yes"}).content.decode()

    assert "torch" in page and "CUDA 12.4" in page and "sha256:aaaaaaaaaaaa" in page
    assert "plain" not in page
    assert "New image" not in page


def test_staff_pages_are_403_for_everyone_else(web, alice, make_image):
    make_image("x")
    client = web(alice)

    assert client.get(reverse("image-create")).status_code == 403
    assert client.post(reverse("image-build-start", args=["x"])).status_code == 403
    assert client.get(reverse("image-edit", args=["x"])).status_code == 403


def test_staff_create_revise_and_deprecate_through_the_pages(web, root, make_image):
    client = web(root)
    form = {
        "slug": "notebook", "name": "Notebook", "all_teams": "on", "source_type": "build",
        "pip_requirements": "numpy>=2\nrequests", "default_command": "jupyter-lab\n--ip=0.0.0.0",
    }  # fmt: skip

    assert client.post(reverse("image-create"), form).status_code == 302
    image = Image.objects.get(slug="notebook")
    assert image.default_command == ["jupyter-lab", "--ip=0.0.0.0"]
    assert image.revisions.get().pip_requirements == ["numpy>=2", "requests"]

    client.post(reverse("image-revise", args=["notebook"]), {"source_type": "build", "pip_requirements": "numpy>=2"})
    assert image.revisions.count() == 2

    successor = make_image("notebook2")
    client.post(reverse("image-deprecate", args=["notebook"]), {"successor": successor.pk, "message": "Old."})
    image.refresh_from_db()
    assert (image.status, image.successor) == (ImageStatus.DEPRECATED, successor)
    assert "Use <a href" in client.get(reverse("image-detail", args=["notebook"])).content.decode()


def test_create_form_explains_a_bad_pip_line(web, root):
    form = {"slug": "x", "name": "X", "all_teams": "on", "source_type": "build", "pip_requirements": "--index-url x"}

    response = web(root).post(reverse("image-create"), form)

    assert response.status_code == 400
    assert "Not a pip requirement" in response.content.decode()
    assert not Image.objects.exists()
