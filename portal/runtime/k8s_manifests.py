"""Pure builders of Kubernetes objects from a WorkloadSpec, and pure readers of their status.

Manifests go out as plain dicts (the API's JSON shape, camelCase), status comes back as plain
dicts and is read into `Observed`: everything here is tested without a cluster, and every
manifest is checked against the official OpenAPI schema in the tests.

Names derive from the workload's uid (`dockyard-<uid>`), so a retried start finds what an
earlier one made. A team's workloads live in the namespace `dockyard-<team>`.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass, field
from datetime import datetime

from portal.runtime.base import (
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_TEAM,
    LABEL_UID,
    Endpoint,
    Mount,
    Observed,
    State,
    WorkloadSpec,
)

CONTAINER = "workload"  # the one container of every workload pod
# The exact labels (owner names may hold characters a label value cannot): the truth when
# labels had to be shortened or cleaned.
ANNOTATION_LABELS = "dockyard.labels"
ANNOTATION_TARGET = "dockyard.target"  # where a volume is mounted, for the fetch helper
LABEL_MOUNT = "dockyard.mount"
LABEL_HELPER_FOR = "dockyard.helper-for"  # fetch helpers: no dockyard.uid, so never a workload
LABEL_KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
QUOTA_NAME = "dockyard-team-quota"
POLICY_NAME = "dockyard-workloads"
FILES_VOLUME, PARTS_VOLUME = "dockyard-files", "dockyard-parts"
FILES_DIR, PARTS_DIR = "/dockyard/files", "/dockyard/parts"
# A Secret holds at most 1 MiB; parts stay well under it once base64-encoded in the request.
PART_BYTES = 768 * 1024
RESTRICTED = "restricted"  # the Pod Security Standard every Dockyard namespace enforces
WAITING_REASONS = (
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
)


@dataclass(frozen=True)
class ClusterOptions:
    """The cluster-wide choices every manifest depends on (from settings, in kubernetes.py)."""

    scope_labels: dict[str, str] = field(default_factory=dict)  # DOCKYARD_WORKLOAD_LABELS
    namespace_prefix: str = "dockyard-"
    storage_class: str = ""  # "" = the cluster's default class
    shared_storage_class: str = ""  # ReadWriteMany class for multi-node outputs; "" = storage_class
    home_size: str = "10Gi"
    output_size: str = "10Gi"
    cluster_domain: str = "cluster.local"
    portal_namespace: str = "dockyard"
    portal_pod_labels: dict[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "dockyard"})
    blocked_egress: tuple[str, ...] = ("169.254.169.254/32",)
    cluster_cidrs: tuple[str, ...] = ()  # the cluster's pod and service ranges, when not private
    egress_allow: tuple[str, ...] = ()  # private addresses workloads may reach all the same (a mirror)
    portal_cidrs: tuple[str, ...] = ()  # where a portal outside the cluster connects to pods from
    gpu_resource: str = "nvidia.com/gpu"
    gpu_product_label: str = "nvidia.com/gpu.product"
    gpu_tolerations: tuple[dict, ...] = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
    master_port: int = 29500
    job_ttl_s: int = 86400
    job_deadline_slack_s: int = 60
    termination_grace_s: int = 10
    image_pull_policy: str = "IfNotPresent"
    kueue_queues: dict[str, str] = field(default_factory=dict)  # team -> LocalQueue
    kueue_default_queue: str = ""


# --- Names and labels -----------------------------------------------------------------------


def _dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1123 label from any text: lower case, [a-z0-9-], shortened with a hash if long."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


def object_name(uid: str) -> str:
    """The one name a workload's pod (or Job) and Service can have: `dockyard-<uid>`."""
    return "dockyard-" + _dns_label(uid, 63 - len("dockyard-") - 6)  # room for "-files" and index suffixes


def claim_name(uid: str, mount_name: str) -> str:
    return f"{object_name(uid)}-{_dns_label(mount_name, 20)}"


def namespace_name(team: str, prefix: str = "dockyard-") -> str:
    return prefix + _dns_label(team, 63 - len(prefix))


