"""Runtime tests on the real Docker engine (the `engine` fixture cleans up after the run)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from portal.runtime.base import Mount, WorkloadSpec
from portal.runtime.docker import DockerBackend
from tests.conftest import RUN_LABEL, TEST_RUN


@pytest.fixture
def backend(engine):
    return DockerBackend()


@pytest.fixture
def make_spec():
    """Builds a spec for the base image, labelled with this test run so it is cleaned up."""

    def make(command: list[str], **fields) -> WorkloadSpec:
        fields.setdefault("mounts", (Mount(name="data", target="/data"),))
        return WorkloadSpec(
            uid=str(uuid.uuid4()),
            kind="probe",
            owner="alice",
            team="demo",
            image=settings.DOCKYARD_BASE_IMAGE,
            command=tuple(command),
            labels={RUN_LABEL: TEST_RUN},
            **fields,
        )

    return make
