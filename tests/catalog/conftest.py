"""Catalog tests use `make_image` and `image_slug` from tests/conftest.py; the environment tests
that run workspaces and jobs for real also use the running portal of the workspace and job tests."""

from __future__ import annotations

import uuid

import pytest

from portal.catalog.environments.services import IMAGE_PREFIX
from tests.conftest import TEST_RUN
from tests.jobs.conftest import portal_env  # noqa: F401  (fixtures)
from tests.workspaces.conftest import ECHO_SERVER, built_image, people, portal, small  # noqa: F401  (fixtures)


@pytest.fixture
def env_slug(engine):
    """An environment slug unique to this test and run; its images are removed afterwards."""
    slug = f"e{TEST_RUN[:8]}-{uuid.uuid4().hex[:6]}"
    yield slug
    for image in engine.images.list(name=f"dockyard/{IMAGE_PREFIX}{slug}*"):
        for tag in image.tags:
            engine.images.remove(tag, force=True)


@pytest.fixture
def echo_base(image_slug):
    """A catalog image with the Jupyter stand-in as its workspace command (a real JupyterLab is
    not needed to show what environments do)."""
    return built_image(image_slug, command=["python3", "-c", ECHO_SERVER])
