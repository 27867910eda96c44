"""The Kubernetes backend (official client). Kubernetes types never leave this module.

Manifests are built, and status is read, by the pure functions of `k8s_manifests`; this
module only talks to the API, in plain JSON (`_preload_content=False`), so what it sends and
reads is exactly what the tests validate against the OpenAPI schema.

Each team's workloads live in the namespace `dockyard-<team>` (made on first use, with a
ResourceQuota and a NetworkPolicy); a workspace is a bare Pod plus a ClusterIP Service, a
job a batch/v1 Job (Indexed, with a headless Service, when it spans nodes); homes and
outputs are PersistentVolumeClaims that outlive the pods. The backend holds no state a
caller relies on: everything is found again by the `dockyard.uid` label.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import posixpath
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import urllib3
from django.conf import settings
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream
from kubernetes.utils.quantity import parse_quantity

from portal.runtime import k8s_manifests as m
from portal.runtime.base import (
    LABEL_UID,
    GpuInfo,
    Handle,
    ImageInfo,
    NodeCapacity,
    Observed,
    Progress,
    ProgressCallback,
    RuntimeError_,
    State,
    WorkloadSpec,
    log_lines,
)

logger = logging.getLogger(__name__)

# How the portal reaches workspace pods (DOCKYARD_K8S_REACH).
REACH_SERVICE, REACH_POD_IP = "service", "pod-ip"
# How long a look-up of a workspace's host may take before it counts as not resolving.
RESOLVE_TIMEOUT_S = 3.0
# What `tar` prints when the path to read is not there: the path is missing, not the exec broken.
MISSING_PATH = ("No such file or directory", "Cannot stat")
# Bytes of a tar stream read before archive_get returns: a missing path fails within them (tar
# still writes an empty archive's end blocks), so it is reported as not_found, not mid-stream.
TAR_LOOKAHEAD = 64 * 1024
# Where a pod finds its own namespace (the portal's, for the NetworkPolicy) in-cluster.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A watch request ends by itself after DOCKYARD_K8S_WATCH_TIMEOUT_S; a connection silent for
# this much longer is dead. (A followed log may be quiet for hours: no read timeout there.)
WATCH_READ_MARGIN_S = 30
# Retry delays of the watch loop after an error, doubling up to the last.
WATCH_BACKOFF_S = (0.2, 30.0)
# How often stop() and the fetch helper look at pods while they wait for the kubelet.
POLL_S = 0.5
TERMINAL = ("Succeeded", "Failed")


def _api_error(error: Exception, doing: str) -> RuntimeError_:
    if isinstance(error, ApiException) and error.status:
        detail = _status_message(error)
        if error.status == 404:
            return RuntimeError_(
                f"{doing}: {detail}", reason="not_found", permanent=True, user_message=f"{doing}: not found."
            )
        if error.status in (400, 403, 409, 413, 422):
            return RuntimeError_(
                f"{doing}: {detail}",
                reason="bad_request",
                permanent=True,
                user_message=f"The cluster refused it: {detail}",
            )
        return RuntimeError_(
            f"{doing}: the Kubernetes API answered {error.status} ({detail})",
            reason="api_error",
            user_message="The cluster is not answering right now; Dockyard will retry.",
        )
    return RuntimeError_(
        f"{doing}: the Kubernetes API does not answer ({error})",
        reason="api_unreachable",
        user_message="The cluster is not answering right now; Dockyard will retry.",
    )


def _status_message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message") or str(error.reason)
    except (ValueError, AttributeError):
        return str(error.body or error.reason)


CALL_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class _RawWatch(watch.Watch):
    """Watch events with the object as the API's JSON (`raw_object`), not as models."""

    def get_return_type(self, func):
        return None


class WorkloadIndex:
    """This process's view of Dockyard's pods and Jobs, kept by `watch_workloads`: filled by
    a list, then changed by each watch event. list_managed() reads it while it is fresh."""

    def __init__(self):
        self.lock = threading.Lock()
        self.objects: dict[str, dict[tuple[str, str], dict]] = {"pods": {}, "jobs": {}}
        self.synced: set[str] = set()
        self.heard_at = 0.0

    def replace(self, resource: str, items: list[dict]) -> None:
        with self.lock:
            self.objects[resource] = {_key(item): item for item in items}
            self.synced.add(resource)
            self.heard_at = time.monotonic()

    def apply(self, resource: str, kind: str, obj: dict) -> None:
        with self.lock:
            if kind == "DELETED":
                self.objects[resource].pop(_key(obj), None)
            else:
                self.objects[resource][_key(obj)] = obj
            self.heard_at = time.monotonic()

    def heard(self) -> None:
        with self.lock:
            self.heard_at = time.monotonic()

    def lost(self, resource: str) -> None:
        with self.lock:
            self.synced.discard(resource)

    def fresh(self, max_age_s: float) -> bool:
        with self.lock:
            return self.synced >= {"pods", "jobs"} and time.monotonic() - self.heard_at <= max_age_s

    def snapshot(self) -> tuple[list[dict], list[dict]]:
        with self.lock:
            return list(self.objects["jobs"].values()), list(self.objects["pods"].values())


