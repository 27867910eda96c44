"""The Kubernetes backend (official client). Kubernetes types never leave this module."""

from __future__ import annotations

from django.conf import settings
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from portal.runtime.base import RuntimeError_

API_TIMEOUT_S = 10


class KubernetesBackend:
    name = "kubernetes"

    def _api_client(self) -> client.ApiClient:
        try:
            if settings.KUBECONFIG:
                return config.new_client_from_config(
                    config_file=settings.KUBECONFIG, context=settings.KUBE_CONTEXT or None
                )
            config.load_incluster_config()
            return client.ApiClient()
        except ConfigException as error:
            raise RuntimeError_(f"no usable Kubernetes configuration: {error}", reason="config") from error

    def ping(self) -> None:
        api = self._api_client()
        try:
            client.VersionApi(api).get_code(_request_timeout=API_TIMEOUT_S)
        except Exception as error:
            raise RuntimeError_(f"the Kubernetes API does not answer: {error}", reason="api_unreachable") from error
        finally:
            api.close()
