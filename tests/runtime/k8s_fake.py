"""A small, stateful fake of the Kubernetes API server, for the backend's tests.

The real `kubernetes` client talks to it over HTTP, as it would to a cluster. It stores
objects per resource and namespace with resource versions, and serves create, get, list,
watch (chunked JSON lines, which a test can cut off or answer with 410 Gone), patch, replace
and delete, label and field selectors, pod logs (with follow) and exec (a WebSocket on the v4
channel protocol, enough for `tar cf -`). Every object created or replaced is validated
against the official OpenAPI schema (kubernetes-validate, strict) and the API server's name
and label rules, so an invalid manifest fails here as it would on a cluster.

What a cluster's controllers do is played by the test through methods: `run`, `exit`,
`oom`, `unschedulable`, `pull_backoff` for the kubelet and scheduler, and a small Job
controller that makes a Job's pods (indexed or not), counts them and marks the Job complete
or failed; `kueue_admit` unsuspends a Job as Kueue would.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import ipaddress
import itertools
import json
import re
import socket
import tarfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
from django.conf import settings
from kubernetes.utils.quantity import parse_quantity

from portal.runtime import kubernetes as kubernetes_backend

# The Kubernetes version whose schema every manifest is checked against.
SCHEMA_VERSION = "1.33"
WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# (api prefix, plural) -> (kind, apiVersion, namespaced)
RESOURCES = {
    ("api/v1", "namespaces"): ("Namespace", "v1", False),
    ("api/v1", "nodes"): ("Node", "v1", False),
    ("api/v1", "pods"): ("Pod", "v1", True),
    ("api/v1", "services"): ("Service", "v1", True),
    ("api/v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", "v1", True),
    ("api/v1", "secrets"): ("Secret", "v1", True),
    ("api/v1", "configmaps"): ("ConfigMap", "v1", True),
    ("api/v1", "resourcequotas"): ("ResourceQuota", "v1", True),
    ("api/v1", "events"): ("Event", "v1", True),
    ("apis/batch/v1", "jobs"): ("Job", "batch/v1", True),
    ("apis/networking.k8s.io/v1", "networkpolicies"): ("NetworkPolicy", "networking.k8s.io/v1", True),
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123 (namespaces)
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035 (services)
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
TERMINAL = ("Succeeded", "Failed")
# How long the kubelet takes to stop a container once its pod's deadline passed (the pod is
# Failed at once; its container runs, and may print, until then), and how long a deleted
# claim stays terminating behind the pvc-protection finalizer once no pod uses it.
KILL_DELAY_S = 1.0
FINALIZE_DELAY_S = 0.3
PVC_PROTECTION = "kubernetes.io/pvc-protection"
# Quantities as the API server writes them back: the largest suffix with a whole number.
BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))
DECIMAL_SUFFIXES = (("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3), ("", 0))
DECIMAL_SUFFIXES += (("m", -3), ("u", -6), ("n", -9))
QUOTA_KEYS = {
    key: tuple(key.split(".", 1))
    for key in ("requests.cpu", "limits.cpu", "requests.memory", "limits.memory", "requests.nvidia.com/gpu")
}


def now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


class Dropped(Exception):
    """The test cut the connection off."""


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_matches(selector: str, labels: dict) -> bool:
    for term in filter(None, (t.strip() for t in _split_terms(selector))):
        if m := re.fullmatch(r"([^!=\s]+)\s+in\s+\((.*)\)", term):
            if labels.get(m[1]) not in [v.strip() for v in m[2].split(",")]:
                return False
        elif m := re.fullmatch(r"([^!=\s]+)\s+notin\s+\((.*)\)", term):
            if labels.get(m[1]) in [v.strip() for v in m[2].split(",")]:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = re.split(r"==?", term, maxsplit=1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [*terms, current]


def field_matches(selector: str, obj: dict) -> bool:
    for term in filter(None, selector.split(",")):
        negate = "!=" in term
        key, value = re.split(r"!=|==?", term, maxsplit=1)
        actual = obj
        for part in key.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value) == negate:
            return False
    return True


class FakeKube:
    """The fake API server's state, plus the methods a test drives the cluster with."""

    def __init__(self, *, validate: bool = True):
        self.cond = threading.Condition()
        self.validate = validate
        self.rv = 1
        self.objects: dict[str, dict[tuple[str, str], dict]] = {plural: {} for _, plural in RESOURCES}
        self.history: list[tuple[int, str, str, dict]] = []  # (rv, plural, type, object)
        self.compacted_rv = 0  # watches from before this get 410 Gone
        self.watch_generation = 0  # bumped to cut every open watch off
        self.gone_next_watch = 0  # answer this many next watch requests with an HTTP 410
        self.requests: list[tuple[str, str]] = []
        self.watches_served = 0
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.volumes: dict[tuple[str, str], dict[str, bytes]] = {}  # (ns, claim) -> {relative path: data}
        self.dns = False  # Service names resolve (a portal in a cluster with DNS): see resolve()
        self.auto_run = None  # a predicate on a new pod: run it at once (as a fast cluster would)
        self._syncing: set[str] = set()
        self.started: dict[tuple[str, str], float] = {}  # when each pod started (for deadlines)
        self.timers: list[threading.Timer] = []
        pod_ips = itertools.count(2)
        self.next_pod_ip = lambda: f"10.244.0.{next(pod_ips)}"  # a test may route pods to loopback
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- Serving ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeKube:
        self.thread.start()
        kubernetes_backend.resolve = self.resolve
        return self

    def resolve(self, host: str) -> None:
        """The cluster's DNS as the portal sees it. Like the real cluster this fake stands for
        (no DNS add-on, a portal outside it), no cluster name resolves unless a test turns
        `dns` on; then a Service's name does. Nothing is asked of this machine's resolver."""
        name, _, rest = host.partition(".")
        namespace, _, domain = rest.partition(".svc.")
        with self.cond:
            found = self.dns and (namespace, name) in self.objects["services"]
        if not found or domain != settings.DOCKYARD_K8S_CLUSTER_DOMAIN:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def close(self) -> None:
        kubernetes_backend.resolve = kubernetes_backend._system_resolve
        for timer in self.timers:
            timer.cancel()
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "fake",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                }
            )
        )
        return path

    # --- Storage ---------------------------------------------------------------------------

    def _bump(self, plural: str, kind: str, obj: dict) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, plural, kind, copy.deepcopy(obj)))
        self.cond.notify_all()
        return obj

    def create(self, plural: str, namespace: str, body: dict) -> dict:
        with self.cond:
            kind, api_version, namespaced = _resource(plural)
            self._validate(plural, body)
            meta = body.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if namespaced:
                if ("", namespace) not in self.objects["namespaces"]:
                    raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
                meta["namespace"] = namespace
            key = (namespace if namespaced else "", meta["name"])
            if key in self.objects[plural]:
                raise ApiError(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            if plural == "pods":
                self._admit_by_quota(namespace, body)
            obj = _canonical({**copy.deepcopy(body), "kind": kind, "apiVersion": api_version})
            obj["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
            self._defaults(plural, obj)
            self.objects[plural][key] = obj
            self._bump(plural, "ADDED", obj)
            made = copy.deepcopy(obj)
            self._after_change(plural, obj)
            if self._dangling(obj):  # the garbage collector deletes it at once
                self.delete(plural, key[0], key[1])
            return made

    def _dangling(self, obj: dict) -> bool:
        """Owned, but by no live object of the kind and uid its references name: the garbage
        collector looks owners up by kind (and namespace and name), then compares the uid."""
        owners = obj["metadata"].get("ownerReferences") or []
        return bool(owners) and not any(self._owner_alive(obj, owner) for owner in owners)

    def _owner_alive(self, obj: dict, owner: dict) -> bool:
        named = (owner.get("kind"), owner.get("apiVersion"))
        plural = next((p for (_, p), v in RESOURCES.items() if v[:2] == named), None)
        if plural is None:
            return False
        namespace = obj["metadata"].get("namespace", "") if _resource(plural)[2] else ""
        found = self.objects[plural].get((namespace, owner.get("name")))
        return found is not None and found["metadata"]["uid"] == owner.get("uid")

    def _admit_by_quota(self, namespace: str, pod: dict) -> None:
        """The ResourceQuota admission plugin: a pod that would take the namespace over a
        quota's hard limits (counting pods that have not ended) is refused with 403."""
        for quota in self.objects["resourcequotas"].values():
            if quota["metadata"]["namespace"] != namespace:
                continue
            hard = quota["spec"].get("hard") or {}
            live = [
                p
                for (ns, _), p in self.objects["pods"].items()
                if ns == namespace and p["status"]["phase"] not in TERMINAL
            ]
            for key, limit in hard.items():
                used = len(live) if key == "pods" else sum(_pod_amount(p, key) for p in live)
                asked = 1 if key == "pods" else _pod_amount(pod, key)
                if asked and used + asked > parse_quantity(limit):
                    name = pod["metadata"].get("name", "")
                    raise ApiError(
                        403,
                        "Forbidden",
                        f'pods "{name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, requested: '
                        f"{key}={asked}, used: {key}={used}, limited: {key}={limit}",
                    )

    def _defaults(self, plural: str, obj: dict) -> None:
        if plural == "pods":
            obj["status"] = {"phase": "Pending", "conditions": []}
            if self.auto_run and self.auto_run(obj):
                self._run(obj, "node-a")
        elif plural == "namespaces":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj["status"] = {"phase": "Active"}
        elif plural == "jobs":
            obj["status"] = {}
            obj["spec"].setdefault("suspend", False)
        elif plural == "persistentvolumeclaims":
            obj["status"] = {"phase": "Bound"}
            obj["metadata"]["finalizers"] = [PVC_PROTECTION]  # as the API server's admission adds it
            self.volumes.setdefault((obj["metadata"]["namespace"], obj["metadata"]["name"]), {})

    def get(self, plural: str, namespace: str, name: str) -> dict:
        with self.cond:
            obj = self.objects[plural].get((namespace if _resource(plural)[2] else "", name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            return copy.deepcopy(obj)

    def find(self, plural: str, namespace: str | None = None, selector: str = "") -> list[dict]:
        with self.cond:
            return [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self.objects[plural].items())
                if (namespace is None or ns == namespace) and selector_matches(selector, _labels(obj))
            ]

    def patch(self, plural: str, namespace: str, name: str, patch: dict) -> dict:
        with self.cond:
            current = self.get(plural, namespace, name)
            if plural == "pods" and "spec" in patch:
                self._check_pod_update(current, patch["spec"])
            updated = merge_patch(current, patch)
            return self._store(plural, updated)

    def replace(self, plural: str, namespace: str, name: str, body: dict) -> dict:
        with self.cond:
            current = self.get(plural, namespace, name)
            self._validate(plural, body)
            body = _canonical(copy.deepcopy(body))
            body["metadata"] = {**current["metadata"], **body["metadata"]}
            body.setdefault("status", current.get("status"))
            body["kind"], body["apiVersion"] = current["kind"], current["apiVersion"]
            return self._store(plural, body)

    def _store(self, plural: str, obj: dict) -> dict:
        namespaced = _resource(plural)[2]
        key = (obj["metadata"].get("namespace", "") if namespaced else "", obj["metadata"]["name"])
        self.objects[plural][key] = obj
        self._bump(plural, "MODIFIED", obj)
        self._after_change(plural, obj)
        return copy.deepcopy(obj)

    def delete(self, plural: str, namespace: str, name: str, propagation: str | None = None) -> dict:
        with self.cond:
            key = (namespace if _resource(plural)[2] else "", name)
            obj = self.objects[plural].get(key)
            if obj is None:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            if obj["metadata"].get("finalizers"):
                # Marked for deletion; it goes once its finalizers are done (pvc-protection:
                # no pod uses the claim any more).
                if not obj["metadata"].get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = now()
                    self._bump(plural, "MODIFIED", obj)
                    self._later(FINALIZE_DELAY_S, self._finalize, plural, key)
                return copy.deepcopy(obj)
            del self.objects[plural][key]
            self._bump(plural, "DELETED", obj)
            # Garbage collection: dependents (owned by this kind and uid) go too, except a
            # Job's pods when orphaned (the API's default for batch/v1 Jobs).
            orphan = propagation == "Orphan" or (plural == "jobs" and propagation is None)
            if not orphan:
                kind, api_version, _ = _resource(plural)
                for dependent_plural, objects in self.objects.items():
                    for dep_key, dependent in list(objects.items()):
                        owners = dependent["metadata"].get("ownerReferences") or []
                        this = (kind, api_version, obj["metadata"]["uid"])
                        owned = any((o.get("kind"), o.get("apiVersion"), o.get("uid")) == this for o in owners)
                        if owned and dep_key in objects:  # an earlier cascade may have taken it
                            self.delete(dependent_plural, dep_key[0], dep_key[1])
            if plural == "persistentvolumeclaims":
                self.volumes.pop(key, None)
            if plural == "pods":
                self._pod_changed(obj)
            return obj

    def _later(self, delay: float, action, *args) -> None:
        timer = threading.Timer(delay, action, args=args)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()

    def _finalize(self, plural: str, key: tuple[str, str]) -> None:
        with self.cond:
            obj = self.objects[plural].get(key)
            if obj is None:
                return
            if plural == "persistentvolumeclaims" and self._claim_in_use(key):
                self._later(FINALIZE_DELAY_S, self._finalize, plural, key)
                return
            obj["metadata"]["finalizers"] = []
            self.delete(plural, key[0], key[1])

    def _claim_in_use(self, key: tuple[str, str]) -> bool:
        return any(
            volume.get("persistentVolumeClaim", {}).get("claimName") == key[1]
            for (ns, _), pod in self.objects["pods"].items()
            if ns == key[0] and pod["status"]["phase"] not in TERMINAL
            for volume in pod["spec"].get("volumes") or []
        )

    def _validate(self, plural: str, body: dict) -> None:
        if not self.validate:
            return
        kind, api_version, _ = _resource(plural)
        if body.get("kind") != kind or body.get("apiVersion") != api_version:
            raise ApiError(400, "BadRequest", f"expected {api_version} {kind}, got {body.get('kind')}")
        try:
            kubernetes_validate.validate(body, SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise ApiError(422, "Invalid", f"{kind} is invalid: {str(error).splitlines()[0]}") from None
        for problem in _api_server_rules(plural, body):
            raise ApiError(422, "Invalid", f"{kind} is invalid: {problem}")

    def _check_pod_update(self, current: dict, spec_patch: dict) -> None:
        # The API server lets only a few pod spec fields change; activeDeadlineSeconds may be
        # set or lowered.
        allowed = {"activeDeadlineSeconds", "tolerations"}
        if set(spec_patch) - allowed:
            raise ApiError(422, "Invalid", f"Pod is invalid: spec: Forbidden: fields {set(spec_patch) - allowed}")
        old = current["spec"].get("activeDeadlineSeconds")
        new = spec_patch.get("activeDeadlineSeconds")
        if old is not None and new is not None and new > old:
            raise ApiError(422, "Invalid", "Pod is invalid: spec.activeDeadlineSeconds may only be decreased")

    # --- The cluster's controllers ---------------------------------------------------------

    def _after_change(self, plural: str, obj: dict) -> None:
        if plural == "pods":
            self._check_deadline(obj)
            self._pod_changed(obj)
        elif plural == "jobs":
            self._sync_job(obj)

    def _check_deadline(self, pod: dict) -> None:
        """The kubelet stops a pod past its active deadline, and keeps the pod (and its log)."""
        deadline = pod["spec"].get("activeDeadlineSeconds")
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        if deadline is None or pod["status"]["phase"] != "Running" or key not in self.started:
            return
        remaining = deadline - (time.monotonic() - self.started[key])
        if remaining <= 0:
            self._deadline_passed(*key)
            return
        self._later(remaining, self._deadline_passed, *key)

    def _deadline_passed(self, namespace: str, name: str) -> None:
        """The kubelet marks the pod Failed at once, then stops its container (SIGTERM, the
        grace period): for KILL_DELAY_S the pod is Failed and its container still runs."""
        with self.cond:
            pod = self.objects["pods"].get((namespace, name))
            if pod is not None and pod["status"]["phase"] == "Running":
                status = pod["status"]
                status.update(phase="Failed", reason="DeadlineExceeded")
                status["message"] = "Pod was active on the node longer than the specified deadline"
                _condition(pod, "Ready", "False")
                self._store("pods", pod)
                self._later(KILL_DELAY_S, self._container_stopped, namespace, name)

    def _container_stopped(self, namespace: str, name: str) -> None:
        with self.cond:
            pod = self.objects["pods"].get((namespace, name))
            statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
            if pod is not None and any("running" in c.get("state", {}) for c in statuses):
                self._terminate(pod, 143, "Error", pod_reason="DeadlineExceeded")
                self._store("pods", pod)

    def _pod_changed(self, pod: dict) -> None:
        for owner in pod["metadata"].get("ownerReferences") or []:
            if owner.get("kind") == "Job":
                job = self.objects["jobs"].get((pod["metadata"]["namespace"], owner["name"]))
                if job is not None and job["metadata"]["uid"] == owner["uid"]:
                    self._sync_job(job)

    def _job_pods(self, job: dict) -> list[dict]:
        namespace = job["metadata"]["namespace"]
        return [
            pod
            for (ns, _), pod in self.objects["pods"].items()
            if ns == namespace
            and any(o.get("uid") == job["metadata"]["uid"] for o in pod["metadata"].get("ownerReferences") or [])
        ]

    def _sync_job(self, job: dict) -> None:
        """A Job controller in miniature: pods per completion (indexed or not), counts,
        conditions, backoffLimit, suspend and activeDeadlineSeconds."""
        if job["metadata"]["uid"] in self._syncing:
            return  # a pod this sync deleted or made reports back: the outer sync counts it
        self._syncing.add(job["metadata"]["uid"])
        try:
            self._sync_job_once(job)
        finally:
            self._syncing.discard(job["metadata"]["uid"])

    def _sync_job_once(self, job: dict) -> None:
        spec, status = job["spec"], job.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        if any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions):
            return
        pods = self._job_pods(job)
        active = [p for p in pods if p["status"]["phase"] not in TERMINAL]
        failed = [p for p in pods if p["status"]["phase"] == "Failed"]
        succeeded = [p for p in pods if p["status"]["phase"] == "Succeeded"]
        changed = {"active": len(active), "failed": len(failed), "succeeded": len(succeeded)}
        finish = None
        was_suspended = any(c["type"] == "Suspended" for c in conditions)
        if spec.get("suspend"):
            for pod in active:
                self.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            changed["active"] = 0
            if not was_suspended:
                conditions.append({"type": "Suspended", "status": "True", "reason": "JobSuspended"})
        else:
            conditions[:] = [c for c in conditions if c["type"] != "Suspended"]
            status.setdefault("startTime", now())
            completions = spec.get("completions", 1)
            deadline = spec.get("activeDeadlineSeconds")
            started = datetime.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if deadline is not None and (datetime.now(tz=UTC) - started).total_seconds() >= deadline:
                finish = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
            elif len(failed) > spec.get("backoffLimit", 6):
                finish = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
            elif len(succeeded) >= completions:
                finish = ("Complete", "", "")
            elif not active:
                self._make_job_pods(job, have=pods)
                changed["active"] = len([p for p in self._job_pods(job) if p["status"]["phase"] not in TERMINAL])
        if finish is not None:
            for pod in active:  # the controller ends whatever still runs
                self.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])
            changed["active"] = 0
            kind, reason, message = finish
            conditions.append(
                {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
            )
            if kind == "Complete":
                status["completionTime"] = now()
        suspension_changed = was_suspended != bool(spec.get("suspend"))
        if any(status.get(k, 0) != v for k, v in changed.items()) or finish is not None or suspension_changed:
            status.update(changed)
            self._bump("jobs", "MODIFIED", job)

    def _make_job_pods(self, job: dict, *, have: list[dict]) -> None:
        spec = job["spec"]
        template = spec["template"]
        indexed = spec.get("completionMode") == "Indexed"
        done = {p["metadata"].get("annotations", {}).get("batch.kubernetes.io/job-completion-index") for p in have}
        count = spec.get("parallelism", 1)
        for index in range(count):
            if indexed and str(index) in done:
                continue
            name = job["metadata"]["name"]
            metadata = copy.deepcopy(template.get("metadata", {}))
            labels = metadata.setdefault("labels", {})
            labels.update(
                {
                    "batch.kubernetes.io/job-name": name,
                    "job-name": name,
                    "batch.kubernetes.io/controller-uid": job["metadata"]["uid"],
                }
            )
            pod_spec = copy.deepcopy(template["spec"])
            if indexed:
                metadata.setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(index)
                labels["batch.kubernetes.io/job-completion-index"] = str(index)
                pod_spec["hostname"] = f"{name}-{index}"
                for container in pod_spec["containers"]:
                    container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
            metadata["name"] = f"{name}-{index}-{uuid.uuid4().hex[:5]}" if indexed else f"{name}-{uuid.uuid4().hex[:5]}"
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                }
            ]
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}
            try:
                self.create("pods", job["metadata"]["namespace"], pod)
            except ApiError as error:  # refused (a quota): the controller only says so in an event
                self._job_event(job, "FailedCreate", f"Error creating: {error.message}")

    def _job_event(self, job: dict, reason: str, message: str) -> None:
        meta = job["metadata"]
        involved = {"kind": "Job", "apiVersion": "batch/v1", "uid": meta["uid"]}
        involved.update(name=meta["name"], namespace=meta["namespace"])
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:8]}", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": "job-controller"},
            "lastTimestamp": now(),
        }
        self.create("events", meta["namespace"], event)

    # --- What a test drives ----------------------------------------------------------------

    def pods_of(self, namespace: str, uid: str) -> list[dict]:
        return self.find("pods", namespace, f"dockyard.uid={uid}")

    def _pod_for_change(self, namespace: str, name: str) -> dict:
        return self.objects["pods"][(namespace, name)]

    def schedule(self, namespace: str, name: str, node: str = "node-a") -> None:
        with self.cond:
            pod = self._pod_for_change(namespace, name)
            pod["spec"]["nodeName"] = node
            _condition(pod, "PodScheduled", "True")
            self._store("pods", pod)

    def run(self, namespace: str, name: str, node: str = "node-a") -> None:
        """The scheduler placed the pod and the kubelet started its container."""
        with self.cond:
            self._run(self._pod_for_change(namespace, name), node)
            self._store("pods", self._pod_for_change(namespace, name))

    def _run(self, pod: dict, node: str) -> None:
        self.started[(pod["metadata"]["namespace"], pod["metadata"]["name"])] = time.monotonic()
        pod["spec"]["nodeName"] = node
        status = pod["status"]
        status.update(phase="Running", startTime=now(), podIP=self.next_pod_ip(), hostIP="192.0.2.1")
        _condition(pod, "PodScheduled", "True")
        _condition(pod, "Ready", "True")
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": now()}},
            }
            for c in pod["spec"]["containers"]
        ]

    def exit(self, namespace: str, name: str, code: int, reason: str = "") -> None:
        """The pod's container ended with `code` (reason as the kubelet reports it)."""
        with self.cond:
            pod = self._pod_for_change(namespace, name)
            if pod["status"]["phase"] == "Pending":
                self._run(pod, "node-a")
            self._terminate(pod, code, reason or ("Completed" if code == 0 else "Error"))
            self._store("pods", pod)

    def oom(self, namespace: str, name: str) -> None:
        self.exit(namespace, name, 137, "OOMKilled")

    def _terminate(self, pod: dict, code: int, reason: str, *, pod_reason: str = "") -> None:
        status = pod["status"]
        started = (status.get("containerStatuses") or [{}])[0].get("state", {}).get("running", {}).get("startedAt")
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        if pod_reason:
            status["reason"] = pod_reason
            status["message"] = "Pod was active on the node longer than the specified deadline"
        _condition(pod, "Ready", "False")
        for container in status.get("containerStatuses") or []:
            container.update(ready=False, started=False)
            container["state"] = {
                "terminated": {"exitCode": code, "reason": reason, "startedAt": started or now(), "finishedAt": now()}
            }

    def unschedulable(self, namespace: str, name: str, message: str) -> None:
        with self.cond:
            pod = self._pod_for_change(namespace, name)
            _condition(pod, "PodScheduled", "False", reason="Unschedulable", message=message)
            self._store("pods", pod)

    def pull_backoff(self, namespace: str, name: str, message: str, reason: str = "ImagePullBackOff") -> None:
        with self.cond:
            pod = self._pod_for_change(namespace, name)
            pod["spec"]["nodeName"] = "node-a"
            _condition(pod, "PodScheduled", "True")
            pod["status"]["containerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }
                for c in pod["spec"]["containers"]
            ]
            self._store("pods", pod)

    def event(self, namespace: str, pod_name: str, reason: str, message: str) -> None:
        """An event about a pod, as the kubelet writes while pulling its image."""
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod_name}.{uuid.uuid4().hex[:8]}", "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": namespace},
            "reason": reason,
            "message": message,
            "type": "Normal",
            "lastTimestamp": now(),
        }
        self.create("events", namespace, body)

    def kueue_admit(self, namespace: str, name: str) -> None:
        self.patch("jobs", namespace, name, {"spec": {"suspend": False}})

    def log(self, namespace: str, pod_name: str, *lines: str) -> None:
        with self.cond:
            self.logs.setdefault((namespace, pod_name), []).extend(lines)
            self.cond.notify_all()

    def write(self, namespace: str, claim: str, path: str, data: bytes) -> None:
        """A file in a volume (as the workload would write it)."""
        with self.cond:
            self.volumes.setdefault((namespace, claim), {})[path.strip("/")] = data

    def add_node(self, name: str, *, cpu: str, memory: str, gpus: int = 0, model: str = "", ready: bool = True):
        labels = {"kubernetes.io/hostname": name, **({"nvidia.com/gpu.product": model} if model else {})}
        allocatable = {"cpu": cpu, "memory": memory, "pods": "110", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "status": {
                "allocatable": allocatable,
                "capacity": allocatable,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
        with self.cond:
            self.objects["nodes"][("", name)] = {**node, "metadata": {**node["metadata"], "uid": str(uuid.uuid4())}}
            self._bump("nodes", "ADDED", self.objects["nodes"][("", name)])

    def drop_watches(self) -> None:
        """Cuts every open watch off mid-stream, as a load balancer or a restarting API
        server would."""
        with self.cond:
            self.watch_generation += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Other changes happened and the history was compacted past them: a watch resuming
        from any version seen so far gets 410 Gone."""
        with self.cond:
            self.rv += 1
            self.compacted_rv = self.rv
            self.history.clear()

    def egress_allowed(self, pod: dict, address: str, port: int, protocol: str = "TCP") -> bool:
        """Whether the NetworkPolicies let `pod` connect to address:port, as a network plugin
        that enforces them decides: allowed when no policy selects the pod for egress, else
        when any rule of any such policy matches both the port and the destination."""
        namespace, labels = pod["metadata"]["namespace"], _labels(pod)
        policies = [
            policy["spec"]
            for policy in self.find("networkpolicies", namespace)
            if "Egress" in policy["spec"].get("policyTypes", [])
            and _selects(policy["spec"].get("podSelector") or {}, labels)
        ]
        if not policies:
            return True
        return any(
            _port_matches(rule, port, protocol) and self._peer_matches(rule, namespace, address)
            for spec in policies
            for rule in spec.get("egress") or []
        )

    def _peer_matches(self, rule: dict, namespace: str, address: str) -> bool:
        peers = rule.get("to")
        if not peers:
            return True  # no `to`: every destination
        ip = ipaddress.ip_address(address)
        target = next((p for p in self.find("pods") if p["status"].get("podIP") == address), None)
        for peer in peers:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                inside = _within(ip, block["cidr"])
                excepted = any(_within(ip, cidr) for cidr in block.get("except", []))
                if inside and not excepted:
                    return True
            elif target is not None:
                target_ns = target["metadata"]["namespace"]
                if "namespaceSelector" in peer:
                    ns_labels = _labels(self.get("namespaces", "", target_ns))
                    if not _selects(peer["namespaceSelector"], ns_labels):
                        continue
                elif target_ns != namespace:
                    continue
                if _selects(peer.get("podSelector") or {}, _labels(target)):
                    return True
        return False

    def count(self, method: str, path_prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(path_prefix))

    # --- Exec: what `tar cf - -C <dir> <name>` prints in a pod ----------------------------------

    def exec_tar(self, pod: dict, command: list[str]) -> tuple[bytes, str, int]:
        if command[:3] != ["tar", "cf", "-"] or len(command) != 6 or command[3] != "-C":
            return b"", f"fake exec runs only tar cf - -C DIR NAME, not {command}", 127
        path = f"{command[4].rstrip('/')}/{command[5]}"
        claim, inside = self._volume_for(pod, path)
        files = self.volumes.get((pod["metadata"]["namespace"], claim), {}) if claim else {}
        prefix = inside.strip("/")
        chosen = {p: d for p, d in files.items() if not prefix or p == prefix or p.startswith(prefix + "/")}
        if not chosen and prefix:
            # GNU tar still writes an (empty) archive before it fails.
            empty = io.BytesIO()
            tarfile.open(fileobj=empty, mode="w").close()
            stderr = f"tar: {command[5]}: Cannot stat: No such file or directory\n"
            return empty.getvalue(), stderr + "tar: Exiting with failure status due to previous errors\n", 2
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            folder = tarfile.TarInfo(command[5])
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            if prefix not in chosen:
                tar.addfile(folder)
            for relative, data in sorted(chosen.items()):
                rest = relative[len(prefix) :].lstrip("/") if prefix else relative
                info = tarfile.TarInfo(f"{command[5]}/{rest}" if rest else command[5])
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue(), "", 0

    def _volume_for(self, pod: dict, path: str) -> tuple[str | None, str]:
        volumes = pod["spec"].get("volumes") or []
        claims = {v["name"]: (v.get("persistentVolumeClaim") or {}).get("claimName") for v in volumes}
        for mount in pod["spec"]["containers"][0].get("volumeMounts", []):
            target = mount["mountPath"].rstrip("/")
            if path == target or path.startswith(target + "/"):
                return claims.get(mount["name"]), path[len(target) :]
        return None, path


def _within(ip, cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return ip.version == network.version and ip in network


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in (selector.get("matchLabels") or {}).items())


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def canonical_quantity(text: str) -> str:
    """A quantity as a real API server writes it back: 8000m is 8, 32768Mi is 32Gi, 8000 is 8k."""
    value = parse_quantity(text)
    if text.endswith("i") and abs(value) >= 1024:
        for suffix, factor in BINARY_SUFFIXES:
            if value % factor == 0:
                return f"{int(value // factor)}{suffix}"
    for suffix, exponent in DECIMAL_SUFFIXES:
        scaled = value.scaleb(-exponent)
        if scaled == scaled.to_integral_value():
            return f"{int(scaled)}{suffix}"
    return text


def _canonical(obj):
    """Every quantity of resource requests and limits and of quotas, canonical."""
    if isinstance(obj, list):
        return [_canonical(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    result = {}
    for key, value in obj.items():
        if key in ("requests", "limits", "hard") and isinstance(value, dict):
            result[key] = {k: canonical_quantity(v) if isinstance(v, str) else v for k, v in value.items()}
        else:
            result[key] = _canonical(value)
    return result


def _pod_amount(pod: dict, key: str):
    """A pod's total of a quota key (e.g. limits.cpu) over its containers."""
    part, resource = QUOTA_KEYS.get(key, ("", ""))
    total = parse_quantity("0")
    for container in pod["spec"].get("containers") or []:
        amount = ((container.get("resources") or {}).get(part) or {}).get(resource)
        total += parse_quantity(amount) if amount else 0
    return total


def _resource(plural: str) -> tuple[str, str, bool]:
    for (_, name), value in RESOURCES.items():
        if name == plural:
            return value
    raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")


def _labels(obj: dict) -> dict:
    return obj.get("metadata", {}).get("labels") or {}


def _condition(pod: dict, kind: str, status: str, **fields) -> None:
    conditions = pod["status"].setdefault("conditions", [])
    conditions[:] = [c for c in conditions if c["type"] != kind]
    conditions.append({"type": kind, "status": status, "lastTransitionTime": now(), **fields})


def _api_server_rules(plural: str, body: dict) -> list[str]:
    """The API server's own checks the schema does not express: names and labels."""
    meta = body.get("metadata", {})
    problems = []
    name = meta.get("name", "")
    pattern = {"services": DNS_1035, "namespaces": DNS_LABEL}.get(plural, DNS_SUBDOMAIN)
    if name and (not pattern.match(name) or len(name) > (253 if pattern is DNS_SUBDOMAIN else 63)):
        problems.append(f"metadata.name: Invalid value: {name!r}")
    for where in (meta, (body.get("spec", {}).get("template") or {}).get("metadata") or {}):
        for key, value in (where.get("labels") or {}).items():
            prefix, _, label = key.rpartition("/")
            if not LABEL_NAME.match(label) or len(label) > 63 or (prefix and not DNS_SUBDOMAIN.match(prefix)):
                problems.append(f"metadata.labels: Invalid value: {key!r}")
            if not LABEL_VALUE.match(value) or len(value) > 63:
                problems.append(f"metadata.labels: Invalid value: {value!r}")
    if plural == "secrets":
        size = sum(len(base64.b64decode(v)) for v in (body.get("data") or {}).values())
        if size > 1024 * 1024:
            problems.append("data: Too long: must have at most 1048576 bytes")
    return problems


# --- HTTP ----------------------------------------------------------------------------------------


def _handler(fake: FakeKube):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_PATCH(self):
            self._serve("PATCH")

        def do_PUT(self):
            self._serve("PUT")

        def do_DELETE(self):
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            fake.requests.append((method, url.path))
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null") if length else None
            try:
                self._route(method, url.path, query, body, parse_qs(url.query))
            except ApiError as error:
                self._json(error.code, error.status())
            except Dropped:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        def _route(self, method, path, query, body, multi) -> None:
            if path == "/version":
                return self._json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
            parts = path.strip("/").split("/")
            prefix_len = 2 if parts[0] == "api" else 3
            prefix, rest = "/".join(parts[:prefix_len]), parts[prefix_len:]
            namespace = None
            if len(rest) >= 3 and rest[0] == "namespaces":
                namespace, rest = rest[1], rest[2:]
            plural = rest[0] if rest else ""
            if (prefix, plural) not in RESOURCES:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource {path}")
            name = rest[1] if len(rest) > 1 else None
            sub = rest[2] if len(rest) > 2 else None
            ns = namespace or ""
            if sub == "log":
                return self._log(ns, name, query)
            if sub == "exec":
                return self._exec(ns, name, multi)
            if sub == "status":
                raise ApiError(405, "MethodNotAllowed", "status updates are the test's business")
            if method == "GET" and name is None:
                if query.get("watch") in ("true", "1"):
                    return self._watch(plural, namespace, query)
                return self._list(plural, namespace, query)
            if method == "GET":
                return self._json(200, fake.get(plural, ns, name))
            if method == "POST":
                return self._json(201, fake.create(plural, ns, body))
            if method == "PATCH":
                return self._json(200, fake.patch(plural, ns, name, body))
            if method == "PUT":
                return self._json(200, fake.replace(plural, ns, name, body))
            if method == "DELETE" and name is None:
                for obj in fake.find(plural, namespace, query.get("labelSelector", "")):
                    fake.delete(plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                return self._json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            propagation = (body or {}).get("propagationPolicy") or query.get("propagationPolicy")
            return self._json(200, fake.delete(plural, ns, name, propagation))

        def _list(self, plural, namespace, query) -> None:
            with fake.cond:
                items = [
                    obj
                    for obj in fake.find(plural, namespace, query.get("labelSelector", ""))
                    if field_matches(query.get("fieldSelector", ""), obj)
                ]
                rv = str(fake.rv)
            kind = _resource(plural)[0]
            for item in items:  # a real API server leaves them out of list items
                item.pop("kind", None)
                item.pop("apiVersion", None)
            self._json(
                200,
                {
                    "kind": f"{kind}List",
                    "apiVersion": _resource(plural)[1],
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                },
            )

        def _watch(self, plural, namespace, query) -> None:
            labels, fields = query.get("labelSelector", ""), query.get("fieldSelector", "")
            timeout = float(query.get("timeoutSeconds") or 300)
            since = query.get("resourceVersion") or ""
            with fake.cond:
                fake.watches_served += 1
                if fake.gone_next_watch:
                    fake.gone_next_watch -= 1
                    raise ApiError(410, "Expired", "too old resource version")
                generation = fake.watch_generation
                expired = since not in ("", "0") and int(since) < fake.compacted_rv
                if since in ("", "0"):
                    initial = [("ADDED", o) for o in fake.find(plural, namespace, labels) if field_matches(fields, o)]
                    cursor = fake.rv
                else:
                    initial, cursor = [], int(since)
            self._start_chunked()
            if expired:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({fake.compacted_rv})")
                self._chunk({"type": "ERROR", "object": gone.status()})
                return self._end_chunked()
            for kind, obj in initial:
                self._chunk({"type": kind, "object": obj})
            deadline = time.monotonic() + timeout
            while True:
                with fake.cond:
                    fresh = [h for h in fake.history if h[0] > cursor and h[1] == plural]
                    remaining = deadline - time.monotonic()
                    if not fresh and generation == fake.watch_generation and remaining > 0:
                        fake.cond.wait(min(remaining, 1.0))
                        continue
                    dropped = generation != fake.watch_generation
                if dropped:
                    raise Dropped
                for rv, _, kind, obj in fresh:
                    cursor = rv
                    in_scope = namespace is None or obj["metadata"].get("namespace") == namespace
                    if in_scope and selector_matches(labels, _labels(obj)) and field_matches(fields, obj):
                        self._chunk({"type": kind, "object": obj})
                if remaining <= 0:
                    if query.get("allowWatchBookmarks") == "true":
                        self._chunk(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": _resource(plural)[0],
                                    "apiVersion": _resource(plural)[1],
                                    "metadata": {"resourceVersion": str(cursor)},
                                },
                            }
                        )
                    return self._end_chunked()

        def _log(self, namespace, name, query) -> None:
            pod = fake.get("pods", namespace, name)
            statuses = pod["status"].get("containerStatuses") or []
            if not statuses or "waiting" in statuses[0].get("state", {}):
                raise ApiError(400, "BadRequest", f'container "workload" in pod "{name}" is waiting to start')
            if query.get("follow") != "true":
                lines = fake.logs.get((namespace, name), [])
                if query.get("tailLines"):  # the last N lines only, as the kubelet reads them
                    lines = lines[len(lines) - min(int(query["tailLines"]), len(lines)) :]
                return self._bytes(200, "".join(f"{line}\n" for line in lines).encode(), "text/plain")
            self._start_chunked("text/plain")
            sent = 0
            while True:
                with fake.cond:
                    lines = fake.logs.get((namespace, name), [])
                    current = fake.objects["pods"].get((namespace, name))
                    ended = current is None or not any(  # until the container stops, not the pod's phase
                        "running" in c.get("state", {}) for c in current["status"].get("containerStatuses") or []
                    )
                    if sent == len(lines) and not ended:
                        fake.cond.wait(1.0)
                        continue
                    fresh, sent = lines[sent:], len(lines)
                if fresh:
                    self._raw_chunk("".join(f"{line}\n" for line in fresh).encode())
                if ended and sent == len(fake.logs.get((namespace, name), [])):
                    return self._end_chunked()

        def _exec(self, namespace, name, multi) -> None:
            pod = fake.get("pods", namespace, name)
            if pod["status"]["phase"] != "Running":
                raise ApiError(400, "BadRequest", "cannot exec into a container in a completed pod")
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1((key + WEBSOCKET_GUID).encode()).digest()).decode()  # noqa: S324
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
            self.end_headers()
            stdout, stderr, code = fake.exec_tar(pod, multi.get("command", []))
            for start in range(0, len(stdout), 64 * 1024):
                self._frame(b"\x01" + stdout[start : start + 64 * 1024])
            if stderr:
                self._frame(b"\x02" + stderr.encode())
            status = (
                {"metadata": {}, "status": "Success"}
                if code == 0
                else {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: {code}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            )
            self._frame(b"\x03" + json.dumps(status).encode())
            self._frame(b"\x03\xe8", opcode=0x8)  # close, normal
            self.close_connection = True

        def _frame(self, payload: bytes, opcode: int = 0x2) -> None:
            header = bytes([0x80 | opcode])
            size = len(payload)
            if size < 126:
                header += bytes([size])
            elif size < 65536:
                header += bytes([126]) + size.to_bytes(2, "big")
            else:
                header += bytes([127]) + size.to_bytes(8, "big")
            self.wfile.write(header + payload)
            self.wfile.flush()

        def _json(self, code: int, obj: dict) -> None:
            self._bytes(code, json.dumps(obj).encode(), "application/json")

        def _bytes(self, code: int, data: bytes, content_type: str) -> None:
            self.send_response(code, HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _start_chunked(self, content_type: str = "application/json") -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

        def _chunk(self, event: dict) -> None:
            self._raw_chunk(json.dumps(event).encode() + b"\n")

        def _raw_chunk(self, data: bytes) -> None:
            try:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            except OSError:
                raise Dropped from None

        def _end_chunked(self) -> None:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                raise Dropped from None

    return Handler
