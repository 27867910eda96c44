"""Runtime backends: where workloads run (Docker on one host, or Kubernetes).

`get_backend()` returns the backend chosen by `DOCKYARD_RUNTIME`. Nothing outside this
package sees Docker or Kubernetes types.
"""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from portal.runtime.base import RuntimeBackend, RuntimeError_

__all__ = ["RuntimeBackend", "RuntimeError_", "get_backend"]


@cache
def _backend(name: str, location: str) -> RuntimeBackend:
    # Keyed by where the backend points too, so changed settings get a fresh client.
    if name == "docker":
        from portal.runtime.docker import DockerBackend

        return DockerBackend()
    if name == "kubernetes":
        from portal.runtime.kubernetes import KubernetesBackend

        return KubernetesBackend()
    raise ImproperlyConfigured(f"DOCKYARD_RUNTIME must be 'docker' or 'kubernetes', not {name!r}.")


def get_backend() -> RuntimeBackend:
    location = settings.DOCKER_HOST if settings.DOCKYARD_RUNTIME == "docker" else settings.KUBECONFIG
    return _backend(settings.DOCKYARD_RUNTIME, location)
