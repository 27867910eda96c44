"""Kubernetes manifests as plain dicts: valid against the official OpenAPI schema (strict: no
unknown field), hardened to the restricted Pod Security profile whatever the spec says, and
status read back into Observed."""

from __future__ import annotations

import io
import json
import tarfile

import kubernetes_validate
import pytest

from portal.runtime import k8s_manifests as m
from portal.runtime.base import FileDrop, Mount, State, WorkloadSpec

# The oldest Kubernetes the backend supports and the newest schema the validator ships.
SCHEMA_VERSIONS = ("1.29", kubernetes_validate.latest_version())
NS = "dockyard-demo"
OPTIONS = m.ClusterOptions(
    scope_labels={"dockyard.installation": "default"},
    storage_class="fast",
    shared_storage_class="nfs",
    kueue_queues={"demo": "demo-queue"},
)


def spec(**fields) -> WorkloadSpec:
    fields = {"kind": "workspace", "owner": "alice", "team": "demo", **fields}
    return WorkloadSpec(
        uid="0f5c2a9e-1111-4222-8333-444455556666", image="registry.example/ds/lab@sha256:" + "a" * 64, **fields
    )


def code_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        folder = tarfile.TarInfo("code")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        data = b"print('hi')\n"
        info = tarfile.TarInfo("code/train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


GPU_SPEC = spec(
    kind="job",
    gpus=2,
    gpu_model="NVIDIA-A100-SXM4-80GB",
    nodes=3,
    timeout_s=3600,
    mounts=(Mount("output", "/output"),),
    files=(FileDrop("/", code_archive()),),
    env={"A": "1"},
    command=("torchrun", "train.py"),
    working_dir="/code",
)
WORKSPACE = spec(mounts=(Mount("home", "/home/jovyan"),), ports=(8888,), env={"JUPYTER_TOKEN": "t"})


def every_manifest() -> dict[str, dict]:
    files = m.file_parts(GPU_SPEC)
    claim = m.claim_manifest(GPU_SPEC, GPU_SPEC.mounts[0], NS, OPTIONS)
    claim["metadata"]["namespace"] = NS
    return {
        "namespace": m.namespace_manifest("demo", OPTIONS),
        "quota": m.resource_quota_manifest(NS, {"cpus": 8, "memory_gib": 1.5, "gpus": 4, "pods": 10}),
        "empty quota": m.resource_quota_manifest(NS, {}),
        "network policy": m.network_policy_manifest(NS, OPTIONS),
        "network policy without extra blocks": m.network_policy_manifest(NS, m.ClusterOptions(blocked_egress=())),
        "network policy of a routed portal": m.network_policy_manifest(
            NS,
            m.ClusterOptions(
                cluster_cidrs=("198.18.0.0/15", "10.96.0.0/12", "fd00:10:96::/112"),
                egress_allow=("10.20.30.0/24",),
                portal_cidrs=("192.0.2.0/24",),
            ),
        ),
        "peers policy": m.peers_network_policy(GPU_SPEC, NS),
        "home claim": m.claim_manifest(WORKSPACE, WORKSPACE.mounts[0], NS, OPTIONS),
        "output claim": claim,
        "file secret": m.file_secrets(GPU_SPEC, NS, files)[0],
        "workspace pod": m.workspace_pod(WORKSPACE, NS, OPTIONS),
        "workspace service": m.workspace_service(WORKSPACE, NS),
        "gpu job": m.job_manifest(GPU_SPEC, NS, OPTIONS, files),
        "plain job": m.job_manifest(spec(kind="job", team="other"), NS, OPTIONS),
        "headless service": m.headless_service(GPU_SPEC, NS, OPTIONS),
        "fetch pod": m.fetch_pod(
            uid=GPU_SPEC.uid,
            namespace=NS,
            image="img:1",
            user="1000:100",
            claims=[claim],
            owner={"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"},
            options=OPTIONS,
            lifetime_s=600,
        ),
    }


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("name", list(every_manifest()))
def test_every_manifest_is_valid_against_the_official_schema(name, version):
    manifest = every_manifest()[name]

    kubernetes_validate.validate(manifest, version, strict=True)


def pods_of(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"] if manifest["kind"] == "Job" else manifest["spec"]


@pytest.mark.parametrize("name", ["workspace pod", "gpu job", "plain job", "fetch pod"])
def test_every_pod_meets_the_restricted_pod_security_profile(name):
    pod = pods_of(every_manifest()[name])

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (1000, 100)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & set(pod)
    assert all("hostPath" not in volume for volume in pod["volumes"])
    for container in [*pod["containers"], *pod.get("initContainers", [])]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["privileged"] is False
        assert security["runAsNonRoot"] is True
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_gpus_are_limits_a_node_selector_on_the_model_and_tolerations():
    pod = pods_of(m.job_manifest(GPU_SPEC, NS, OPTIONS))

    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1000m", "memory": "1024Mi", "nvidia.com/gpu": "2"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    plain = m.workspace_pod(WORKSPACE, NS, OPTIONS)["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain
    assert "nvidia.com/gpu" not in plain["containers"][0]["resources"]["limits"]


def test_the_command_replaces_the_images_arguments_not_its_entrypoint():
    container = pods_of(m.job_manifest(GPU_SPEC, NS, OPTIONS))["containers"][0]

    assert container["args"] == ["torchrun", "train.py"]
    assert "command" not in container
    assert container["workingDir"] == "/code"


def test_a_multi_node_job_is_indexed_with_rendezvous_env():
    job = m.job_manifest(GPU_SPEC, NS, OPTIONS)
    name = m.object_name(GPU_SPEC.uid)

    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 3, 3)
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3600 + OPTIONS.job_deadline_slack_s
    assert job["spec"]["template"]["spec"]["subdomain"] == name
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pods_of(job)["containers"][0]["env"]}
    assert env["MASTER_ADDR"] == f"{name}-0.{name}.{NS}.svc.cluster.local"
    assert (env["MASTER_PORT"], env["WORLD_SIZE"], env["A"]) == ("29500", "3", "1")
    assert (
        env["RANK"]
        == env["NODE_RANK"]
        == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    )
    assert m.headless_service(GPU_SPEC, NS, OPTIONS)["spec"]["clusterIP"] == "None"
    claim = m.claim_manifest(GPU_SPEC, GPU_SPEC.mounts[0], NS, OPTIONS)
    assert (claim["spec"]["accessModes"], claim["spec"]["storageClassName"]) == (["ReadWriteMany"], "nfs")