def _key(obj: dict) -> tuple[str, str]:
    return obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def options() -> m.ClusterOptions:
    """The manifests' cluster-wide choices, from settings (read each time: tests change them)."""
    return m.ClusterOptions(
        scope_labels=dict(settings.DOCKYARD_WORKLOAD_LABELS),
        namespace_prefix=settings.DOCKYARD_K8S_NAMESPACE_PREFIX,
        storage_class=settings.DOCKYARD_K8S_STORAGE_CLASS,
        shared_storage_class=settings.DOCKYARD_K8S_SHARED_STORAGE_CLASS,
        home_size=settings.DOCKYARD_K8S_HOME_SIZE,
        output_size=settings.DOCKYARD_K8S_OUTPUT_SIZE,
        cluster_domain=settings.DOCKYARD_K8S_CLUSTER_DOMAIN,
        portal_namespace=settings.DOCKYARD_K8S_PORTAL_NAMESPACE or _own_namespace(),
        portal_pod_labels=dict(settings.DOCKYARD_K8S_PORTAL_POD_LABELS),
        blocked_egress=tuple(settings.DOCKYARD_K8S_BLOCKED_EGRESS),
        cluster_cidrs=tuple(settings.DOCKYARD_K8S_CLUSTER_CIDRS),
        egress_allow=tuple(settings.DOCKYARD_K8S_EGRESS_ALLOW),
        portal_cidrs=tuple(settings.DOCKYARD_K8S_PORTAL_CIDRS),
        gpu_resource=settings.DOCKYARD_K8S_GPU_RESOURCE,
        gpu_product_label=settings.DOCKYARD_K8S_GPU_PRODUCT_LABEL,
        gpu_tolerations=tuple(settings.DOCKYARD_K8S_GPU_TOLERATIONS),
        master_port=settings.DOCKYARD_K8S_MASTER_PORT,
        job_ttl_s=settings.DOCKYARD_K8S_JOB_TTL_S,
        job_deadline_slack_s=settings.DOCKYARD_K8S_JOB_DEADLINE_SLACK_S,
        termination_grace_s=settings.DOCKYARD_K8S_TERMINATION_GRACE_S,
        image_pull_policy=settings.DOCKYARD_K8S_IMAGE_PULL_POLICY,
        kueue_queues=dict(settings.DOCKYARD_KUEUE_QUEUES),
        kueue_default_queue=settings.DOCKYARD_KUEUE_LOCAL_QUEUE,
    )


def _own_namespace() -> str:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "dockyard"
    except OSError:
        return "dockyard"


