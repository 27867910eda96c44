"""Runs the backend tests on the fake API server or, with DOCKYARD_TEST_KUBECONFIG, a real cluster.

A test states what the workload does (its command really does it on a cluster); the driver
plays the cluster's part only on the fake (the kubelet running the pod, printing, exiting,
the scheduler refusing it), and does nothing on a real cluster, where those things happen.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from kubernetes.client.exceptions import ApiException

from portal.runtime import k8s_manifests as m
from portal.runtime.base import Handle, Mount, WorkloadSpec
from portal.runtime.kubernetes import KubernetesBackend
from tests.conftest import RUN_LABEL, TEST_RUN
from tests.runtime.k8s_fake import FakeKube

REAL_KUBECONFIG = os.environ.get("DOCKYARD_TEST_KUBECONFIG", "")
NO_CLUSTER = "DOCKYARD_TEST_KUBECONFIG is not set: the Kubernetes backend ran against the fake API server only"
# On a real cluster the image must be pullable or loaded (kind load docker-image ...).
REAL_IMAGE = os.environ.get("DOCKYARD_TEST_K8S_IMAGE", "")


class FakeDriver:
    """Plays the kubelet, the scheduler and Kueue on the fake API server."""

    real = False
    timeout = 10.0

    def __init__(self, fake: FakeKube):
        self.fake = fake
        # Fetch helpers start at once, as on an idle cluster.
        fake.auto_run = lambda pod: m.LABEL_HELPER_FOR in (pod["metadata"].get("labels") or {})

    def pods(self, handle: Handle) -> list[dict]:
        return sorted(
            self.fake.find("pods", None, f"dockyard.uid={handle.uid}"),
            key=lambda p: int(p["metadata"].get("annotations", {}).get(m.INDEX_ANNOTATION, 0)),
        )

    def _each(self, handle: Handle, index: int | None):
        pods = self.pods(handle)
        assert pods, f"no pod for {handle.uid}"
        return pods if index is None else [pods[index]]

    def runs(self, handle: Handle, index: int | None = None) -> None:
        for pod in self._each(handle, index):
            if pod["status"]["phase"] == "Pending":
                self.fake.run(pod["metadata"]["namespace"], pod["metadata"]["name"])

    def prints(self, handle: Handle, *lines: str) -> None:
        pod = self.pods(handle)[0]
        self.fake.log(pod["metadata"]["namespace"], pod["metadata"]["name"], *lines)

    def exits(self, handle: Handle, code: int, index: int | None = None) -> None:
        for pod in self._each(handle, index):
            self.fake.exit(pod["metadata"]["namespace"], pod["metadata"]["name"], code)

    def ooms(self, handle: Handle) -> None:
        pod = self.pods(handle)[0]
        self.fake.oom(pod["metadata"]["namespace"], pod["metadata"]["name"])

    def unschedulable(self, handle: Handle, message: str) -> None:
        pod = self.pods(handle)[0]
        self.fake.unschedulable(pod["metadata"]["namespace"], pod["metadata"]["name"], message)

    def pull_fails(self, handle: Handle, message: str) -> None:
        pod = self.pods(handle)[0]
        self.fake.pull_backoff(pod["metadata"]["namespace"], pod["metadata"]["name"], message)

    def writes(self, handle: Handle, team: str, mount: str, path: str, data: bytes) -> None:
        self.fake.write(m.namespace_name(team), m.claim_name(handle.uid, mount), path, data)

    def kueue_admits(self, team: str, handle: Handle) -> None:
        self.fake.kueue_admit(m.namespace_name(team), handle.name)


class RealDriver:
    """On a real cluster the workload's own command does what the test describes."""

    real = True
    timeout = 240.0

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def make_backend(kubeconfig: str) -> KubernetesBackend:
    return KubernetesBackend(kubeconfig=kubeconfig, context="")


def start_fake(tmp_path: Path) -> tuple[FakeKube, str]:
    fake = FakeKube().start()
    return fake, str(fake.kubeconfig(tmp_path / "kubeconfig"))


def spec_for(command: list[str], *, team: str = "demo", kind: str = "probe", **fields) -> WorkloadSpec:
    """A workload labelled with this test run (so a real cluster is cleaned up after it)."""
    fields.setdefault("mounts", (Mount(name="data", target="/data"),))
    fields.setdefault("memory_mib", 128)
    fields.setdefault("cpus", 0.2)
    return WorkloadSpec(
        uid=str(uuid.uuid4()),
        kind=kind,
        owner="alice",
        team=team,
        image=REAL_IMAGE or settings.DOCKYARD_BASE_IMAGE,
        command=tuple(command),
        labels={RUN_LABEL: TEST_RUN},
        **fields,
    )


def clean_real_cluster(backend: KubernetesBackend) -> None:
    """Removes what this test run made on a real cluster (workloads and their volumes). A test
    may have removed some already, and the cluster's garbage collector others meanwhile: what
    is gone is done."""
    for observed in backend.list_managed():
        backend.remove(backend.handle_for(observed.uid), keep_data=False)
    labels = m.selector({RUN_LABEL: TEST_RUN})
    for claim in backend.core.list_persistent_volume_claim_for_all_namespaces(label_selector=labels).items:
        try:
            backend.core.delete_namespaced_persistent_volume_claim(claim.metadata.name, claim.metadata.namespace)
        except ApiException as error:
            if error.status != 404:
                raise


def cluster_params():
    return [
        pytest.param("fake", id="fake"),
        pytest.param("real", id="real", marks=pytest.mark.skipif(not REAL_KUBECONFIG, reason=NO_CLUSTER)),
    ]
