"""The Kubernetes backend: the real client against the fake API server (and a real cluster
when DOCKYARD_TEST_KUBECONFIG is set)."""

from __future__ import annotations

import io
import logging
import tarfile
import threading

import pytest
from kubernetes.utils.quantity import parse_quantity

from portal.runtime import k8s_manifests as m
from portal.runtime.base import Endpoint, FileDrop, Mount, RuntimeError_, State
from tests.processes import wait_for
from tests.runtime.k8s_harness import (
    REAL_KUBECONFIG,
    FakeDriver,
    RealDriver,
    clean_real_cluster,
    cluster_params,
    make_backend,
    spec_for,
    start_fake,
)

TEAM_LIMITS = {"cpus": 8, "memory_gib": 32, "gpus": 2, "pods": 20}


@pytest.fixture(params=cluster_params())
def cluster(request, tmp_path, settings):
    """(backend, driver) on the fake API server, or on the real cluster when one is given."""
    settings.DOCKYARD_K8S_WATCH = False
    settings.DOCKYARD_K8S_STOP_WAIT_S = 5
    if request.param == "real":
        backend = make_backend(REAL_KUBECONFIG)
        yield backend, RealDriver()
        clean_real_cluster(backend)
        backend.close()
        return
    fake, kubeconfig = start_fake(tmp_path)
    backend = make_backend(kubeconfig)
    yield backend, FakeDriver(fake)
    backend.close()
    fake.close()


@pytest.fixture
def fake_cluster(tmp_path, settings):
    """The fake alone, for what only it can do (cut watches off, compact history, fake nodes)."""
    settings.DOCKYARD_K8S_WATCH = False
    fake, kubeconfig = start_fake(tmp_path)
    backend = make_backend(kubeconfig)
    yield backend, fake
    backend.close()
    fake.close()


def until(backend, handle, driver, what, check):
    """The workload's Observed once `check` holds for it."""

    def look():
        observed = backend.inspect(handle)
        return observed if check(observed) else None

    return wait_for(look, timeout=driver.timeout, what=what)


def quantities(amounts: dict[str, str]) -> dict:
    """Amounts by value: a cluster writes them back in its canonical form (8 for 8000m)."""
    return {key: parse_quantity(value) for key, value in amounts.items()}


def read(backend, method, *args):
    """An object as the cluster holds it (JSON), read with the backend's own client."""
    return backend._call(
        getattr(backend.core if hasattr(backend.core, method) else backend.batch, method), *args, doing="test"
    )


# --- Namespaces, quotas, policies ---------------------------------------------------------------