def test_a_single_node_job_is_not_indexed_and_a_team_without_a_queue_is_not_suspended():
    job = m.job_manifest(spec(kind="job", team="other"), NS, OPTIONS)

    assert (job["spec"]["completionMode"], job["spec"]["completions"]) == ("NonIndexed", 1)
    assert "suspend" not in job["spec"] and "activeDeadlineSeconds" not in job["spec"]
    assert "kueue.x-k8s.io/queue-name" not in job["metadata"]["labels"]
    assert "subdomain" not in job["spec"]["template"]["spec"]


def test_a_teams_jobs_go_to_its_kueue_queue_suspended():
    job = m.job_manifest(GPU_SPEC, NS, OPTIONS)

    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "demo-queue"
    default = m.ClusterOptions(kueue_default_queue="everyone")
    assert (
        m.job_manifest(spec(kind="job", team="x"), NS, default)["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
        == "everyone"
    )
    assert "kueue.x-k8s.io/queue-name" not in m.workspace_pod(WORKSPACE, NS, default)["metadata"]["labels"]


def test_labels_are_valid_whatever_the_owner_is_called_and_the_exact_ones_are_kept():
    odd = spec(owner="bob+ml@example.com", labels={"dockyard.installation": "default"})
    pod = m.workspace_pod(odd, NS, OPTIONS)

    assert pod["metadata"]["labels"]["dockyard.owner"] == "bob-ml-example.com"
    assert json.loads(pod["metadata"]["annotations"][m.ANNOTATION_LABELS])["dockyard.owner"] == "bob+ml@example.com"
    assert m.namespace_name("Team_With.Odd Name") == "dockyard-team-with-odd-name"
    assert len(m.namespace_name("x" * 100)) == 63


def test_files_become_secret_parts_and_read_only_mounts():
    big = spec(kind="job", files=(FileDrop("/", code_archive()), FileDrop("/etc/app", code_archive())))
    files = m.file_parts(big)
    pod = pods_of(m.job_manifest(big, NS, OPTIONS, files))

    assert [(drop, entry, path) for drop, entry, path in files.mounts] == [
        (0, "code", "/code"),
        (1, "code", "/etc/app/code"),
    ]
    mounts = [v for v in pod["containers"][0]["volumeMounts"] if v["name"] == m.FILES_VOLUME]
    assert mounts == [
        {"name": m.FILES_VOLUME, "mountPath": "/code", "subPath": "0/code", "readOnly": True},
        {"name": m.FILES_VOLUME, "mountPath": "/etc/app/code", "subPath": "1/code", "readOnly": True},
    ]
    assert len(m.file_secrets(big, NS, files)) == len(files.parts) == 2


def test_quota_mirrors_the_limits_given():
    hard = m.resource_quota_manifest(NS, {"cpus": 2.5, "memory_gib": 1.5, "pods": 3})["spec"]["hard"]

    assert hard == {
        "requests.cpu": "2500m",
        "limits.cpu": "2500m",
        "requests.memory": "1536Mi",
        "limits.memory": "1536Mi",
        "pods": "3",
    }


def test_network_policy_admits_only_the_portal_and_lets_out_dns_and_the_internet_only():
    policy = m.network_policy_manifest(NS, m.ClusterOptions(portal_namespace="platform"))["spec"]

    assert policy["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "platform"}},
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "dockyard"}},
                }
            ]
        }
    ]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    dns, internet = policy["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    v4, v6 = (peer["ipBlock"] for peer in internet["to"])
    assert "ports" not in internet
    assert v4 == {
        "cidr": "0.0.0.0/0",
        "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
                   "169.254.169.254/32"],
    }  # fmt: skip
    assert v6 == {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}
    assert not any(
        "namespaceSelector" in peer or "podSelector" in peer for rule in policy["egress"] for peer in rule.get("to", [])
    )