def label_value(text: str) -> str:
    """A valid label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text))[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", clean)


def workload_labels(spec: WorkloadSpec) -> dict[str, str]:
    return {key: label_value(value) for key, value in spec.all_labels().items()}


def _metadata(spec: WorkloadSpec, name: str, namespace: str, **labels: str) -> dict:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {**workload_labels(spec), **labels},
        "annotations": {ANNOTATION_LABELS: json.dumps(spec.all_labels(), sort_keys=True)},
    }


def selector(labels: dict[str, str]) -> str:
    return ",".join(f"{key}={label_value(value)}" for key, value in labels.items())


def managed_selector(options: ClusterOptions, kind: str = "", uid: str = "") -> str:
    """Dockyard's workloads in this installation: DOCKYARD_WORKLOAD_LABELS tell apart
    installations (or test runs) sharing a cluster; `dockyard.uid` must be there, so fetch
    helpers are never taken for workloads."""
    labels = {LABEL_MANAGED: "true", **options.scope_labels}
    if kind:
        labels[LABEL_KIND] = kind
    if uid:
        labels[LABEL_UID] = uid
    return selector(labels) + ("" if uid else f",{LABEL_UID}")


# --- A team's namespace ---------------------------------------------------------------------


def namespace_manifest(team: str, options: ClusterOptions) -> dict:
    labels = {
        **{k: label_value(v) for k, v in options.scope_labels.items()},
        LABEL_MANAGED: "true",
        LABEL_TEAM: label_value(team),
        # The API server itself refuses any pod that breaks the restricted profile here.
        "pod-security.kubernetes.io/enforce": RESTRICTED,
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace_name(team, options.namespace_prefix), "labels": labels},
    }


def resource_quota_manifest(namespace: str, limits: dict) -> dict:
    """The team's Dockyard limits again, enforced by the API server (defence in depth).
    Keys: cpus, memory_gib, gpus, pods; a missing key is no limit."""
    hard: dict[str, str] = {}
    if limits.get("cpus") is not None:
        hard["requests.cpu"] = hard["limits.cpu"] = cpu_quantity(float(limits["cpus"]))
    if limits.get("memory_gib") is not None:
        hard["requests.memory"] = hard["limits.memory"] = f"{int(float(limits['memory_gib']) * 1024)}Mi"
    if limits.get("gpus") is not None:
        hard["requests.nvidia.com/gpu"] = str(int(limits["gpus"]))
    if limits.get("pods") is not None:
        hard["pods"] = str(int(limits["pods"]))
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": QUOTA_NAME, "namespace": namespace, "labels": {LABEL_MANAGED: "true"}},
        "spec": {"hard": hard},
    }


# Never reachable from a workload, whatever the cluster: RFC 1918, link-local (the metadata
# service among it), carrier-grade NAT (some clusters' pod ranges), and the IPv6 equivalents.
PRIVATE_RANGES = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)


def egress_blocked(options: ClusterOptions) -> tuple[list[str], list[str]]:
    """The (IPv4, IPv6) ranges the internet rule leaves out: private ranges, the cluster's own
    pod and service ranges, and DOCKYARD_K8S_BLOCKED_EGRESS."""
    ranges = list(dict.fromkeys([*PRIVATE_RANGES, *options.cluster_cidrs, *options.blocked_egress]))
    return [r for r in ranges if ":" not in r], [r for r in ranges if ":" in r]


def network_policy_manifest(namespace: str, options: ClusterOptions) -> dict:
    """Workload pods accept connections only from the portal (its pods, or the addresses of a
    portal outside the cluster). They may look names up (port 53, wherever the cluster's DNS
    answers: CoreDNS pods or a node-local cache) and connect to the internet, never to the
    cluster's pods and services or private ranges, except the ranges an admin allows."""
    portal: list[dict] = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": options.portal_namespace}},
            "podSelector": {"matchLabels": dict(options.portal_pod_labels)},
        },
        *({"ipBlock": {"cidr": cidr}} for cidr in options.portal_cidrs),
    ]
    v4, v6 = egress_blocked(options)
    egress: list[dict] = [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}}, {"ipBlock": {"cidr": "::/0", "except": v6}}]},
    ]
    if options.egress_allow:
        egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in options.egress_allow]})
    spec: dict = {
        "podSelector": {"matchLabels": {LABEL_MANAGED: "true"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": portal}],
        "egress": egress,
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace, "labels": {LABEL_MANAGED: "true"}},
        "spec": spec,
    }


def peers_network_policy(spec: WorkloadSpec, namespace: str) -> dict:
    """The pods of one multi-node job may reach each other (rendezvous, collectives), both
    ways: the team's policy lets them reach no pod address otherwise."""
    own = {"matchLabels": {LABEL_UID: label_value(spec.uid)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(spec, f"{object_name(spec.uid)}-peers", namespace),
        "spec": {
            "podSelector": own,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": own}]}],
            "egress": [{"to": [{"podSelector": own}]}],
        },
    }


# --- Volumes and files ------------------------------------------------------------------------


def claim_manifest(spec: WorkloadSpec, mount: Mount, namespace: str, options: ClusterOptions) -> dict:
    shared = spec.kind == "job" and spec.nodes > 1  # every node of a multi-node job writes outputs
    storage_class = (options.shared_storage_class or options.storage_class) if shared else options.storage_class
    metadata = _metadata(spec, claim_name(spec.uid, mount.name), namespace, **{LABEL_MOUNT: label_value(mount.name)})
    metadata["annotations"][ANNOTATION_TARGET] = mount.target
    body: dict = {
        "accessModes": ["ReadWriteMany" if shared else "ReadWriteOnce"],
        "resources": {"requests": {"storage": options.home_size if mount.name == "home" else options.output_size}},
    }
    if storage_class:
        body["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": body}


@dataclass(frozen=True)
class FileParts:
    """The spec's file drops, gzipped and cut into Secret-sized parts, and where each top-level
    entry of each archive is mounted."""

    parts: tuple[tuple[int, bytes], ...]  # (drop index, part)
    mounts: tuple[tuple[int, str, str], ...]  # (drop index, entry, mount path)

    @property
    def size(self) -> int:
        return sum(len(data) for _, data in self.parts)


def file_parts(spec: WorkloadSpec) -> FileParts:
    parts, mounts = [], []
    for index, drop in enumerate(spec.files):
        packed = gzip.compress(drop.archive, compresslevel=6, mtime=0)
        parts += [(index, packed[start : start + PART_BYTES]) for start in range(0, len(packed), PART_BYTES)]
        mounts += [(index, entry, posixpath.join(drop.path, entry)) for entry in _top_entries(drop.archive)]
    return FileParts(parts=tuple(parts), mounts=tuple(mounts))


def _top_entries(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = {member.name.lstrip("/").removeprefix("./").split("/", 1)[0] for member in tar.getmembers()}
    return sorted(name for name in names if name not in ("", ".", ".."))


def file_secrets(spec: WorkloadSpec, namespace: str, files: FileParts) -> list[dict]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _metadata(spec, f"{object_name(spec.uid)}-files-{number}", namespace),
            "type": "Opaque",
            "immutable": True,  # the kubelet need not watch it
            "data": {"part": base64.b64encode(data).decode()},
        }
        for number, (_, data) in enumerate(files.parts)
    ]


# --- Pods ---------------------------------------------------------------------------------


def cpu_quantity(cpus: float) -> str:
    return f"{round(cpus * 1000)}m"


def _resources(spec: WorkloadSpec, options: ClusterOptions) -> dict:
    amounts = {"cpu": cpu_quantity(spec.cpus), "memory": f"{spec.memory_mib}Mi"}
    if spec.gpus:
        amounts[options.gpu_resource] = str(spec.gpus)
    # Requests equal limits: the Guaranteed class, so a workload gets what it was admitted for.
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _user(spec: WorkloadSpec) -> tuple[int, int]:
    uid, _, gid = spec.user.partition(":")
    return int(uid), int(gid or uid)


def pod_security_context(spec: WorkloadSpec) -> dict:
    uid, gid = _user(spec)
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    """The restricted Pod Security profile, per container."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _env(spec: WorkloadSpec, namespace: str, options: ClusterOptions) -> list[dict]:
    env = [{"name": key, "value": str(value)} for key, value in spec.env.items()]
    if spec.kind == "job" and spec.nodes > 1:
        name = object_name(spec.uid)
        index = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}}
        env += [
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}.{namespace}.svc.{options.cluster_domain}"},
            {"name": "MASTER_PORT", "value": str(options.master_port)},
            {"name": "WORLD_SIZE", "value": str(spec.nodes)},
            {"name": "NNODES", "value": str(spec.nodes)},
            {"name": "RANK", **index},
            {"name": "NODE_RANK", **index},
        ]
    return env


def pod_spec(spec: WorkloadSpec, namespace: str, options: ClusterOptions, files: FileParts | None = None) -> dict:
    """What every workload pod runs with: limits, GPUs, the restricted profile, its volumes."""
    files = files or FileParts((), ())
    container: dict = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": options.image_pull_policy,
        "env": _env(spec, namespace, options),
        "resources": _resources(spec, options),
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": f"m-{_dns_label(m.name, 40)}", "mountPath": m.target, "readOnly": m.read_only} for m in spec.mounts
        ],
    }
    if spec.command:
        container["args"] = list(spec.command)  # like Docker's command: the image's entrypoint stays
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    if spec.ports:
        container["ports"] = [{"name": f"p{port}", "containerPort": port} for port in spec.ports]
    volumes = [
        {"name": f"m-{_dns_label(m.name, 40)}", "persistentVolumeClaim": {"claimName": claim_name(spec.uid, m.name)}}
        for m in spec.mounts
    ]
    body: dict = {
        "restartPolicy": "Never",  # an exit is Dockyard's to observe (and retry), as on Docker
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": options.termination_grace_s,
        "securityContext": pod_security_context(spec),
        "containers": [container],
        "volumes": volumes,
    }
    if files.parts:
        _add_files(body, container, spec, files, options)
    if spec.gpus:
        body["tolerations"] = [dict(t) for t in options.gpu_tolerations]
        if spec.gpu_model:
            body["nodeSelector"] = {options.gpu_product_label: spec.gpu_model}
    return body


def _add_files(body: dict, container: dict, spec: WorkloadSpec, files: FileParts, options: ClusterOptions) -> None:
    """File drops: an init container (the workload's own image, so `sh`, `tar` and `gzip`
    come from it) joins the Secret parts and unpacks each archive into an emptyDir, whose
    top-level entries the workload mounts read-only where the archive put them."""
    name = object_name(spec.uid)
    sources = [
        {"secret": {"name": f"{name}-files-{number}", "items": [{"key": "part", "path": f"{drop}/{number:05d}"}]}}
        for number, (drop, _) in enumerate(files.parts)
    ]
    drops = sorted({drop for drop, _ in files.parts})
    script = " && ".join(
        f"mkdir -p {FILES_DIR}/{d} && cat {PARTS_DIR}/{d}/* | gzip -dc | tar -x -f - -C {FILES_DIR}/{d}" for d in drops
    )
    body["volumes"] += [
        {"name": FILES_VOLUME, "emptyDir": {}},
        {"name": PARTS_VOLUME, "projected": {"sources": sources}},
    ]
    body["initContainers"] = [
        {
            "name": "files",
            "image": spec.image,
            "imagePullPolicy": options.image_pull_policy,
            "command": ["sh", "-c", f"set -e; {script}"],
            "resources": _resources(spec, options),
            "securityContext": container_security_context(),
            "volumeMounts": [
                {"name": FILES_VOLUME, "mountPath": FILES_DIR},
                {"name": PARTS_VOLUME, "mountPath": PARTS_DIR, "readOnly": True},
            ],
        }
    ]
    container["volumeMounts"] += [
        {"name": FILES_VOLUME, "mountPath": path, "subPath": f"{drop}/{entry}", "readOnly": True}
        for drop, entry, path in files.mounts
    ]


def workspace_pod(spec: WorkloadSpec, namespace: str, options: ClusterOptions, files: FileParts | None = None) -> dict:
    """A bare Pod, not a one-replica StatefulSet: Dockyard is the controller. A StatefulSet
    would restart the notebook on its own after an exit or an OOM kill, hiding what happened
    from Dockyard's states and the user; with a bare Pod an exit is observed and reported,
    and starting again is the user's (or the reconciler's) decision, as on Docker. The home
    lives on its own PVC, so nothing is lost when the pod goes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(spec, object_name(spec.uid), namespace),
        "spec": pod_spec(spec, namespace, options, files),
    }