def test_first_start_makes_the_team_namespace_with_quota_and_policy(cluster):
    backend, _ = cluster
    spec = spec_for(["sleep", "30"], team_limits=TEAM_LIMITS)

    backend.start(spec)

    namespace = read(backend, "read_namespace", "dockyard-demo")
    labels = namespace["metadata"]["labels"]
    assert labels["dockyard.managed"] == "true"
    assert labels["dockyard.test-run"] == spec.labels["dockyard.test-run"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    quota = read(backend, "read_namespaced_resource_quota", m.QUOTA_NAME, "dockyard-demo")
    assert quantities(quota["spec"]["hard"]) == quantities(
        {
            "requests.cpu": "8",
            "limits.cpu": "8",
            "requests.memory": "32Gi",
            "limits.memory": "32Gi",
            "requests.nvidia.com/gpu": "2",
            "pods": "20",
        }
    )
    policy = backend._call(
        backend.networking.read_namespaced_network_policy, m.POLICY_NAME, "dockyard-demo", doing="test"
    )
    assert policy["spec"]["podSelector"] == {"matchLabels": {"dockyard.managed": "true"}}
    [source] = policy["spec"]["ingress"][0]["from"]
    assert source["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "dockyard"}}
    assert source["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "dockyard"}}


def test_team_sync_changes_the_quota_and_a_missing_limit_is_none(cluster):
    backend, _ = cluster

    backend.team_sync("demo", TEAM_LIMITS)
    backend.team_sync("demo", {"gpus": 1})

    quota = read(backend, "read_namespaced_resource_quota", m.QUOTA_NAME, "dockyard-demo")
    assert quota["spec"]["hard"] == {"requests.nvidia.com/gpu": "1"}


def test_a_deleted_namespace_is_made_again_on_the_next_start(fake_cluster):
    backend, fake = fake_cluster
    backend.start(spec_for(["sleep", "30"]))
    fake.delete("namespaces", "", "dockyard-demo")
    for plural in ("pods", "persistentvolumeclaims", "resourcequotas", "networkpolicies"):
        for obj in fake.find(plural, "dockyard-demo"):
            fake.delete(plural, "dockyard-demo", obj["metadata"]["name"])

    handle = backend.start(spec_for(["sleep", "30"]))

    assert fake.get("namespaces", "", "dockyard-demo")
    assert fake.get("resourcequotas", "dockyard-demo", m.QUOTA_NAME)
    assert fake.get("pods", "dockyard-demo", handle.name)


# --- Workspaces ------------------------------------------------------------------------------


def test_workspace_is_a_hardened_pod_with_a_service_and_a_home_claim(cluster, settings):
    backend, driver = cluster
    settings.DOCKYARD_K8S_HOME_SIZE = "1Gi"
    spec = spec_for(
        ["sleep", "60"],
        kind="workspace",
        mounts=(Mount("home", "/home/jovyan"),),
        ports=(8888,),
        cpus=0.5,
        memory_mib=256,
    )

    handle = backend.start(spec)
    driver.runs(handle)
    observed = until(backend, handle, driver, "the workspace to run", lambda o: o.state == State.RUNNING)

    assert observed.endpoints == {8888: m.Endpoint(host=f"{handle.name}.dockyard-demo.svc.cluster.local", port=8888)}
    assert observed.node and observed.kind == "workspace" and observed.uid == spec.uid
    pod = read(backend, "read_namespaced_pod", handle.name, "dockyard-demo")
    container = pod["spec"]["containers"][0]
    assert quantities(container["resources"]["requests"]) == quantities({"cpu": "500m", "memory": "256Mi"})
    assert quantities(container["resources"]["limits"]) == quantities({"cpu": "0.5", "memory": "256Mi"})
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert (pod["spec"]["securityContext"]["runAsUser"], pod["spec"]["securityContext"]["runAsGroup"]) == (1000, 100)
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["metadata"]["labels"]["dockyard.owner"] == "alice"
    service = read(backend, "read_namespaced_service", handle.name, "dockyard-demo")
    assert service["spec"]["selector"] == {"dockyard.uid": spec.uid}
    assert service["spec"]["ports"][0]["port"] == 8888
    claim = read(backend, "read_namespaced_persistent_volume_claim", f"{handle.name}-home", "dockyard-demo")
    assert parse_quantity(claim["spec"]["resources"]["requests"]["storage"]) == parse_quantity("1024Mi")


def test_start_twice_makes_one_pod(cluster):
    backend, _ = cluster
    spec = spec_for(["sleep", "60"], kind="workspace", ports=(8888,))

    first = backend.start(spec)
    second = backend.start(spec)

    assert first == second
    pods = backend._call(
        backend.core.list_namespaced_pod, "dockyard-demo", label_selector=f"dockyard.uid={spec.uid}", doing="test"
    )["items"]
    assert len(pods) == 1


def test_stop_keeps_the_pod_and_its_log_and_remove_keeps_the_home_unless_asked(cluster):
    backend, driver = cluster
    spec = spec_for(["sh", "-c", "echo hello; sleep 60"], kind="workspace", mounts=(Mount("home", "/home/jovyan"),))
    handle = backend.start(spec)
    driver.runs(handle)
    driver.prints(handle, "hello")
    until(backend, handle, driver, "the workspace to run", lambda o: o.state == State.RUNNING)
    wait_for(lambda: list(backend.logs(handle)) == ["hello"], timeout=driver.timeout, what="the log")

    backend.stop(handle, grace_s=1)

    assert backend.inspect(handle).state == State.EXITED
    assert list(backend.logs(handle)) == ["hello"]
    backend.remove(handle)
    assert backend.inspect(handle).state == State.MISSING
    assert [c["metadata"]["name"] for c in backend._claims(spec.uid)] == [f"{handle.name}-home"]
    backend.remove(handle, keep_data=False)
    assert backend._claims(spec.uid) == []
    backend.stop(handle)  # already gone is fine
    backend.remove(handle)


def test_files_are_put_in_place_by_an_init_container_from_secret_parts(fake_cluster):
    backend, fake = fake_cluster
    archive = _tar({"code/train.py": b"print('hi')\n" * 200_000})  # about 2.4 MB: more than one part
    spec = spec_for(["python3", "/code/train.py"], kind="job", files=(FileDrop(path="/", archive=archive),))

    handle = backend.start(spec)

    job = fake.get("jobs", "dockyard-demo", handle.name)
    template = job["spec"]["template"]["spec"]
    [init] = template["initContainers"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert "tar -x" in init["command"][-1]
    code = next(v for v in template["containers"][0]["volumeMounts"] if v["mountPath"] == "/code")
    assert code == {"name": m.FILES_VOLUME, "mountPath": "/code", "subPath": "0/code", "readOnly": True}
    secrets = fake.find("secrets", "dockyard-demo", f"dockyard.uid={spec.uid}")
    assert len(secrets) >= 1 and all(s["immutable"] for s in secrets)
    assert all(s["metadata"]["ownerReferences"][0]["kind"] == "Job" for s in secrets)
    sources = next(v for v in template["volumes"] if v["name"] == m.PARTS_VOLUME)["projected"]["sources"]
    assert len(sources) == len(secrets)


def test_files_over_the_limit_are_refused_before_anything_is_made(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_FILES_MAX_MB = 1
    archive = _tar({"code/data.bin": bytes(range(256)) * 0} | {"code/noise.bin": __import__("os").urandom(1_500_000)})

    with pytest.raises(RuntimeError_) as raised:
        backend.start(spec_for(["true"], kind="job", files=(FileDrop(path="/", archive=archive),)))

    assert raised.value.permanent and raised.value.reason == "files_too_large"
    assert fake.find("jobs") == []


def test_a_local_image_id_is_refused_clearly(cluster):
    backend, _ = cluster
    spec = spec_for(["true"])
    spec = type(spec)(**{**spec.__dict__, "image": "sha256:" + "0" * 64})

    with pytest.raises(RuntimeError_) as raised:
        backend.start(spec)

    assert raised.value.permanent and raised.value.reason == "image_missing"
    assert backend.ensure_image("registry.example/team/image@sha256:" + "1" * 64).digest.endswith("1" * 64)


# --- Status --------------------------------------------------------------------------------------


def test_a_process_over_its_memory_limit_is_reported_oomkilled(cluster):
    backend, driver = cluster
    handle = backend.start(spec_for(["python3", "-c", "b = bytearray(400 * 1024 * 1024)"], memory_mib=64))

    driver.ooms(handle)
    observed = until(backend, handle, driver, "the OOM kill", lambda o: o.state == State.EXITED)

    assert observed.reason == "OOMKilled"
    assert observed.exit_code != 0


def test_an_unschedulable_pod_reports_the_schedulers_message(cluster):
    backend, driver = cluster
    handle = backend.start(spec_for(["true"], gpus=1, gpu_model="NVIDIA-NOTHING-LIKE-IT"))

    driver.unschedulable(handle, "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")
    observed = until(backend, handle, driver, "the scheduler's verdict", lambda o: o.reason == "Unschedulable")

    assert observed.state == State.CREATED
    assert "nodes are available" in observed.message


def test_an_image_that_cannot_be_pulled_reports_why(cluster):
    backend, driver = cluster
    spec = spec_for(["true"])
    spec = type(spec)(**{**spec.__dict__, "image": "registry.invalid/nothing/here:1"})
    handle = backend.start(spec)

    driver.pull_fails(handle, 'Back-off pulling image "registry.invalid/nothing/here:1"')
    observed = until(
        backend, handle, driver, "the pull failure", lambda o: o.reason in ("ImagePullBackOff", "ErrImagePull")
    )

    assert observed.state == State.CREATED
    assert "registry.invalid/nothing/here" in observed.message


def test_a_pending_pod_shows_the_image_pull_from_its_events(fake_cluster):
    backend, fake = fake_cluster
    handle = backend.start(spec_for(["true"]))
    [pod] = fake.pods_of("dockyard-demo", handle.uid)
    fake.event("dockyard-demo", pod["metadata"]["name"], "Scheduled", "Successfully assigned to node-a")
    fake.event("dockyard-demo", pod["metadata"]["name"], "Pulling", 'Pulling image "big/image:1"')

    observed = backend.inspect(handle)

    assert (observed.state, observed.message) == (State.CREATED, 'Pulling image "big/image:1"')


def test_failed_command_reports_its_exit_code(cluster):
    backend, driver = cluster
    handle = backend.start(spec_for(["sh", "-c", "exit 3"], kind="job"))

    driver.exits(handle, 3)
    observed = until(backend, handle, driver, "the job to fail", lambda o: o.state == State.EXITED)

    assert (observed.exit_code, observed.reason) == (3, "Error")


def test_logs_follow_yields_lines_as_they_are_printed(cluster):
    backend, driver = cluster
    handle = backend.start(spec_for(["sh", "-c", "echo first; sleep 3; echo second"]))
    driver.runs(handle)
    until(backend, handle, driver, "the pod to run", lambda o: o.state != State.CREATED)
    driver.prints(handle, "first")
    stream = backend.logs(handle, follow=True)

    assert next(stream) == "first"
    driver.prints(handle, "second")
    assert next(stream) == "second"
    driver.exits(handle, 0)
    assert list(stream) == []


# --- Jobs --------------------------------------------------------------------------------------


def test_a_job_is_a_batch_job_without_retries_and_with_a_deadline(cluster, settings):
    backend, driver = cluster
    settings.DOCKYARD_K8S_JOB_DEADLINE_SLACK_S = 60
    spec = spec_for(
        ["sh", "-c", "echo done > /output/result.txt"], kind="job", timeout_s=600, mounts=(Mount("output", "/output"),)
    )

    handle = backend.start(spec)
    driver.runs(handle)
    driver.exits(handle, 0)
    observed = until(backend, handle, driver, "the job to finish", lambda o: o.state == State.EXITED)

    assert (observed.exit_code, observed.reason) == (0, "Completed")
    job = read(backend, "read_namespaced_job", handle.name, "dockyard-demo")
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 660
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_a_multi_node_job_is_an_indexed_job_with_a_headless_service(cluster):
    backend, driver = cluster
    spec = spec_for(["sh", "-c", "echo $RANK"], kind="job", nodes=3, mounts=(Mount("output", "/output"),))

    handle = backend.start(spec)

    job = read(backend, "read_namespaced_job", handle.name, "dockyard-demo")
    assert (job["spec"]["completionMode"], job["spec"]["completions"], job["spec"]["parallelism"]) == ("Indexed", 3, 3)
    assert job["spec"]["template"]["spec"]["subdomain"] == handle.name
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == f"{handle.name}-0.{handle.name}.dockyard-demo.svc.cluster.local"
    assert env["MASTER_PORT"]["value"] == "29500"
    assert env["WORLD_SIZE"]["value"] == "3"
    index = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert (
        env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        == env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
        == index
    )
    service = read(backend, "read_namespaced_service", handle.name, "dockyard-demo")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    claim = read(backend, "read_namespaced_persistent_volume_claim", f"{handle.name}-output", "dockyard-demo")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    if not driver.real:
        assert len(driver.pods(handle)) == 3
        assert [p["spec"]["hostname"] for p in driver.pods(handle)] == [f"{handle.name}-{i}" for i in range(3)]


def test_a_multi_node_job_fails_as_a_whole_when_one_index_fails(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    handle = backend.start(spec_for(["train"], kind="job", nodes=3))
    driver.runs(handle)

    driver.exits(handle, 1, index=1)
    observed = backend.inspect(handle)

    assert (observed.state, observed.exit_code, observed.reason) == (State.EXITED, 1, "Error")
    assert [p["status"]["phase"] for p in driver.pods(handle)] == ["Failed"]  # the controller ended the others
    assert observed.node == "node-a"


def test_with_kueue_a_job_waits_suspended_until_admitted(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_KUEUE_QUEUES = {"demo": "demo-queue"}
    driver = FakeDriver(fake)
    spec = spec_for(["train"], kind="job")

    handle = backend.start(spec)

    job = fake.get("jobs", "dockyard-demo", handle.name)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "demo-queue"
    observed = backend.inspect(handle)
    assert (observed.state, observed.reason, observed.message) == (
        State.CREATED,
        "Suspended",
        "waiting for Kueue admission",
    )
    backend.stop(handle)  # nothing runs yet: nothing to stop
    assert backend.inspect(handle).state == State.CREATED

    driver.kueue_admits("demo", handle)
    driver.runs(handle)

    assert backend.inspect(handle).state == State.RUNNING


def test_stopping_a_running_job_keeps_its_pod_and_log(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    handle = backend.start(spec_for(["train"], kind="job"))
    driver.runs(handle)
    driver.prints(handle, "epoch 1")

    backend.stop(handle, grace_s=1)

    observed = backend.inspect(handle)
    assert observed.state == State.EXITED and observed.exit_code == 143
    assert list(backend.logs(handle)) == ["epoch 1"]


def test_files_of_an_ended_job_are_read_through_a_helper_pod(cluster):
    backend, driver = cluster
    spec = spec_for(
        ["sh", "-c", "mkdir -p /output/run && echo 0.5 > /output/run/loss.txt"],
        kind="job",
        mounts=(Mount("output", "/output"),),
    )
    handle = backend.start(spec)
    driver.runs(handle)
    driver.writes(handle, "demo", "output", "run/loss.txt", b"0.5\n")
    driver.exits(handle, 0)
    until(backend, handle, driver, "the job to finish", lambda o: o.state == State.EXITED)

    chunks = backend.archive_get(handle, "/output")

    assert _untar(b"".join(chunks)) == {"output/run/loss.txt": b"0.5\n"}
    helpers = backend._call(
        backend.core.list_namespaced_pod,
        "dockyard-demo",
        label_selector=f"{m.LABEL_HELPER_FOR}={spec.uid}",
        doing="test",
    )["items"]
    assert helpers == [] or all(p["metadata"].get("deletionTimestamp") for p in helpers)
    with pytest.raises(RuntimeError_) as raised:
        backend.archive_get(handle, "/elsewhere")
    assert raised.value.reason == "not_found"


# --- Everything Dockyard runs ----------------------------------------------------------------


def test_list_managed_sees_only_this_installations_workloads(cluster, settings):
    backend, _ = cluster
    ours = backend.start(spec_for(["sleep", "60"]))
    job = backend.start(spec_for(["sleep", "60"], kind="job"))

    everything = {o.uid: o for o in backend.list_managed()}
    jobs = {o.uid for o in backend.list_managed(kind="job")}
    settings.DOCKYARD_WORKLOAD_LABELS = {**settings.DOCKYARD_WORKLOAD_LABELS, "dockyard.installation": "elsewhere"}
    elsewhere = {o.uid for o in backend.list_managed()}

    assert {ours.uid, job.uid} <= set(everything)
    assert everything[job.uid].kind == "job"
    assert job.uid in jobs and ours.uid not in jobs
    assert ours.uid not in elsewhere and job.uid not in elsewhere


def test_capacity_groups_gpus_by_the_nodes_product_label(fake_cluster):
    backend, fake = fake_cluster
    fake.add_node("cpu-1", cpu="3800m", memory="16Gi")
    fake.add_node("a100-1", cpu="64", memory="512Gi", gpus=2, model="NVIDIA-A100-SXM4-80GB")
    fake.add_node("l4-1", cpu="16", memory="64Gi", gpus=1, model="NVIDIA-L4", ready=False)

    nodes = {node.name: node for node in backend.capacity()}

    assert (nodes["cpu-1"].cpus, nodes["cpu-1"].memory_mib, nodes["cpu-1"].gpus) == (3.8, 16384, ())
    assert [(g.uuid, g.model, g.healthy) for g in nodes["a100-1"].gpus] == [
        ("k8s:a100-1:0", "NVIDIA-A100-SXM4-80GB", True),
        ("k8s:a100-1:1", "NVIDIA-A100-SXM4-80GB", True),
    ]
    assert [(g.uuid, g.model, g.healthy) for g in nodes["l4-1"].gpus] == [("k8s:l4-1:0", "NVIDIA-L4", False)]
    assert backend.engine_started_at() is None


# --- Watch -------------------------------------------------------------------------------------


def test_watch_keeps_the_index_through_a_dropped_connection_and_a_410(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_WATCH_TIMEOUT_S = 30
    stop = threading.Event()
    events = backend.watch_workloads("pods", stop=stop)
    first = backend.start(spec_for(["sleep", "60"]))

    assert next(events)[0] == "RELISTED"
    lists = fake.count("GET", "/api/v1/pods")
    second = backend.start(spec_for(["sleep", "60"]))
    assert _next_change(events)[1]["metadata"]["labels"]["dockyard.uid"] == second.uid

    fake.drop_watches()  # the connection drops: resume from the last version, no new list
    assert next(events)[0] == "DISCONNECTED"
    FakeDriver(fake).runs(second)
    kind, pod = _next_change(events)
    assert (kind, pod["status"]["phase"]) == ("MODIFIED", "Running")
    assert fake.count("GET", "/api/v1/pods") - lists == 2  # two watch requests, no list

    fake.compact()  # history gone: the next resume gets 410 and lists again
    fake.drop_watches()
    assert next(events)[0] == "DISCONNECTED"
    assert next(events)[0] == "EXPIRED"
    assert next(events)[0] == "RELISTED"
    third = backend.start(spec_for(["sleep", "60"]))
    assert _next_change(events)[1]["metadata"]["labels"]["dockyard.uid"] == third.uid

    fake.gone_next_watch = 1  # an API server may also answer the watch itself with 410
    fake.drop_watches()
    assert [next(events)[0] for _ in range(3)] == ["DISCONNECTED", "EXPIRED", "RELISTED"]
    _, pods = backend.index.snapshot()
    assert {p["metadata"]["labels"]["dockyard.uid"] for p in pods} == {first.uid, second.uid, third.uid}
    stop.set()


def test_list_managed_reads_the_watched_index_while_it_is_fresh(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_WATCH = True
    handle = backend.start(spec_for(["sleep", "60"]))
    wait_for(lambda: backend.list_managed() and backend.index.fresh(5), timeout=10, what="the index to fill")
    FakeDriver(fake).runs(handle)
    wait_for(lambda: backend.list_managed()[0].state == State.RUNNING, timeout=10, what="the watch to see it run")
    lists = fake.count("GET", "/api/v1/pods") + fake.count("GET", "/apis/batch/v1/jobs")

    for _ in range(5):
        [observed] = backend.list_managed()

    assert observed.uid == handle.uid and observed.state == State.RUNNING
    assert fake.count("GET", "/api/v1/pods") + fake.count("GET", "/apis/batch/v1/jobs") == lists


def _next_change(events):
    for kind, obj in events:
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            return kind, obj
    raise AssertionError("the watch ended")


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {member.name: tar.extractfile(member).read() for member in tar.getmembers() if member.isfile()}


def test_a_retry_is_not_confused_by_the_last_attempts_lingering_pods(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    spec = spec_for(["train"], kind="job")
    handle = backend.start(spec)
    driver.runs(handle)
    driver.exits(handle, 1)
    fake.delete("jobs", "dockyard-demo", handle.name, propagation="Orphan")  # its pods not yet collected

    assert backend.inspect(handle).state == State.MISSING
    backend.start(spec)

    observed = backend.inspect(handle)
    assert (observed.state, observed.exit_code) == (State.CREATED, None)


def test_a_start_while_the_last_pod_is_still_terminating_is_retried_later(fake_cluster):
    backend, fake = fake_cluster
    spec = spec_for(["sleep", "60"], kind="workspace")
    handle = backend.start(spec)
    fake.patch("pods", "dockyard-demo", handle.name, {"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}})

    with pytest.raises(RuntimeError_) as raised:
        backend.start(spec)

    assert raised.value.reason == "still_terminating" and not raised.value.permanent


def test_files_of_a_job_waiting_to_start_are_not_found_without_a_helper_pod(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_KUEUE_LOCAL_QUEUE = "everyone"
    handle = backend.start(spec_for(["train"], kind="job", mounts=(Mount("output", "/output"),)))

    with pytest.raises(RuntimeError_) as raised:
        backend.archive_get(handle, "/output/metrics.jsonl")

    assert raised.value.reason == "not_found"
    assert fake.find("pods", "dockyard-demo") == []


# --- What a real API server and its controllers do ---------------------------------------------


def test_the_api_server_writes_quantities_back_in_canonical_form(fake_cluster):
    backend, _ = fake_cluster

    backend.team_sync("demo", TEAM_LIMITS)

    hard = read(backend, "read_namespaced_resource_quota", m.QUOTA_NAME, "dockyard-demo")["spec"]["hard"]
    assert (hard["requests.cpu"], hard["limits.memory"]) == ("8", "32Gi")  # sent as 8000m and 32768Mi


def test_the_fetch_helper_of_an_ended_job_is_owned_by_the_job_not_collected_at_once(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    spec = spec_for(["train"], kind="job", mounts=(Mount("output", "/output"),))
    handle = backend.start(spec)
    driver.runs(handle)
    driver.writes(handle, "demo", "output", "metrics.jsonl", b"{}\n" * 30_000)  # more than one read ahead
    driver.exits(handle, 0)
    job = fake.get("jobs", "dockyard-demo", handle.name)

    chunks = backend.archive_get(handle, "/output")

    [helper] = fake.find("pods", "dockyard-demo", f"{m.LABEL_HELPER_FOR}={spec.uid}")
    [owner] = helper["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["apiVersion"], owner["uid"]) == ("Job", "batch/v1", job["metadata"]["uid"])
    assert _untar(b"".join(chunks)) == {"output/metrics.jsonl": b"{}\n" * 30_000}
    assert fake.find("pods", "dockyard-demo", f"{m.LABEL_HELPER_FOR}={spec.uid}") == []


def test_a_job_whose_pods_the_quota_refuses_says_so_as_its_waiting_reason(fake_cluster):
    backend, fake = fake_cluster
    handle = backend.start(spec_for(["train"], kind="job", cpus=2, team_limits={"cpus": 1}))

    observed = backend.inspect(handle)

    assert fake.find("pods", "dockyard-demo") == []
    assert (observed.state, observed.reason) == (State.CREATED, "FailedCreate")
    assert "exceeded quota: dockyard-team-quota" in observed.message
    assert "cpu=2" in observed.message and "cpu=1" in observed.message


@pytest.mark.parametrize("kind", ["workspace", "job"])
def test_stop_returns_once_the_container_has_stopped_not_when_the_pod_is_marked_failed(fake_cluster, kind):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    handle = backend.start(spec_for(["sh", "-c", "trap 'echo saved; exit' TERM; sleep 60"], kind=kind))
    driver.runs(handle)

    backend.stop(handle, grace_s=1)

    [pod] = driver.pods(handle)
    assert pod["status"]["phase"] == "Failed"
    assert "terminated" in pod["status"]["containerStatuses"][0]["state"]
    assert backend.inspect(handle).state == State.EXITED


def test_a_failed_pod_whose_container_still_runs_is_not_taken_as_exited(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    handle = backend.start(spec_for(["sleep", "60"], kind="workspace", ports=(8888,)))
    driver.runs(handle)
    fake._deadline_passed("dockyard-demo", handle.name)  # Failed now; the kubelet stops the container after a moment

    observed = backend.inspect(handle)

    assert driver.pods(handle)[0]["status"]["phase"] == "Failed"
    assert (observed.state, observed.endpoints) == (State.RUNNING, {})
    ended = until(backend, handle, driver, "the container to stop", lambda o: o.state == State.EXITED)
    assert (ended.exit_code, ended.reason) == (143, "Error")


def test_with_reach_by_pod_ip_the_endpoint_is_the_pods_address(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_REACH = "pod-ip"
    handle = backend.start(spec_for(["jupyter", "lab"], kind="workspace", ports=(8888,)))
    FakeDriver(fake).runs(handle)

    observed = backend.inspect(handle)

    address = fake.get("pods", "dockyard-demo", handle.name)["status"]["podIP"]
    assert observed.state == State.RUNNING and observed.pod_ip == address
    assert observed.endpoints == {8888: Endpoint(host=address, port=8888)}
    assert observed.reason == ""


def test_a_service_name_the_portal_cannot_resolve_is_named(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_REACH = "service"  # the default; this portal is outside the cluster
    handle = backend.start(spec_for(["jupyter", "lab"], kind="workspace", ports=(8888,)))
    FakeDriver(fake).runs(handle)

    observed = backend.inspect(handle)

    host = f"{handle.name}.dockyard-demo.svc.cluster.local"
    assert observed.state == State.RUNNING and observed.endpoints[8888].host == host
    assert observed.reason == "Unresolvable"
    assert observed.message.startswith(f"cannot resolve {host}")
    assert observed.pod_ip == fake.get("pods", "dockyard-demo", handle.name)["status"]["podIP"]


def test_a_service_name_that_resolves_gives_no_reason(fake_cluster):
    backend, fake = fake_cluster
    fake.dns = True  # a portal inside a cluster with DNS
    handle = backend.start(spec_for(["jupyter", "lab"], kind="workspace", ports=(8888,)))
    FakeDriver(fake).runs(handle)

    observed = backend.inspect(handle)

    assert observed.state == State.RUNNING and observed.reason == ""


def test_remove_without_data_returns_once_the_claims_are_gone(fake_cluster):
    backend, fake = fake_cluster
    spec = spec_for(["sleep", "60"], kind="workspace", mounts=(Mount("home", "/home/jovyan"),))
    handle = backend.start(spec)
    [claim] = fake.find("persistentvolumeclaims", "dockyard-demo", f"dockyard.uid={spec.uid}")
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]

    backend.remove(handle, keep_data=False)

    assert fake.find("persistentvolumeclaims", "dockyard-demo", f"dockyard.uid={spec.uid}") == []
    backend.remove(handle, keep_data=False)  # gone already: fine


def test_remove_reports_claims_still_held_by_a_pod_as_going_after_its_bound(fake_cluster, settings, caplog):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_REMOVE_WAIT_S = 1
    spec = spec_for(["sleep", "60"], kind="job", mounts=(Mount("output", "/output"),))
    handle = backend.start(spec)
    claim = m.claim_name(spec.uid, "output")
    holder = m.workspace_pod(spec_for(["sleep", "60"], mounts=()), "dockyard-demo", m.ClusterOptions())
    holder["spec"]["volumes"] = [{"name": "held", "persistentVolumeClaim": {"claimName": claim}}]
    fake.create("pods", "dockyard-demo", holder)  # another pod still mounts it

    with caplog.at_level(logging.WARNING, logger="portal.runtime.kubernetes"):
        backend.remove(handle, keep_data=False)

    [going] = fake.find("persistentvolumeclaims", "dockyard-demo", f"dockyard.uid={spec.uid}")
    assert going["metadata"]["deletionTimestamp"]
    assert backend._claims(spec.uid) == []
    assert f"volumes still being deleted by the cluster: {claim}" in caplog.text


def test_reading_a_missing_path_of_a_running_pod_is_not_found_before_any_byte(fake_cluster):
    backend, fake = fake_cluster
    spec = spec_for(["sleep", "60"])
    handle = backend.start(spec)
    FakeDriver(fake).runs(handle)

    with pytest.raises(RuntimeError_) as raised:
        backend.archive_get(handle, "/data/nothing-here")

    assert (raised.value.reason, raised.value.permanent) == ("not_found", True)
    assert "No such file or directory" in str(raised.value)


# --- What a workload may reach ------------------------------------------------------------------


def test_workloads_may_reach_dns_and_the_internet_but_not_the_cluster_or_private_ranges(fake_cluster, settings):
    backend, fake = fake_cluster
    settings.DOCKYARD_K8S_CLUSTER_CIDRS = ["198.18.0.0/15"]  # a cluster whose services use a public-looking range
    settings.DOCKYARD_K8S_EGRESS_ALLOW = ["10.20.30.0/24"]  # the team's package mirror
    driver = FakeDriver(fake)
    workload = backend.start(spec_for(["sleep", "60"]))
    other_team = backend.start(spec_for(["sleep", "60"], team="other"))
    driver.runs(workload)
    driver.runs(other_team)
    [pod], [neighbour] = driver.pods(workload), driver.pods(other_team)

    def reaches(address: str, port: int, protocol: str = "TCP") -> bool:
        return fake.egress_allowed(pod, address, port, protocol)

    assert reaches("10.96.0.10", 53, "UDP") and reaches("10.96.0.10", 53)  # the cluster's DNS
    assert reaches("93.184.215.14", 443) and reaches("2606:4700::1111", 443)  # the internet
    assert reaches("10.20.30.5", 443)  # allowed by the admin
    assert not reaches(neighbour["status"]["podIP"], 8888)  # another team's pod
    assert not reaches("10.96.0.1", 443)  # the cluster's API service
    assert not reaches("198.18.0.1", 443)  # a configured cluster range
    for private in ("172.16.5.5", "192.168.1.1", "169.254.169.254", "100.64.0.1", "fd00::1", "fe80::1"):
        assert not reaches(private, 80), private


def test_the_pods_of_a_multi_node_job_reach_each_other_and_nothing_else_private(fake_cluster):
    backend, fake = fake_cluster
    driver = FakeDriver(fake)
    handle = backend.start(spec_for(["train"], kind="job", nodes=2))
    lone = backend.start(spec_for(["train"], kind="job"))
    driver.runs(handle)
    driver.runs(lone)
    first, second = driver.pods(handle)
    [outsider] = driver.pods(lone)

    assert fake.egress_allowed(first, second["status"]["podIP"], 29500)
    assert not fake.egress_allowed(outsider, first["status"]["podIP"], 29500)
