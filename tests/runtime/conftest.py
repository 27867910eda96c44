"""A real Docker engine for runtime tests; everything made is labelled with this run and removed."""

from __future__ import annotations

import uuid

import docker
import pytest
from django.conf import settings

from portal.runtime.base import Mount, WorkloadSpec
from portal.runtime.docker import DockerBackend

TEST_RUN = uuid.uuid4().hex[:12]
RUN_LABEL = "dockyard.test-run"


@pytest.fixture(scope="session")
def engine():
    client = docker.from_env()
    yield client
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={TEST_RUN}"}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"{RUN_LABEL}={TEST_RUN}"}):
        volume.remove(force=True)
    client.close()


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
