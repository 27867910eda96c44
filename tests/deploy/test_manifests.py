"""deploy/kubernetes/: every object valid against the Kubernetes OpenAPI schema, RBAC granting
exactly the calls the backend makes (no wildcards), every change confined to team namespaces by
the admission policy, and every pod restricted (the profile the dockyard namespace enforces)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.processes import REPO

MANIFESTS = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes these manifests are meant for, and the newest the validator knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
PODS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec")}
COMPONENTS = {"web", "worker", "beat"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


def _documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _objects() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(MANIFESTS.glob("*.yaml")) for doc in _documents(path)]


OBJECTS = [(name, doc) for name, doc in _objects() if doc["kind"] != "Kustomization"]


def _pod_spec(obj: dict) -> dict:
    spec = obj
    for key in PODS[obj["kind"]]:
        spec = spec[key]
    return spec


def _containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def _pods() -> list[tuple[str, dict]]:
    return [(obj["metadata"]["name"], _pod_spec(obj)) for _, obj in OBJECTS if obj["kind"] in PODS]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("file", "obj"), OBJECTS, ids=[f"{f}:{o['kind']}/{o['metadata']['name']}" for f, o in OBJECTS])
def test_every_object_is_valid_against_the_kubernetes_schema(file, obj, version):
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{file}: {'.'.join(map(str, error.path))}: {error.message}")


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = _documents(MANIFESTS / "kustomization.yaml")[0]
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    for _, obj in OBJECTS:
        expected = None if obj["kind"] in CLUSTER_SCOPED else "dockyard"
        assert obj["metadata"].get("namespace") == expected, (obj["kind"], obj["metadata"]["name"])


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed (kustomize is built into it)")
def test_kustomize_builds_it_with_the_registry_image():
    result = subprocess.run(
        ["kubectl", "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert len(rendered) == len([o for f, o in OBJECTS if f != "secret.example.yaml"])
    images = {c["image"] for obj in rendered if obj["kind"] in PODS for c in _containers(_pod_spec(obj))}
    assert images == {"registry.example.com/dockyard/portal:0.1.0"}


def _role() -> dict:
    roles = [obj for _, obj in OBJECTS if obj["kind"] in ("Role", "ClusterRole")]
    assert [role["metadata"]["name"] for role in roles] == ["dockyard"]
    return roles[0]


def _granted() -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in _role()["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_rbac_names_every_verb_and_resource():
    for rule in _role()["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not any("*" in name for name in rule.get("resourceNames", []))
    # Never RBAC objects (no way to grant itself more), never reading Secrets.
    assert not any(group == "rbac.authorization.k8s.io" for group, _, _ in _granted())
    assert not any(verb in ("get", "list", "watch") for _, resource, verb in _granted() if resource == "secrets")


# The client's method names say what each call needs: `list_job_for_all_namespaces` is jobs/list.
CALL = re.compile(
    r"\b(core|batch|networking)\.(connect_get|delete_collection|create|read|list|patch|delete|replace)_"
    r"(?:namespaced_)?([a-z_]+?)(?:_for_all_namespaces)?\b"
)
GROUPS = {"core": "", "batch": "batch", "networking": "networking.k8s.io"}
VERBS = {"connect_get": "get", "delete_collection": "deletecollection", "read": "get", "replace": "update"}
SUBRESOURCES = {"pod_log": "pods/log", "pod_exec": "pods/exec"}
# Not visible as a method name: watch_workloads() streams the pod and Job listings, and newer
# API servers authorise exec's WebSocket as `create` on top of `get`.
BEYOND_NAMES = {("", "pods", "watch"), ("batch", "jobs", "watch"), ("", "pods/exec", "create")}


def _plural(name: str) -> str:
    if name in SUBRESOURCES:
        return SUBRESOURCES[name]
    word = name.replace("_", "")
    return word[:-1] + "ies" if word.endswith("y") else word + "s"


def _backend_calls() -> set[tuple[str, str, str]]:
    source = (REPO / "portal" / "runtime" / "kubernetes.py").read_text()
    return {(GROUPS[api], _plural(name), VERBS.get(verb, verb)) for api, verb, name in CALL.findall(source)}


def test_rbac_grants_exactly_what_the_backend_calls():
    needed = _backend_calls() | BEYOND_NAMES
    assert _backend_calls(), "no Kubernetes API calls found in portal/runtime/kubernetes.py"
    assert needed - _granted() == set(), "calls the ClusterRole does not allow"
    assert _granted() - needed == set(), "grants no call needs"


def test_every_change_dockyard_may_make_is_confined_to_team_namespaces():
    policy = next(obj for _, obj in OBJECTS if obj["kind"] == "ValidatingAdmissionPolicy")
    confined = {
        (group, resource, operation)
        for rule in policy["spec"]["matchConstraints"]["resourceRules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for operation in rule["operations"]
    }
    operations = {"create": "CREATE", "update": "UPDATE", "patch": "UPDATE", "delete": "DELETE",
                  "deletecollection": "DELETE"}  # fmt: skip
    for group, resource, verb in _granted():
        if resource == "pods/exec":
            assert (group, resource, "CONNECT") in confined
        elif verb in operations:
            assert (group, resource, operations[verb]) in confined, (group, resource, verb)
    binding = next(obj for _, obj in OBJECTS if obj["kind"] == "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    subject = _documents(MANIFESTS / "rbac.yaml")[1]["subjects"][0]
    account = f"system:serviceaccount:{subject['namespace']}:{subject['name']}"
    assert account in policy["spec"]["matchConditions"][0]["expression"]


@pytest.mark.parametrize(("name", "pod"), _pods(), ids=[name for name, _ in _pods()])
def test_every_pod_is_restricted(name, pod):
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in _containers(pod):
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, container["name"]
        assert security["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert security["readOnlyRootFilesystem"] is True, container["name"]
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_processes_are_labelled_for_the_workload_network_policies():
    deployments = [obj for _, obj in OBJECTS if obj["kind"] == "Deployment"]
    components = set()
    for deployment in deployments:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dockyard"
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        components.add(labels["app.kubernetes.io/component"])
    assert components == COMPONENTS


def test_only_web_and_worker_hold_an_api_token():
    for name, pod in _pods():
        if name in ("dockyard-web", "dockyard-worker"):
            assert pod["serviceAccountName"] == "dockyard"
        else:
            assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod


def test_ingress_serves_the_portal_and_every_notebook_host():
    ingress = next(obj for _, obj in OBJECTS if obj["kind"] == "Ingress")
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts == {"dockyard.example.com", "*.nb.example.com"}
    assert {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]} == hosts


@pytest.mark.parametrize("component", ["web", "worker"])
def test_prometheus_scrapes_a_port_the_pod_serves_metrics_on(component):
    deployment = next(o for _, o in OBJECTS if o["kind"] == "Deployment" and o["metadata"]["name"].endswith(component))
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = _pod_spec(deployment)["containers"][0]
    port = int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert port in [p["containerPort"] for p in container["ports"]]
    if component == "worker":  # the worker serves them only when told which port
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert int(env["DOCKYARD_WORKER_METRICS_PORT"]) == port