def workspace_service(spec: WorkloadSpec, namespace: str) -> dict:
    """A ClusterIP Service: the proxy reaches Jupyter at a stable DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, object_name(spec.uid), namespace),
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_UID: label_value(spec.uid)},
            "ports": [{"name": f"p{port}", "port": port, "targetPort": port} for port in spec.ports],
        },
    }


def job_queue(spec: WorkloadSpec, options: ClusterOptions) -> str:
    """The Kueue LocalQueue this team's jobs go to, or "" when Dockyard admits them alone."""
    return options.kueue_queues.get(spec.team, options.kueue_default_queue) if spec.kind == "job" else ""


def job_manifest(spec: WorkloadSpec, namespace: str, options: ClusterOptions, files: FileParts | None = None) -> dict:
    """A batch/v1 Job. backoffLimit 0: retries stay Dockyard's (with its backoff and attempt
    records), and a multi-node job fails as a whole when any index fails. The deadline is a
    backstop past Dockyard's own timeout (which stops the pods first and so keeps their log)."""
    name = object_name(spec.uid)
    template_spec = pod_spec(spec, namespace, options, files)
    body: dict = {
        "backoffLimit": 0,
        "completions": spec.nodes,
        "parallelism": spec.nodes,
        "completionMode": "Indexed" if spec.nodes > 1 else "NonIndexed",
        "ttlSecondsAfterFinished": options.job_ttl_s,
        "template": {"metadata": _metadata(spec, "", namespace), "spec": template_spec},
    }
    del body["template"]["metadata"]["name"], body["template"]["metadata"]["namespace"]
    if spec.nodes > 1:
        template_spec["subdomain"] = name  # pods get <job>-<index>.<service> DNS names
    if spec.timeout_s:
        body["activeDeadlineSeconds"] = spec.timeout_s + options.job_deadline_slack_s
    metadata = _metadata(spec, name, namespace)
    queue = job_queue(spec, options)
    if queue:
        body["suspend"] = True  # Kueue unsuspends it once admitted
        metadata["labels"][LABEL_KUEUE_QUEUE] = queue
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": body}