def test_network_policy_blocks_the_clusters_ranges_and_lets_in_a_routed_portal():
    options = m.ClusterOptions(
        cluster_cidrs=("198.18.0.0/15", "10.96.0.0/12", "fd00:10:96::/112"),
        egress_allow=("10.20.30.0/24",),
        portal_cidrs=("192.0.2.0/24",),
    )

    policy = m.network_policy_manifest(NS, options)["spec"]

    v4, v6 = (peer["ipBlock"] for peer in policy["egress"][1]["to"])
    assert {"198.18.0.0/15", "10.96.0.0/12"} <= set(v4["except"])
    assert "fd00:10:96::/112" in v6["except"]
    assert policy["egress"][2] == {"to": [{"ipBlock": {"cidr": "10.20.30.0/24"}}]}
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in policy["ingress"][0]["from"]


def test_the_peers_of_a_multi_node_job_may_reach_each_other_both_ways():
    policy = m.peers_network_policy(GPU_SPEC, NS)["spec"]
    own = {"matchLabels": {"dockyard.uid": GPU_SPEC.uid}}

    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"from": [{"podSelector": own}]}]
    assert policy["egress"] == [{"to": [{"podSelector": own}]}]


# --- Status -------------------------------------------------------------------------------------


def pod(phase: str, *, state: dict | None = None, reason: str = "", conditions=(), node: str = "") -> dict:
    return {
        "metadata": {"name": "p", "namespace": NS, "labels": {"dockyard.uid": "u", "dockyard.kind": "job"}},
        "spec": {"nodeName": node, "containers": [{"name": "workload", "ports": [{"containerPort": 8888}]}]},
        "status": {
            "phase": phase,
            **({"reason": reason} if reason else {}),
            "conditions": list(conditions),
            "containerStatuses": [{"name": "workload", "state": state}] if state else [],
        },
    }


def test_pod_states_and_reasons_are_read_like_dockers():
    running = m.observe_pod(
        pod("Running", state={"running": {"startedAt": "2025-01-01T00:00:00Z"}}, node="n1"),
        endpoints_host="svc.ns.svc.cluster.local",
    )
    oom = m.observe_pod(pod("Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}}))
    done = m.observe_pod(pod("Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}}))
    evicted = m.observe_pod(pod("Failed", reason="Evicted"))
    crashed = m.observe_pod(
        pod("Pending", state={"waiting": {"reason": "CreateContainerConfigError", "message": "no"}})
    )

    assert (running.state, running.node, running.endpoints[8888].host) == (
        State.RUNNING,
        "n1",
        "svc.ns.svc.cluster.local",
    )
    assert (oom.state, oom.exit_code, oom.reason) == (State.EXITED, 137, "OOMKilled")
    assert (done.exit_code, done.reason) == (0, "Completed")
    assert (evicted.state, evicted.exit_code, evicted.reason) == (State.EXITED, None, "Evicted")
    assert (crashed.state, crashed.reason, crashed.message) == (State.CREATED, "CreateContainerConfigError", "no")


def test_a_pod_failed_by_its_deadline_runs_until_its_container_stops():
    stopping = pod("Failed", reason="DeadlineExceeded", state={"running": {"startedAt": "2025-01-01T00:00:00Z"}})
    stopped = pod("Failed", reason="DeadlineExceeded", state={"terminated": {"exitCode": 143, "reason": "Error"}})

    assert (m.observe_pod(stopping).state, m.container_running(stopping)) == (State.RUNNING, True)
    assert (m.observe_pod(stopped).state, m.observe_pod(stopped).exit_code) == (State.EXITED, 143)
    assert m.container_running(stopped) is False


def test_a_running_pod_reports_its_own_address():
    running = pod("Running", state={"running": {}})
    running["status"]["podIP"] = "10.244.1.7"

    observed = m.observe_pod(running, endpoints_host="10.244.1.7")

    assert observed.pod_ip == "10.244.1.7"
    assert observed.endpoints[8888] == m.Endpoint(host="10.244.1.7", port=8888)


def test_the_latest_refusal_of_a_jobs_pods_is_its_message():
    events = [
        {"reason": "FailedCreate", "message": "Error creating: old", "lastTimestamp": "2025-01-01T00:00:00Z"},
        {"reason": "SuccessfulCreate", "message": "Created pod", "lastTimestamp": "2025-01-01T00:00:05Z"},
        {
            "reason": "FailedCreate",
            "message": "Error creating: exceeded quota",
            "lastTimestamp": "2025-01-01T00:00:09Z",
        },
    ]

    assert m.refusal_message(events) == "Error creating: exceeded quota"
    assert m.refusal_message(events[1:2]) == ""


def test_a_job_that_ran_past_its_deadline_says_so():
    job = {
        "metadata": {"name": "j", "labels": {"dockyard.uid": "u"}},
        "spec": {"completions": 1},
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        },
    }

    observed = m.observe_job(job, [])

    assert (observed.state, observed.reason, observed.exit_code) == (State.EXITED, "DeadlineExceeded", None)
