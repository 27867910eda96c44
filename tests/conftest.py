"""Shared fixtures: the people every test talks about, and API clients acting as them.

alice is team admin of `demo`, bob a member of `demo`, carol team admin of `research`,
dave belongs to no team (the outsider), and root is a platform admin (staff).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import docker
import pytest
import redis
from django.conf import settings
from playwright.sync_api import sync_playwright
from rest_framework.test import APIClient

from portal.accounts.models import Role
from portal.audit.services import Actor
from portal.catalog import services as catalog_services
from portal.catalog.models import Image, ImageRevision, ImageStatus, SourceType
from portal.catalog.services import SourceSpec
from tests.factories import MembershipFactory, TeamFactory, UserFactory

# Every container and volume a test run makes carries this label, and is removed at the end.
TEST_RUN = uuid.uuid4().hex[:12]
RUN_LABEL = "dockyard.test-run"


@pytest.fixture(scope="session", autouse=True)
def empty_broker():
    """Each run starts with the test Redis database empty: tasks queued by an earlier run that
    was stopped half-way must not reach this run's workers."""
    if os.environ.get("REDIS_URL"):
        server = redis.Redis.from_url(os.environ["REDIS_URL"])
        server.flushdb()
        server.close()


@pytest.fixture(scope="session")
def engine():
    """The real Docker engine; at the end of the run, everything labelled with it is removed."""
    client = docker.from_env()
    yield client
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={TEST_RUN}"}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"{RUN_LABEL}={TEST_RUN}"}):
        volume.remove(force=True)
    client.close()


@pytest.fixture(autouse=True)
def workload_labels(settings):
    """Workloads made in this process carry the run's label, and the backend sees only those."""
    settings.DOCKYARD_WORKLOAD_LABELS = {RUN_LABEL: TEST_RUN}


@pytest.fixture
def demo_team(db):
    return TeamFactory(slug="demo", name="Demo team")


@pytest.fixture
def research_team(db):
    return TeamFactory(slug="research", name="Research")


@pytest.fixture
def alice(demo_team):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, team=demo_team, role=Role.TEAM_ADMIN)
    return user


@pytest.fixture
def bob(demo_team):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, team=demo_team, role=Role.MEMBER)
    return user


@pytest.fixture
def carol(research_team):
    user = UserFactory(username="carol")
    MembershipFactory(user=user, team=research_team, role=Role.TEAM_ADMIN)
    return user


@pytest.fixture
def dave(db):
    return UserFactory(username="dave")


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def api():
    """Returns a function giving an API client signed in as a user (or anonymous)."""

    def make(user=None) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def web(client):
    """Returns a function giving Django's test client logged in as a user (session cookie)."""

    def make(user):
        client.force_login(user)
        return client

    return make


@pytest.fixture
def image_slug(request, engine):
    """An image slug unique to this test and run; images built under it are removed afterwards."""
    slug = f"t{TEST_RUN[:8]}-{uuid.uuid4().hex[:6]}"
    yield slug
    for image in engine.images.list(name=f"dockyard/{slug}*"):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


@pytest.fixture
def ready_image(db):
    """Makes a catalog image whose current revision is ready, pinned to a made-up digest,
    for logic that never starts a container (nothing is built)."""

    def make(slug: str) -> Image:
        image = Image.objects.create(slug=slug, name=slug, default_command=["jupyter-lab"], status=ImageStatus.READY)
        revision = ImageRevision.objects.create(image=image, number=1, source_type="build", digest="sha256:" + "a" * 64)
        ImageRevision.objects.filter(pk=revision.pk).update(status="ready")
        Image.objects.filter(pk=image.pk).update(current_revision=revision)
        return Image.objects.get(pk=image.pk)

    return make


@pytest.fixture
def make_image(root):
    """Creates a catalog image built from the local base image (not built yet)."""

    def make(slug: str, *, pip=(), apt=(), **details):
        source = SourceSpec(
            source_type=SourceType.BUILD,
            base_image=settings.DOCKYARD_BASE_IMAGE,
            pip_requirements=tuple(pip),
            apt_packages=tuple(apt),
        )
        details = {"name": slug, "framework": "Python", "framework_version": "3.11", **details}
        return catalog_services.image_create(slug=slug, source=source, details=details, by=root, actor=Actor.system())

    return make


# --- A real browser: Debian's Chromium driven by Playwright --------------------------------------

CHROMIUM = os.environ.get("DOCKYARD_CHROMIUM", "/usr/bin/chromium")
# Flags for a sandboxed machine with no network beyond loopback: no background calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent / "artifacts"  # git-ignored


@pytest.fixture(scope="session")
def chromium():
    # Playwright's sync API runs an event loop in this thread; Django's ORM, used by the
    # test itself between browser steps, is still called synchronously, which is safe here.
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request):
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()