def headless_service(spec: WorkloadSpec, namespace: str, options: ClusterOptions) -> dict:
    """Gives each pod of a multi-node job a stable DNS name; ready or not, since the
    rendezvous happens before any pod is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, object_name(spec.uid), namespace),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_UID: label_value(spec.uid)},
            "ports": [{"name": "master", "port": options.master_port, "targetPort": options.master_port}],
        },
    }


def fetch_pod(
    *,
    uid: str,
    namespace: str,
    image: str,
    user: str,
    claims: list[dict],
    owner: dict | None,
    options: ClusterOptions,
    lifetime_s: int,
) -> dict:
    """A short-lived helper that mounts an ended workload's volumes read-only at their usual
    paths, so files can be read from them (`tar` by exec) after its pods are gone."""
    spec = WorkloadSpec(uid=uid, kind="helper", owner="", team="", image=image, user=user, cpus=0.1, memory_mib=128)
    volumes, mounts = [], []
    for number, claim in enumerate(claims):
        target = (claim["metadata"].get("annotations") or {}).get(ANNOTATION_TARGET)
        if not target:
            continue
        volumes.append(
            {"name": f"v{number}", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True}}
        )
        mounts.append({"name": f"v{number}", "mountPath": target, "readOnly": True})
    labels = {LABEL_MANAGED: "true", LABEL_HELPER_FOR: label_value(uid), **options.scope_labels}
    metadata: dict = {
        "generateName": f"{object_name(uid)}-fetch-",
        "namespace": namespace,
        "labels": {k: label_value(v) for k, v in labels.items()},
    }
    if owner:
        metadata["ownerReferences"] = [owner]  # goes when the Job goes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "activeDeadlineSeconds": lifetime_s,  # ends itself even if Dockyard never deletes it
            "terminationGracePeriodSeconds": 0,
            "securityContext": pod_security_context(spec),
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "imagePullPolicy": options.image_pull_policy,
                    "command": ["sleep", str(lifetime_s)],
                    "resources": _resources(spec, options),
                    "securityContext": container_security_context(),
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }


# --- Status: pods and Jobs read into Observed -------------------------------------------------


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _labels_of(obj: dict) -> dict[str, str]:
    metadata = obj.get("metadata") or {}
    exact = (metadata.get("annotations") or {}).get(ANNOTATION_LABELS)
    return json.loads(exact) if exact else dict(metadata.get("labels") or {})


def _container_status(pod: dict) -> dict:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status
    return {}


def _condition(obj: dict, kind: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), {})


def pending_cause(pod: dict) -> tuple[str, str]:
    """Why a pod has not started: the scheduler's verdict, or the kubelet's (image pulls,
    config errors), as (reason, message); ("", "") while it is simply on its way."""
    scheduled = _condition(pod, "PodScheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", scheduled.get("message", "")
    for status in [
        *((pod.get("status") or {}).get("initContainerStatuses") or []),
        _container_status(pod),
    ]:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_REASONS:
            return waiting["reason"], waiting.get("message", "")
    return "", ""


def container_running(pod: dict) -> bool:
    """Whether the workload's container still runs. The pod's phase may say Failed already
    (its deadline passed) while the kubelet is still stopping the container: only the
    container's own state says that it ended."""
    return "running" in (_container_status(pod).get("state") or {})