class KubernetesBackend:
    name = "kubernetes"
    starts_at_once = False  # pods wait for the scheduler, the image pull or Kueue

    def __init__(self, *, kubeconfig: str | None = None, context: str | None = None):
        self.kubeconfig = settings.KUBECONFIG if kubeconfig is None else kubeconfig
        self.context = settings.KUBE_CONTEXT if context is None else context
        self.index = WorkloadIndex()
        self._teams: dict[str, str] = {}  # team -> limits this process last made its namespace match
        self._watchers: list[threading.Thread] = []
        self._watch_pid = 0
        self._stop = threading.Event()

    # --- Connection ------------------------------------------------------------------------

    @cached_property
    def configuration(self) -> client.Configuration:
        configuration = client.Configuration()
        try:
            if self.kubeconfig:
                config.load_kube_config(
                    config_file=self.kubeconfig, context=self.context or None, client_configuration=configuration
                )
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError) as error:
            raise RuntimeError_(f"no usable Kubernetes configuration: {error}", reason="config") from error
        return configuration

    @cached_property
    def api(self) -> client.ApiClient:
        return client.ApiClient(self.configuration)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @cached_property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    def close(self) -> None:
        """Stops the watch threads and closes connections (tests; a process just exits)."""
        self._stop.set()
        for thread in self._watchers:
            thread.join(timeout=5)
        if "api" in self.__dict__:
            self.api.close()

    def _call(self, method: Callable, *args, doing: str, missing_ok: bool = False, **kwargs) -> dict | None:
        """One API call, its answer as the API's JSON; None for a 404 when `missing_ok`."""
        try:
            response = method(
                *args, _preload_content=False, _request_timeout=settings.DOCKYARD_K8S_API_TIMEOUT_S, **kwargs
            )
            return json.loads(response.data or b"null")
        except ApiException as error:
            if missing_ok and error.status == 404:
                return None
            raise _api_error(error, doing) from error
        except CALL_ERRORS as error:
            raise _api_error(error, doing) from error

    def _create(self, method: Callable, namespace: str | None, body: dict, *, doing: str) -> tuple[dict, bool]:
        """Creates an object, or finds the one an earlier call made: (object, made now)."""
        args = (namespace, body) if namespace is not None else (body,)
        try:
            response = method(*args, _preload_content=False, _request_timeout=settings.DOCKYARD_K8S_API_TIMEOUT_S)
            return json.loads(response.data), True
        except ApiException as error:
            if error.status == 409:
                return body, False
            raise _api_error(error, doing) from error
        except CALL_ERRORS as error:
            raise _api_error(error, doing) from error

    def handle_for(self, uid: str) -> Handle:
        return Handle(uid=uid, name=m.object_name(uid))

    def ping(self) -> None:
        try:
            client.VersionApi(self.api).get_code(_request_timeout=settings.DOCKYARD_K8S_API_TIMEOUT_S)
        except RuntimeError_:
            raise
        except Exception as error:
            raise RuntimeError_(f"the Kubernetes API does not answer: {error}", reason="api_unreachable") from error

    # --- Images ----------------------------------------------------------------------------

    def ensure_image(self, ref: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Nodes pull images themselves when a pod starts (the pod's events tell how the pull
        goes, shown in inspect's `message`), so there is nothing to fetch here: the reference
        is the digest a workload runs by. A bare local image id cannot run on a cluster."""
        if ref.startswith("sha256:"):
            raise RuntimeError_(
                f"image {ref} is a local image id, which a cluster cannot pull",
                reason="image_missing",
                permanent=True,
                user_message="This image exists only on a Docker host; push it to a registry to run it on the cluster.",
            )
        if on_progress is not None:
            on_progress(Progress(None, f"{ref} is pulled by the node the workload is scheduled on"))
        return ImageInfo(digest=ref, size_bytes=0, reference=ref)

    def build_image(self, *, dockerfile: str, tag: str, build_args=None, on_progress=None, **_) -> ImageInfo:
        raise RuntimeError_(
            "image builds need a Docker engine",
            reason="unsupported",
            permanent=True,
            user_message="Images are built on a Docker host; push the result to a registry and add it by reference.",
        )

    def image_python_packages(self, ref: str) -> list[list[str]]:
        return []  # reading them would need a pod per image; the catalog shows none

    def remove_image(self, ref: str) -> None:
        """Nodes' image caches are the kubelet's to clean."""

    # --- Teams -----------------------------------------------------------------------------

    def team_sync(self, team: str, limits: dict) -> None:
        """Creates or updates the team's namespace, ResourceQuota and NetworkPolicy."""
        opts = options()
        manifest = m.namespace_manifest(team, opts)
        namespace = manifest["metadata"]["name"]
        doing = f"preparing namespace {namespace}"
        _, made = self._create(self.core.create_namespace, None, manifest, doing=doing)
        if not made:
            self._call(
                self.core.patch_namespace,
                namespace,
                {"metadata": {"labels": manifest["metadata"]["labels"]}},
                doing=doing,
            )
        quota = m.resource_quota_manifest(namespace, limits)
        _, made = self._create(self.core.create_namespaced_resource_quota, namespace, quota, doing=doing)
        if not made:
            self._call(self.core.replace_namespaced_resource_quota, m.QUOTA_NAME, namespace, quota, doing=doing)
        policy = m.network_policy_manifest(namespace, opts)
        _, made = self._create(self.networking.create_namespaced_network_policy, namespace, policy, doing=doing)
        if not made:
            self._call(self.networking.replace_namespaced_network_policy, m.POLICY_NAME, namespace, policy, doing=doing)
        self._teams[team] = json.dumps(limits, sort_keys=True, default=str)

    def _ensure_team(self, team: str, limits: dict) -> None:
        # Once per process and team, again when the limits change: starts cost no extra calls.
        if self._teams.get(team) != json.dumps(limits, sort_keys=True, default=str):
            self.team_sync(team, limits)

    # --- Workloads -------------------------------------------------------------------------

    def start(self, spec: WorkloadSpec) -> Handle:
        """Creates the workload's objects, or finds those an earlier call made (409 is
        success). A namespace deleted behind Dockyard's back is made again, once."""
        if spec.image.startswith("sha256:"):
            self.ensure_image(spec.image)  # raises the clear, permanent error
        files = m.file_parts(spec)
        if files.size > settings.DOCKYARD_K8S_FILES_MAX_MB * 1024 * 1024:
            raise RuntimeError_(
                f"files of {spec.uid} are {files.size} bytes gzipped, over DOCKYARD_K8S_FILES_MAX_MB",
                reason="files_too_large",
                permanent=True,
                user_message=f"The code is over {settings.DOCKYARD_K8S_FILES_MAX_MB} MiB (compressed), the most a "
                "cluster job takes; leave data out of it and read it from storage instead.",
            )
        self._ensure_team(spec.team, spec.team_limits)
        made: list[tuple[Callable, str, str]] = []
        try:
            try:
                self._make(spec, files, made)
            except RuntimeError_ as error:
                if error.reason != "not_found":
                    raise
                self._teams.pop(spec.team, None)  # the namespace went: make it again
                self._ensure_team(spec.team, spec.team_limits)
                self._make(spec, files, made)
        except RuntimeError_:
            self._undo(made)
            raise
        return self.handle_for(spec.uid)

    def _make(self, spec: WorkloadSpec, files: m.FileParts, made: list) -> None:
        opts = options()
        namespace = m.namespace_name(spec.team, opts.namespace_prefix)
        doing = f"starting {spec.kind} {spec.uid}"
        for mount in spec.mounts:
            claim = m.claim_manifest(spec, mount, namespace, opts)
            _, new = self._create(self.core.create_namespaced_persistent_volume_claim, namespace, claim, doing=doing)
            if new:
                made.append((self.core.delete_namespaced_persistent_volume_claim, namespace, claim["metadata"]["name"]))
        if spec.kind == "job":
            owner = self._make_job(spec, namespace, files, opts, made, doing)
        else:
            owner = self._make_pod(spec, namespace, files, opts, made, doing)
        for secret in m.file_secrets(spec, namespace, files):
            secret["metadata"]["ownerReferences"] = [owner]
            self._create(self.core.create_namespaced_secret, namespace, secret, doing=doing)

    def _make_pod(self, spec, namespace, files, opts, made, doing) -> dict:
        pod, new = self._create(
            self.core.create_namespaced_pod, namespace, m.workspace_pod(spec, namespace, opts, files), doing=doing
        )
        if not new:
            pod = self._call(self.core.read_namespaced_pod, pod["metadata"]["name"], namespace, doing=doing)
            _not_going(pod, doing)
        else:
            made.append((self.core.delete_namespaced_pod, namespace, pod["metadata"]["name"]))
        owner = _owner(pod, kind="Pod", api_version="v1")
        if spec.ports:
            service = m.workspace_service(spec, namespace)
            service["metadata"]["ownerReferences"] = [owner]
            self._create(self.core.create_namespaced_service, namespace, service, doing=doing)
        return owner

    def _make_job(self, spec, namespace, files, opts, made, doing) -> dict:
        job, new = self._create(
            self.batch.create_namespaced_job, namespace, m.job_manifest(spec, namespace, opts, files), doing=doing
        )
        if not new:
            job = self._call(self.batch.read_namespaced_job, job["metadata"]["name"], namespace, doing=doing)
            _not_going(job, doing)
        else:
            made.append((self.batch.delete_namespaced_job, namespace, job["metadata"]["name"]))
        owner = _owner(job, kind="Job", api_version="batch/v1")
        if spec.nodes > 1:
            for body, method in (
                (m.headless_service(spec, namespace, opts), self.core.create_namespaced_service),
                (m.peers_network_policy(spec, namespace), self.networking.create_namespaced_network_policy),
            ):
                body["metadata"]["ownerReferences"] = [owner]
                self._create(method, namespace, body, doing=doing)
        return owner

    def _undo(self, made: list[tuple[Callable, str, str]]) -> None:
        # Nothing half-made stays behind; claims from earlier runs hold data and were not
        # made now, so they stay.
        for method, namespace, name in reversed(made):
            try:
                method(
                    name,
                    namespace,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=settings.DOCKYARD_K8S_API_TIMEOUT_S,
                )
            except CALL_ERRORS:
                pass

    def _lookup(self, uid: str) -> tuple[list[dict], list[dict]]:
        """The workload's Jobs and pods, wherever they are (two calls, by label)."""
        labels = m.selector({"dockyard.managed": "true", LABEL_UID: uid})
        doing = f"looking up workload {uid}"
        jobs = self._call(self.batch.list_job_for_all_namespaces, label_selector=labels, doing=doing)["items"]
        pods = self._call(self.core.list_pod_for_all_namespaces, label_selector=labels, doing=doing)["items"]
        return m.current(jobs, pods)

    def inspect(self, handle: Handle) -> Observed:
        jobs, pods = self._lookup(handle.uid)
        observed = self._observe(handle.uid, jobs, pods)
        if observed.state == State.CREATED and not observed.reason:
            pending = [p for p in pods if (p.get("status") or {}).get("phase") == "Pending"]
            if pending:
                observed = _replace(observed, message=self._pull_message(pending[0]) or observed.message)
            elif jobs and not pods:
                observed = self._refused(jobs[0], observed)
        elif observed.state == State.RUNNING and observed.endpoints:
            observed = self._unresolved(observed)
        return observed

    def _refused(self, job: dict, observed: Observed) -> Observed:
        """A Job without pods may have had them refused by the API server (a ResourceQuota,
        a LimitRange, a policy webhook): the Job controller tells only in a FailedCreate event."""
        events = self._call(
            self.core.list_namespaced_event,
            job["metadata"]["namespace"],
            field_selector=f"involvedObject.uid={job['metadata']['uid']}",
            doing="reading the job's events",
        )
        message = m.refusal_message(events["items"])
        return _replace(observed, reason="FailedCreate", message=message) if message else observed

    def _unresolved(self, observed: Observed) -> Observed:
        """The portal connects to the endpoint's host: when that name does not resolve here
        (a portal outside the cluster, or a cluster without DNS) say so, rather than leave
        readiness to time out without a reason."""
        host = next(iter(observed.endpoints.values())).host
        problem = _resolve_problem(host)
        if not problem:
            return observed
        return _replace(observed, reason="Unresolvable", message=f"cannot resolve {host}: {problem}")

    def _observe(self, uid: str, jobs: list[dict], pods: list[dict]) -> Observed:
        jobs, pods = m.current(jobs, pods)
        if jobs:
            return _replace(m.observe_job(jobs[0], pods), uid=uid)
        if not pods:
            return Observed(uid=uid, state=State.MISSING)
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return _replace(m.observe_pod(pod, endpoints_host=self._service_host(pod)), uid=uid)

    def _service_host(self, pod: dict) -> str:
        """Where the portal connects to the workspace: its Service's DNS name (a portal in
        the cluster), or with DOCKYARD_K8S_REACH=pod-ip the pod's own address (a portal on a
        network routed to the pods, without the cluster's DNS); "" until the pod has one."""
        if settings.DOCKYARD_K8S_REACH == REACH_POD_IP:
            return (pod.get("status") or {}).get("podIP") or ""
        return f"{pod['metadata']['name']}.{pod['metadata']['namespace']}.svc.{settings.DOCKYARD_K8S_CLUSTER_DOMAIN}"

    def _pull_message(self, pod: dict) -> str:
        events = self._call(
            self.core.list_namespaced_event,
            pod["metadata"]["namespace"],
            field_selector=f"involvedObject.name={pod['metadata']['name']}",
            doing="reading the pod's events",
        )
        return m.pull_message(events["items"])

    def stop(self, handle: Handle, grace_s: int = 10) -> None:
        """Stops the workload's processes and keeps its pods (and their logs) until remove(),
        like a stopped container: a started pod gets an active deadline already past, so the
        kubelet stops it (SIGTERM, then SIGKILL after the pod's grace period) and marks it
        Failed; a Job whose pods never started gets a deadline already past. A suspended Job
        (waiting for Kueue) runs nothing and is left as it is. Returns once the pods ended,
        or after the grace period plus DOCKYARD_K8S_STOP_WAIT_S."""
        doing = f"stopping {handle.name}"
        jobs, pods = self._lookup(handle.uid)
        live = [p for p in pods if (p.get("status") or {}).get("phase") not in TERMINAL]
        started = [p for p in live if (p.get("status") or {}).get("startTime")]
        for pod in started:
            self._call(
                self.core.patch_namespaced_pod,
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                {"spec": {"activeDeadlineSeconds": 1}},
                doing=doing,
                missing_ok=True,
            )
        if jobs:
            job = jobs[0]
            finished = self._observe(handle.uid, jobs, pods).state == State.EXITED
            if not started and not finished and not (job["spec"].get("suspend") and not live):
                self._call(
                    self.batch.patch_namespaced_job,
                    job["metadata"]["name"],
                    job["metadata"]["namespace"],
                    {"spec": {"activeDeadlineSeconds": 1}},
                    doing=doing,
                    missing_ok=True,
                )
        else:
            for pod in live:
                if pod not in started:  # never ran: nothing to keep
                    self._call(
                        self.core.delete_namespaced_pod,
                        pod["metadata"]["name"],
                        pod["metadata"]["namespace"],
                        grace_period_seconds=0,
                        doing=doing,
                        missing_ok=True,
                    )
        if started or (jobs and live):
            self._wait_ended(handle, max(grace_s, settings.DOCKYARD_K8S_TERMINATION_GRACE_S))

    def _wait_ended(self, handle: Handle, grace_s: float) -> None:
        """Until the workload has ended and no container of it runs any more: a pod is marked
        Failed as soon as its deadline passes, while the kubelet still stops the container
        (which may print its last lines meanwhile)."""
        deadline = time.monotonic() + grace_s + settings.DOCKYARD_K8S_STOP_WAIT_S
        while time.monotonic() < deadline:
            jobs, pods = self._lookup(handle.uid)
            ended = self._observe(handle.uid, jobs, pods).state in (State.EXITED, State.MISSING)
            if ended and not any(m.container_running(pod) for pod in pods):
                return
            time.sleep(POLL_S)

    def remove(self, handle: Handle, keep_data: bool = True) -> None:
        """Deletes the workload's pods or Job, Services, Secrets and policies; its volumes
        (PVCs) stay unless keep_data is False. Already gone is success."""
        doing = f"removing {handle.name}"
        jobs, pods = self._lookup(handle.uid)
        namespaces = {o["metadata"]["namespace"] for o in [*jobs, *pods]}
        if not keep_data or not namespaces:
            claims = self._claims(handle.uid, going=True)
            namespaces |= {c["metadata"]["namespace"] for c in claims}
        uid_labels = m.selector({"dockyard.managed": "true", LABEL_UID: handle.uid})
        for namespace in sorted(namespaces):
            for job in [j for j in jobs if j["metadata"]["namespace"] == namespace]:
                self._call(
                    self.batch.delete_namespaced_job,
                    job["metadata"]["name"],
                    namespace,
                    propagation_policy="Background",
                    doing=doing,
                    missing_ok=True,
                )
            for pod in [p for p in pods if p["metadata"]["namespace"] == namespace]:
                self._call(
                    self.core.delete_namespaced_pod,
                    pod["metadata"]["name"],
                    namespace,
                    grace_period_seconds=0,
                    doing=doing,
                    missing_ok=True,
                )
            self._call(self.core.delete_namespaced_service, handle.name, namespace, doing=doing, missing_ok=True)
            self._call(
                self.networking.delete_namespaced_network_policy,
                f"{handle.name}-peers",
                namespace,
                doing=doing,
                missing_ok=True,
            )
            self._call(
                self.core.delete_collection_namespaced_secret,
                namespace,
                label_selector=uid_labels,
                doing=doing,
                missing_ok=True,
            )
            self._call(
                self.core.delete_collection_namespaced_pod,
                namespace,
                label_selector=m.selector({m.LABEL_HELPER_FOR: handle.uid}),
                doing=doing,
                missing_ok=True,
            )
            if not keep_data:
                self._call(
                    self.core.delete_collection_namespaced_persistent_volume_claim,
                    namespace,
                    label_selector=uid_labels,
                    doing=doing,
                    missing_ok=True,
                )
        if not keep_data and namespaces:
            self._wait_claims_gone(handle)

    def _wait_claims_gone(self, handle: Handle) -> None:
        """Deleted claims stay, terminating, until the pvc-protection finalizer lets them go
        (once no pod uses them): wait up to DOCKYARD_K8S_REMOVE_WAIT_S, then say which are
        still going (the cluster deletes them by itself)."""
        deadline = time.monotonic() + settings.DOCKYARD_K8S_REMOVE_WAIT_S
        while claims := self._claims(handle.uid, going=True):
            if time.monotonic() >= deadline:
                names = ", ".join(sorted(c["metadata"]["name"] for c in claims))
                logger.warning("removing %s: volumes still being deleted by the cluster: %s", handle.name, names)
                return
            time.sleep(POLL_S)

    def _claims(self, uid: str, *, going: bool = False) -> list[dict]:
        """The workload's claims; those being deleted only with `going`."""
        labels = m.selector({"dockyard.managed": "true", LABEL_UID: uid})
        found = self._call(
            self.core.list_persistent_volume_claim_for_all_namespaces,
            label_selector=labels,
            doing=f"looking up volumes of {uid}",
        )
        return [c for c in found["items"] if going or not c["metadata"].get("deletionTimestamp")]

    # --- Logs and files --------------------------------------------------------------------

    def _main_pod(self, handle: Handle) -> tuple[dict | None, list[dict], list[dict]]:
        """The pod whose log and files stand for the workload: the workspace's pod, or a
        job's first index (the one a multi-node job's rank 0 runs in)."""
        jobs, pods = self._lookup(handle.uid)
        if not pods:
            return None, jobs, pods
        return min(pods, key=lambda p: (m._index(p), p["metadata"].get("creationTimestamp") or "")), jobs, pods

    def logs(
        self, handle: Handle, since: datetime | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        """The output of the workload's container, line by line; with follow, until it ends
        (a multi-node job: index 0's). Empty while the container has not started."""
        pod, _, _ = self._main_pod(handle)
        if pod is None:
            raise RuntimeError_(f"reading logs of {handle.name}: no pod", reason="not_found", permanent=True)
        kwargs: dict = {"container": m.CONTAINER}
        if tail is not None:
            kwargs["tail_lines"] = tail
        if since is not None:
            kwargs["since_seconds"] = max(1, int((datetime.now(tz=UTC) - since).total_seconds()) + 1)
        name, namespace = pod["metadata"]["name"], pod["metadata"]["namespace"]
        try:
            if not follow:
                kwargs["_request_timeout"] = settings.DOCKYARD_K8S_API_TIMEOUT_S
            response = self.core.read_namespaced_pod_log(
                name, namespace, follow=follow, _preload_content=False, **kwargs
            )
        except ApiException as error:
            if error.status == 400:  # waiting to start: nothing printed yet
                return iter(())
            raise _api_error(error, f"reading logs of {handle.name}") from error
        except CALL_ERRORS as error:
            raise _api_error(error, f"reading logs of {handle.name}") from error
        return _lines(response)

    def archive_get(self, handle: Handle, path: str) -> Iterator[bytes]:
        """A tar stream of `path`: by `tar cf -` in the running container, or, once the
        workload's pods have ended, in a short-lived helper pod that mounts its volumes
        (read-only, at the same paths). Needs `tar` in the image."""
        pod, jobs, pods = self._main_pod(handle)
        if pod is not None and "running" in (m._container_status(pod).get("state") or {}):
            return self._tar(pod, path)
        if self._observe(handle.uid, jobs, pods).state not in (State.EXITED, State.MISSING):
            # Not started yet (pending, or waiting for Kueue): nothing written, and no helper
            # pod should be made for every look (jobs' metrics are read every few seconds).
            raise RuntimeError_(f"reading {path} of {handle.name}: not running yet", reason="not_found", permanent=True)
        claims = [c for c in self._claims(handle.uid) if _covers(c, path)]
        if not claims:
            raise RuntimeError_(
                f"reading {path} of {handle.name}: no running pod and no volume holds it",
                reason="not_found",
                permanent=True,
            )
        image = (pod or {}).get("spec", {}).get("containers", [{}])[0].get("image") or (
            jobs[0]["spec"]["template"]["spec"]["containers"][0]["image"] if jobs else ""
        )
        return self._tar_from_helper(
            handle,
            claims,
            image=image,
            owner=_owner(jobs[0], kind="Job", api_version="batch/v1") if jobs else None,
            user=_user_of(pod or (jobs[0]["spec"]["template"] if jobs else {})),
            path=path,
        )

    def _tar_from_helper(self, handle: Handle, claims, *, image: str, owner, user: str, path: str) -> Iterator[bytes]:
        namespace = claims[0]["metadata"]["namespace"]
        image = image or settings.DOCKYARD_K8S_HELPER_IMAGE or settings.DOCKYARD_BASE_IMAGE
        body = m.fetch_pod(
            uid=handle.uid,
            namespace=namespace,
            image=image,
            user=user,
            claims=claims,
            owner=owner,
            options=options(),
            lifetime_s=settings.DOCKYARD_K8S_FETCH_LIFETIME_S,
        )
        doing = f"reading {path} of {handle.name}"
        helper, _ = self._create(self.core.create_namespaced_pod, namespace, body, doing=doing)
        name = helper["metadata"]["name"]

        def delete() -> None:
            self._call(
                self.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0, doing=doing, missing_ok=True
            )

        try:
            pod = self._wait_running(name, namespace, doing=doing)
            chunks = self._tar(pod, path)
        except BaseException:
            delete()
            raise

        def stream_then_delete() -> Iterator[bytes]:
            try:
                yield from chunks
            finally:
                delete()

        return stream_then_delete()

    def _wait_running(self, name: str, namespace: str, *, doing: str) -> dict:
        deadline = time.monotonic() + settings.DOCKYARD_K8S_FETCH_START_S
        while True:
            pod = self._call(self.core.read_namespaced_pod, name, namespace, doing=doing)
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Running":
                return pod
            if phase in TERMINAL or time.monotonic() > deadline:
                reason, message = m.pending_cause(pod)
                raise RuntimeError_(
                    f"{doing}: the helper pod did not start ({phase} {reason} {message})".strip(),
                    reason="helper_not_started",
                )
            time.sleep(POLL_S)

    def _tar(self, pod: dict, path: str) -> Iterator[bytes]:
        parent, name = posixpath.split(path.rstrip("/"))
        doing = f"reading {path} of {pod['metadata']['name']}"
        # A client of its own: stream() swaps the client's transport for a WebSocket while
        # it connects, which must not touch calls other threads (the watch) are making.
        core = client.CoreV1Api(client.ApiClient(self.configuration))
        try:
            session = stream(
                core.connect_get_namespaced_pod_exec,
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                command=["tar", "cf", "-", "-C", parent or "/", name],
                container=m.CONTAINER,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
                binary=True,
            )
        except Exception as error:
            core.api_client.close()
            raise _api_error(error, doing) from error
        chunks = _exec_output(session)
        head: list[bytes] = []
        try:
            while sum(map(len, head)) < TAR_LOOKAHEAD:
                head.append(next(chunks))
        except StopIteration:
            pass
        except RuntimeError_ as error:
            core.api_client.close()
            if error.reason == "not_found":
                raise RuntimeError_(f"{doing}: {error}", reason="not_found", permanent=True) from None
            raise

        def rest() -> Iterator[bytes]:
            try:
                yield from head
                yield from chunks
            finally:
                core.api_client.close()

        return rest()

    # --- Everything Dockyard runs ------------------------------------------------------------

    def list_managed(self, kind: str = "") -> list[Observed]:
        """Dockyard's workloads across its namespaces (by label, scoped by
        DOCKYARD_WORKLOAD_LABELS like on Docker): from the watch's index while it is fresh,
        else two list calls."""
        if settings.DOCKYARD_K8S_WATCH:
            self.watch_start()
        if settings.DOCKYARD_K8S_WATCH and self.index.fresh(settings.DOCKYARD_K8S_WATCH_FRESH_S):
            jobs, pods = self.index.snapshot()
        else:
            labels = m.managed_selector(options())
            jobs = self._call(self.batch.list_job_for_all_namespaces, label_selector=labels, doing="listing jobs")[
                "items"
            ]
            pods = self._call(self.core.list_pod_for_all_namespaces, label_selector=labels, doing="listing pods")[
                "items"
            ]
        by_uid: dict[str, tuple[list, list]] = {}
        for resource, items in (("jobs", jobs), ("pods", pods)):
            for item in items:
                uid = (item["metadata"].get("labels") or {}).get(LABEL_UID)
                if uid:
                    by_uid.setdefault(uid, ([], []))[0 if resource == "jobs" else 1].append(item)
        observed = [self._observe(uid, j, p) for uid, (j, p) in sorted(by_uid.items())]
        return [o for o in observed if not kind or o.kind == kind]

    def watch_workloads(
        self, resource: str = "pods", stop: threading.Event | None = None
    ) -> Iterator[tuple[str, dict]]:
        """Lists Dockyard's pods (or Jobs) into the index, then watches them from that
        resourceVersion, yielding (event type, object) for each change. A dropped connection
        resumes from the last resourceVersion seen; 410 Gone (history compacted) lists again.
        Runs until `stop` is set."""
        stop = stop or self._stop
        method = self.core.list_pod_for_all_namespaces if resource == "pods" else self.batch.list_job_for_all_namespaces
        labels = m.managed_selector(options())
        version, delay = None, WATCH_BACKOFF_S[0]
        while not stop.is_set():
            try:
                if version is None:
                    listing = self._call(method, label_selector=labels, doing=f"listing {resource}")
                    self.index.replace(resource, listing["items"])
                    version = listing["metadata"]["resourceVersion"]
                    yield "RELISTED", listing
                for event in _RawWatch().stream(
                    method,
                    label_selector=labels,
                    resource_version=version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=settings.DOCKYARD_K8S_WATCH_TIMEOUT_S,
                    _request_timeout=(
                        settings.DOCKYARD_K8S_API_TIMEOUT_S,
                        settings.DOCKYARD_K8S_WATCH_TIMEOUT_S + WATCH_READ_MARGIN_S,
                    ),
                ):
                    obj = event["raw_object"]
                    version = obj["metadata"].get("resourceVersion") or version
                    if event["type"] == "BOOKMARK":
                        self.index.heard()
                        continue
                    self.index.apply(resource, event["type"], obj)
                    yield event["type"], obj
                    if stop.is_set():
                        return
                self.index.heard()
                delay = WATCH_BACKOFF_S[0]
            except ApiException as error:
                if error.status == 410:  # too old: what happened meanwhile is lost, so list again
                    version = None
                    self.index.lost(resource)
                    yield "EXPIRED", {}
                    continue
                yield "ERROR", {"status": error.status}
                delay = self._back_off(stop, delay)
            except (RuntimeError_, *CALL_ERRORS) as error:
                # The connection dropped: resume from the last version seen.
                yield "DISCONNECTED", {"error": str(error)}
                delay = self._back_off(stop, delay)

    def _back_off(self, stop: threading.Event, delay: float) -> float:
        stop.wait(delay)
        return min(delay * 2, WATCH_BACKOFF_S[1])

    def watch_start(self) -> None:
        """Keeps the index current from two daemon threads (pods, Jobs), once per process
        (again after a fork: threads do not survive it)."""
        if self._watch_pid == os.getpid() and all(t.is_alive() for t in self._watchers):
            return
        self._watch_pid = os.getpid()
        self._watchers = [
            threading.Thread(
                target=_drain, args=(self.watch_workloads(resource),), daemon=True, name=f"k8s-watch-{resource}"
            )
            for resource in ("pods", "jobs")
        ]
        for thread in self._watchers:
            thread.start()

    # --- Capacity --------------------------------------------------------------------------

    def capacity(self) -> list[NodeCapacity]:
        """Each node's allocatable CPUs, memory and GPUs. GPUs are counted, not named, on a
        cluster (the scheduler picks devices), so each gets a stable synthetic uuid
        `k8s:<node>:<i>` and the node's GPU model label."""
        nodes = self._call(self.core.list_node, doing="reading the cluster's capacity")["items"]
        return [self._node_capacity(node) for node in nodes]

    def _node_capacity(self, node: dict) -> NodeCapacity:
        name = node["metadata"]["name"]
        labels = node["metadata"].get("labels") or {}
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        ready = m._condition(node, "Ready").get("status") == "True" and not (node.get("spec") or {}).get(
            "unschedulable"
        )
        count = int(parse_quantity(allocatable.get(settings.DOCKYARD_K8S_GPU_RESOURCE, "0")))
        model = labels.get(settings.DOCKYARD_K8S_GPU_PRODUCT_LABEL, "") or ("unknown" if count else "")
        memory = int(labels.get(settings.DOCKYARD_K8S_GPU_MEMORY_LABEL, "0") or 0)
        return NodeCapacity(
            name=name,
            backend=self.name,
            cpus=float(parse_quantity(allocatable.get("cpu", "0"))),
            memory_mib=int(parse_quantity(allocatable.get("memory", "0")) / (1024 * 1024)),
            gpus=tuple(
                GpuInfo(index=i, uuid=f"k8s:{name}:{i}", model=model, memory_mib=memory, healthy=ready)
                for i in range(count)
            ),
        )

    def engine_started_at(self) -> datetime | None:
        return None  # pods outlive API server restarts; nothing ends with "the engine"


def _not_going(obj: dict, doing: str) -> None:
    """An earlier run's pod or Job of this name is still being deleted: not one to reuse. The
    start is retried (not permanent) once it is gone."""
    if obj["metadata"].get("deletionTimestamp"):
        raise RuntimeError_(
            f"{doing}: the previous {obj.get('kind', 'object').lower()} of this name is still being deleted",
            reason="still_terminating",
            user_message="The previous run is still shutting down; Dockyard will retry.",
        )


def _drain(events: Iterator) -> None:
    for _ in events:
        pass


def _owner(obj: dict, *, kind: str, api_version: str) -> dict:
    """An owner reference to `obj`. Kind and version are the caller's to say: list items come
    without them, and a reference naming the wrong kind is dangling, so the garbage collector
    deletes the dependent at once."""
    return {"apiVersion": api_version, "kind": kind, "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"]}


def _user_of(pod_or_template: dict) -> str:
    context = (pod_or_template.get("spec") or {}).get("securityContext") or {}
    if context.get("runAsUser") is None:
        return "1000:100"
    return f"{context['runAsUser']}:{context.get('runAsGroup', context['runAsUser'])}"


def _covers(claim: dict, path: str) -> bool:
    target = ((claim["metadata"].get("annotations") or {}).get(m.ANNOTATION_TARGET) or "").rstrip("/")
    return bool(target) and (path.rstrip("/") == target or path.startswith(target + "/"))


def _system_resolve(host: str) -> None:
    """Looks `host` up as a connection from this process would; raises OSError if it can't."""
    socket.getaddrinfo(host, None)


# The look-up the portal's connections use. Tests point it at the fake cluster's own DNS, so
# no query for a cluster name leaves this machine.
resolve = _system_resolve


def _resolve_problem(host: str) -> str:
    """Why `host` does not resolve from this process ("" when it does), within
    RESOLVE_TIMEOUT_S: the system's resolver has no timeout of its own to pass."""
    try:
        ipaddress.ip_address(host)
        return ""
    except ValueError:
        pass
    outcome: dict[str, str] = {}

    def look_up() -> None:
        try:
            resolve(host)
            outcome["problem"] = ""
        except OSError as error:
            outcome["problem"] = error.strerror or str(error)

    thread = threading.Thread(target=look_up, daemon=True, name="k8s-resolve")
    thread.start()
    thread.join(RESOLVE_TIMEOUT_S)
    return outcome.get("problem", f"no answer within {RESOLVE_TIMEOUT_S:g} s")


def _replace(observed: Observed, **fields) -> Observed:
    return Observed(**{**observed.__dict__, **fields})


def _lines(response) -> Iterator[str]:
    try:
        chunks = response.stream(64 * 1024, decode_content=False)
        yield from log_lines(chunks, max_bytes=settings.DOCKYARD_LOG_LINE_MAX_KB * 1024)
    finally:
        response.release_conn()


def _exec_output(session) -> Iterator[bytes]:
    """Stdout of an exec as it arrives; raises RuntimeError_ (with stderr) if it failed."""
    try:
        while session.is_open():
            session.update(timeout=1)
            if session.peek_channel(1):
                yield session.read_channel(1)
        if session.peek_channel(1):
            yield session.read_channel(1)
        raw = session.read_channel(3)
        status = json.loads(raw) if raw else {"message": "the exec ended without a status (connection lost)"}
        if status.get("status") != "Success":
            stderr = session.read_channel(2)
            stderr = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
            missing = any(text in stderr for text in MISSING_PATH)
            raise RuntimeError_(
                f"{status.get('message', 'command failed')}: {stderr.strip()}",
                reason="not_found" if missing else "exec_failed",
                permanent=missing,
            )
    finally:
        session.close()
