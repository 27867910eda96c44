"""The Docker engine backend (docker SDK). Docker types never leave this module."""

from __future__ import annotations

import docker
from django.conf import settings
from docker.errors import DockerException

from portal.runtime.base import RuntimeError_

# How long one call to the engine may take before the engine counts as not answering.
API_TIMEOUT_S = 10


class DockerBackend:
    name = "docker"

    def _client(self) -> docker.DockerClient:
        try:
            if settings.DOCKER_HOST:
                return docker.DockerClient(base_url=settings.DOCKER_HOST, timeout=API_TIMEOUT_S)
            return docker.from_env(timeout=API_TIMEOUT_S)
        except DockerException as error:
            raise RuntimeError_(f"cannot reach the Docker engine: {error}", reason="engine_unreachable") from error

    def ping(self) -> None:
        client = self._client()
        try:
            client.ping()
        except DockerException as error:
            raise RuntimeError_(f"the Docker engine does not answer: {error}", reason="engine_unreachable") from error
        finally:
            client.close()