def observe_pod(pod: dict, *, endpoints_host: str = "") -> Observed:
    """One pod's state. `endpoints_host`: where the portal reaches the pod's ports (its
    Service's DNS name, or its own address)."""
    status = pod.get("status") or {}
    labels = _labels_of(pod)
    phase = status.get("phase", "Pending")
    container = _container_status(pod)
    state = container.get("state") or {}
    terminated = state.get("terminated")
    common = {
        "uid": labels.get(LABEL_UID, ""),
        "kind": labels.get(LABEL_KIND, ""),
        "labels": labels,
        "node": (pod.get("spec") or {}).get("nodeName") or "",
        "pod_ip": status.get("podIP") or "",
    }
    if "running" in state and phase in ("Succeeded", "Failed"):  # being stopped: not ended yet
        return Observed(state=State.RUNNING, started_at=_time(state["running"].get("startedAt")), **common)
    if terminated or phase in ("Succeeded", "Failed"):
        terminated = terminated or {}
        code = terminated.get("exitCode")
        if terminated.get("reason") == "OOMKilled":
            reason = "OOMKilled"
        elif code == 0:
            reason = "Completed"
        elif status.get("reason") in ("Evicted", "Preempting", "NodeLost", "Terminated"):
            reason = status["reason"]
        else:
            reason = "Error" if code is not None else (status.get("reason") or "Error")
        return Observed(
            state=State.EXITED,
            exit_code=code,
            reason=reason,
            message=terminated.get("message") or status.get("message", ""),
            started_at=_time(terminated.get("startedAt") or status.get("startTime")),
            finished_at=_time(terminated.get("finishedAt")),
            **common,
        )
    if phase == "Running" and "running" in state:
        ports = [p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or []]
        endpoints = {port: Endpoint(host=endpoints_host, port=port) for port in ports} if endpoints_host else {}
        return Observed(
            state=State.RUNNING, endpoints=endpoints, started_at=_time(state["running"].get("startedAt")), **common
        )
    reason, message = pending_cause(pod)
    return Observed(state=State.CREATED, reason=reason, message=message, **common)


def _owned_by(pod: dict, uid: str) -> bool:
    return any(o.get("uid") == uid for o in (pod.get("metadata") or {}).get("ownerReferences") or [])


def current(jobs: list[dict], pods: list[dict]) -> tuple[list[dict], list[dict]]:
    """The workload's current Job (the newest: an earlier attempt's may still be going away)
    and only the pods that belong to it; without a Job, the pods no Job owns (a removed Job's
    pods may linger until garbage collection)."""
    if jobs:
        job = max(jobs, key=lambda j: (j.get("metadata") or {}).get("creationTimestamp") or "")
        return [job], [p for p in pods if _owned_by(p, job["metadata"].get("uid", ""))]
    bare = [
        p
        for p in pods
        if not any(o.get("kind") == "Job" for o in (p.get("metadata") or {}).get("ownerReferences") or [])
    ]
    return [], bare


def _index(pod: dict) -> int:
    return int(((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX_ANNOTATION, 0))


def observe_job(job: dict, pods: list[dict]) -> Observed:
    """A Job's state from the Job and its pods: running while any pod runs; ended when the
    Job completes or fails (the first failed pod gives the exit code and reason, e.g.
    OOMKilled); created while suspended (waiting for Kueue) or while pods wait."""
    labels = _labels_of(job)
    spec, status = job.get("spec") or {}, job.get("status") or {}
    pods = sorted(pods, key=lambda p: (_index(p), (p.get("metadata") or {}).get("creationTimestamp") or ""))
    seen = [observe_pod(pod) for pod in pods]
    nodes = ",".join(dict.fromkeys(o.node for o in seen if o.node))
    common = {"uid": labels.get(LABEL_UID, ""), "kind": labels.get(LABEL_KIND, ""), "labels": labels, "node": nodes}
    started = _time(status.get("startTime"))
    failed = _condition(job, "Failed")
    failed_pods = [o for o in seen if o.state == State.EXITED and o.exit_code != 0]
    if _condition(job, "Complete").get("status") == "True" or (
        not failed_pods and seen and len([o for o in seen if o.exit_code == 0]) >= spec.get("completions", 1)
    ):
        finished = _time(status.get("completionTime")) or max(
            (o.finished_at for o in seen if o.finished_at), default=None
        )
        return Observed(
            state=State.EXITED, exit_code=0, reason="Completed", started_at=started, finished_at=finished, **common
        )
    if failed.get("status") == "True" or failed_pods:
        first = failed_pods[0] if failed_pods else None
        reason = first.reason if first else failed.get("reason") or "Error"
        if failed.get("reason") == "DeadlineExceeded" and not first:
            reason = "DeadlineExceeded"
        return Observed(
            state=State.EXITED,
            exit_code=first.exit_code if first else None,
            reason=reason,
            message=(first.message if first else "") or failed.get("message", ""),
            started_at=started,
            finished_at=(first.finished_at if first else None) or _time(failed.get("lastTransitionTime")),
            **common,
        )
    running = [o for o in seen if o.state == State.RUNNING]
    if running:
        return Observed(state=State.RUNNING, started_at=started or running[0].started_at, **common)
    if spec.get("suspend"):
        queued = LABEL_KUEUE_QUEUE in ((job.get("metadata") or {}).get("labels") or {})
        message = "waiting for Kueue admission" if queued else "the Job is suspended"
        return Observed(state=State.CREATED, reason="Suspended", message=message, **common)
    waiting = next((o for o in seen if o.reason), None)
    return Observed(
        state=State.CREATED,
        reason=waiting.reason if waiting else "",
        message=waiting.message if waiting else "",
        **common,
    )


# The steps of getting a pod going, in order: ties in the events' (one-second) timestamps are
# broken by how far along each step is.
PULL_STEPS = ("Scheduled", "Pulling", "Pulled", "Failed", "BackOff")


def pull_message(events: list[dict]) -> str:
    """The latest image-pull step from a pod's events ("Pulling image ...", "Successfully
    pulled ...", "Back-off pulling ..."): the kubelet's view of the pull, shown while waiting."""
    steps = [e for e in events if e.get("reason") in PULL_STEPS]
    steps.sort(key=lambda e: (_event_time(e), PULL_STEPS.index(e["reason"])))
    return steps[-1].get("message", "") if steps else ""


def refusal_message(events: list[dict]) -> str:
    """What the API server said when it refused to create a Job's pods (an exceeded
    ResourceQuota, a LimitRange, a policy webhook): the latest FailedCreate event of the Job
    controller, "" when there is none."""
    refused = sorted((e for e in events if e.get("reason") == "FailedCreate"), key=_event_time)
    return refused[-1].get("message", "") if refused else ""


def _event_time(event: dict) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )
