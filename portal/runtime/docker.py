"""The Docker engine backend (docker SDK). Docker types never leave this module."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import docker
import requests
import urllib3
from django.conf import settings
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest
from docker.utils.json_stream import json_stream

from portal.runtime import gpus
from portal.runtime.base import (
    LABEL_KIND,
    LABEL_MANAGED,
    LABEL_UID,
    LABEL_USER_DIRS,
    Endpoint,
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
from portal.runtime.egress_proxy import allowed_from_urls, egress_proxy_ensure
from portal.runtime.manifests import container_name, docker_container_config, volume_name

# How long one call to the engine may take before the engine counts as not answering.
API_TIMEOUT_S = 30
# Builds and pulls stream for minutes; their calls get a longer read timeout.
BUILD_TIMEOUT_S = 3600
# Where a local engine writes its process id (Debian's dockerd default).
DOCKERD_PID_FILE = "/var/run/docker.pid"
# Bytes per read when copying files out of a container.
ARCHIVE_CHUNK = 1024 * 1024

STATES = {
    "created": State.CREATED,
    "running": State.RUNNING,
    "restarting": State.RUNNING,
    "paused": State.RUNNING,
    "exited": State.EXITED,
    "dead": State.EXITED,
    "removing": State.EXITED,
}
STEP = re.compile(r"^Step (\d+)/(\d+)")
# The variables package installers read their proxy from (Docker passes these build
# arguments to every RUN step without the Dockerfile declaring them, and keeps them out of
# the image's history).
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
# CFS period for a build step's CPU quota (microseconds; the kernel's default).
CPU_PERIOD_US = 100_000
# A build step the kernel killed (out of memory, or the build stopped) exits with this code.
KILLED_EXIT = "returned a non-zero code: 137"
# What reading a build's stream raises when the engine or the connection goes away.
STREAM_ERRORS = (DockerException, OSError, requests.RequestException, urllib3.exceptions.HTTPError)


def _engine_error(error: Exception, doing: str) -> RuntimeError_:
    if isinstance(error, (ImageNotFound, NotFound)):
        return RuntimeError_(
            f"{doing}: {error}", reason="not_found", permanent=True, user_message=f"{doing}: not found."
        )
    if isinstance(error, APIError) and error.is_client_error():
        explanation = getattr(error, "explanation", None) or str(error)
        return RuntimeError_(f"{doing}: {explanation}", reason="bad_request", permanent=True)
    return RuntimeError_(
        f"{doing}: the Docker engine does not answer ({error})",
        reason="engine_unreachable",
        user_message="The container engine is not answering right now; Dockyard will retry.",
    )


class DockerBackend:
    name = "docker"
    starts_at_once = True  # the container runs (or already ran) when start() returns

    def __init__(self, *, base_url: str | None = None, network: str | None = None):
        self.base_url = base_url if base_url is not None else settings.DOCKER_HOST
        self.network = network or settings.DOCKYARD_DOCKER_NETWORK
        self._network_ready = False  # checked once per process, then trusted
        self._user_dirs: dict[str, dict[str, set[str]]] = {}  # image -> what it gives whom

    @cached_property
    def client(self) -> docker.DockerClient:
        try:
            if self.base_url:
                return docker.DockerClient(base_url=self.base_url, timeout=API_TIMEOUT_S)
            return docker.from_env(timeout=API_TIMEOUT_S)
        except DockerException as error:
            raise _engine_error(error, "connecting to the Docker engine") from error

    def handle_for(self, uid: str) -> Handle:
        return Handle(uid=uid, name=container_name(uid))

    def team_sync(self, team: str, limits: dict) -> None:
        """Nothing to do on one host: teams share the engine, and quotas are Dockyard's own."""

    def ping(self) -> None:
        try:
            self.client.ping()
        except (DockerException, OSError) as error:
            raise _engine_error(error, "pinging the Docker engine") from error

    # --- Images ----------------------------------------------------------------------------

    def ensure_image(self, ref: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Finds the image locally, or pulls it with per-layer progress."""
        try:
            return self._image_info(self.client.images.get(ref), ref)
        except ImageNotFound:
            if ref.startswith("sha256:"):
                raise RuntimeError_(
                    f"image {ref} is not on this engine", reason="image_missing", permanent=True
                ) from None
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"looking up image {ref}") from error
        self._pull(ref, on_progress or (lambda progress: None))
        try:
            return self._image_info(self.client.images.get(ref), ref)
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"looking up pulled image {ref}") from error

    def _pull(self, ref: str, on_progress: ProgressCallback) -> None:
        repository, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
        layers: dict[str, tuple[int, int]] = {}
        try:
            for event in self.client.api.pull(repository, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise RuntimeError_(f"pulling {ref}: {event['error']}", reason="pull_failed", permanent=True)
                detail = event.get("progressDetail") or {}
                if event.get("id") and detail.get("total"):
                    layers[event["id"]] = (detail.get("current", 0), detail["total"])
                elif event.get("id") and event.get("status") in ("Pull complete", "Already exists"):
                    done = layers.get(event["id"], (1, 1))[1]
                    layers[event["id"]] = (done, done)
                on_progress(Progress(_percent(layers), f"{event.get('id', '')} {event.get('status', '')}".strip()))
        except RuntimeError_:
            raise
        except (DockerException, OSError) as error:
            explanation = getattr(error, "explanation", None) or str(error)
            raise RuntimeError_(
                f"pulling {ref}: {error}",
                reason="pull_failed",
                user_message=f"The image {ref} could not be pulled: {explanation}",
            ) from error

    def build_image(
        self,
        *,
        dockerfile: str,
        tag: str,
        build_args: dict[str, str] | None = None,
        files: dict[str, bytes] | None = None,
        labels: dict[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> ImageInfo:
        """Builds from a Dockerfile (plus context files) Dockyard rendered; streams each line.

        Every step runs fenced (docs/runtime.md, "Builds"): on the build network, whose only way
        out is the egress proxy, with memory, CPU and process limits, and within the build's
        time limit, past which the build is stopped.
        """
        report = on_progress or (lambda progress: None)
        context = _tar_context(dockerfile, files or {})
        limit_s = settings.DOCKYARD_BUILD_TIMEOUT_S
        timed_out = threading.Event()
        image_id = None
        try:
            proxy = self._build_proxy_url()
            # The proxy variables come last: no caller can take a build off the proxy.
            args = {**(build_args or {}), **dict.fromkeys(PROXY_VARIABLES, proxy)}
            response = self._build_request(context, tag=tag, labels=labels or {}, build_args=args)
            timer = threading.Timer(limit_s, self._cut, args=(response, timed_out))
            timer.start()
            try:
                for event in json_stream(response.iter_content(chunk_size=None)):
                    if "error" in event:
                        raise _build_error(event["error"].strip())
                    image_id = (event.get("aux") or {}).get("ID", image_id)
                    for line in (event.get("stream") or "").splitlines():
                        step = STEP.match(line)
                        percent = 100.0 * (int(step[1]) - 1) / int(step[2]) if step else None
                        report(Progress(percent, line))
            finally:
                timer.cancel()
                response.close()
        except (RuntimeError_, *STREAM_ERRORS) as error:
            if timed_out.is_set():
                raise _build_error(f"The build ran past its time limit of {limit_s} s and was stopped.") from error
            if isinstance(error, RuntimeError_):
                raise
            raise _engine_error(error, "building an image") from error
        if timed_out.is_set():
            raise _build_error(f"The build ran past its time limit of {limit_s} s and was stopped.")
        report(Progress(100.0, f"Built {tag}"))
        return self._image_info(self.client.images.get(image_id or tag), tag)

    def _build_request(self, context: io.BytesIO, *, tag: str, labels: dict, build_args: dict):
        """Starts a build with the engine's API directly: the SDK's build() has no way to set
        the cgroup parent (the process limit) or a CPU quota, nor to stop a build midway."""
        api = self.client.api
        memory = settings.DOCKYARD_BUILD_MEMORY_MIB * 1024 * 1024
        params = {
            "t": tag, "rm": "1", "forcerm": "1", "pull": "0",
            "buildargs": json.dumps(build_args), "labels": json.dumps(labels),
            "networkmode": settings.DOCKYARD_BUILD_NETWORK,
            "memory": memory, "memswap": memory,
            "cpuperiod": CPU_PERIOD_US, "cpuquota": int(settings.DOCKYARD_BUILD_CPUS * CPU_PERIOD_US),
            "cgroupparent": settings.DOCKYARD_BUILD_CGROUP_PARENT,
        }  # fmt: skip
        response = api.post(
            f"{api.base_url}/v{api.api_version}/build",
            params={k: v for k, v in params.items() if v != ""},
            data=context,
            headers={"Content-Type": "application/tar"},
            stream=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if not response.ok:
            explanation = response.text[:2000]
            response.close()
            raise _build_error(f"The engine refused the build: {explanation}")
        return response

    def _cut(self, response, timed_out: threading.Event) -> None:
        """Ends a build past its time limit: the engine stops a build (and kills the step
        running) when its client goes away, and shutting the socket down wakes the reader."""
        timed_out.set()
        try:
            sock = self.client.api._get_raw_response_socket(response)
            getattr(sock, "_sock", sock).shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError, DockerException):
            response.close()

    def _build_proxy_url(self) -> str:
        """The egress proxy's URL as builds see it: on the build network's gateway."""
        network = self._ensure_bridge(settings.DOCKYARD_BUILD_NETWORK, settings.DOCKYARD_BUILD_BRIDGE)
        gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
        port = settings.DOCKYARD_BUILD_PROXY_PORT
        allowed = {*settings.DOCKYARD_BUILD_EGRESS_HOSTS, *allowed_from_urls([settings.DOCKYARD_PIP_INDEX_URL])}
        try:
            egress_proxy_ensure(host=gateway, port=port, allowed=allowed)
        except OSError as error:
            raise RuntimeError_(
                f"the build egress proxy cannot listen on {gateway}:{port}: {error}",
                reason="build_failed",
                permanent=True,
                user_message=(
                    f"Builds need the builds worker on the Docker host, with {gateway}:{port} free "
                    f"for the build proxy ({error.strerror or error})."
                ),
            ) from error
        return f"http://{gateway}:{port}"

    def _image_info(self, image, ref: str) -> ImageInfo:
        return ImageInfo(digest=image.id, size_bytes=int(image.attrs.get("Size") or 0), reference=ref)

    def image_python_packages(self, ref: str) -> list[list[str]]:
        """The Python packages inside an image, as [name, version] pairs; empty without pip."""
        try:
            output = self.client.containers.run(
                ref,
                ["python3", "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                entrypoint=[],
                remove=True,
                stderr=False,
            )
            return [[p["name"], p["version"]] for p in json.loads(output or b"[]")]
        except (DockerException, OSError, ValueError, KeyError):
            return []

    def remove_image(self, ref: str) -> None:
        try:
            self.client.images.remove(ref, force=True)
        except NotFound:
            pass
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"removing image {ref}") from error

    # --- Workloads -------------------------------------------------------------------------

    def start(self, spec: WorkloadSpec) -> Handle:
        """Creates and starts the container, or returns the one a previous call made.

        The common path is two engine calls (create, start): an existing container shows up
        as a name conflict on create, and a missing image as an error from it.
        """
        handle = self.handle_for(spec.uid)
        new_volumes: set[str] = set()
        try:
            self._ensure_network()
            new_volumes = self._ensure_volumes(spec)
            container = self._create(spec, new_volumes)
            if container.status == "created":
                for drop in spec.files:
                    container.put_archive(drop.path, drop.archive)
                container.start()
        except ImageNotFound:
            self._undo_failed_start(handle, new_volumes)
            raise RuntimeError_(
                f"image {spec.image} is not on this engine",
                reason="image_missing",
                permanent=True,
                user_message="The workload's image is not on this host any more; rebuild or pull it.",
            ) from None
        except (DockerException, OSError) as error:
            self._network_ready = False  # the network may be what went missing: check again
            self._undo_failed_start(handle, new_volumes)
            raise _engine_error(error, f"starting {spec.kind} {spec.uid}") from error
        return handle

    def _create(self, spec: WorkloadSpec, new_volumes: set[str]):
        config = docker_container_config(
            spec,
            network=self.network,
            log_max_mb=settings.DOCKYARD_DOCKER_LOG_MAX_MB,
            log_files=settings.DOCKYARD_DOCKER_LOG_FILES,
        )
        if "device_requests" in config:
            config["device_requests"] = [
                DeviceRequest(driver=r["Driver"], device_ids=r["DeviceIDs"], capabilities=r["Capabilities"])
                for r in config["device_requests"]
            ]
        try:
            container = self.client.containers.create(**config)
        except APIError as error:
            if error.status_code == 409:  # a concurrent start made it first: use that one
                return self.client.containers.get(config["name"])
            raise
        given = self._image_user_dirs(spec.image).get(spec.user, set())
        owned = [
            m
            for m in spec.mounts
            if volume_name(spec.uid, m.name) in new_volumes and not m.read_only and m.target.rstrip("/") not in given
        ]
        if owned:
            self._give_volumes_to_user(container, spec.user, owned)
        return container

    def _image_user_dirs(self, ref: str) -> dict[str, set[str]]:
        """The folders an image gives a user (its LABEL_USER_DIRS), as {"uid:gid": {dirs}}. A
        new volume mounted on one starts as a copy of that folder, owner included. Read once
        per image and process: an image reference here is a digest, which never changes."""
        if ref not in self._user_dirs:
            try:
                label = (self.client.images.get(ref).labels or {}).get(LABEL_USER_DIRS, "")
            except (DockerException, OSError):
                label = ""  # then every volume is handed over, as for any image
            owner, _, dirs = label.partition(" ")
            self._user_dirs[ref] = {owner: {d.rstrip("/") for d in dirs.split()}} if owner else {}
        return self._user_dirs[ref]

    def _give_volumes_to_user(self, container, user: str, mounts) -> None:
        """A new volume's folder is owned by root where the image lacks it. Copying an empty
        folder entry owned by the workload's user onto the mount point (before the first
        start) hands it over, with no privileged helper container."""
        uid, _, gid = user.partition(":")
        for mount in mounts:
            parent, _, name = mount.target.rstrip("/").rpartition("/")
            archive = io.BytesIO()
            with tarfile.open(fileobj=archive, mode="w") as tar:
                entry = tarfile.TarInfo(name)
                entry.type, entry.mode = tarfile.DIRTYPE, 0o755
                entry.uid, entry.gid = int(uid), int(gid or uid)
                tar.addfile(entry)
            container.put_archive(parent or "/", archive.getvalue())

    def _undo_failed_start(self, handle: Handle, new_volumes: set[str]) -> None:
        # Nothing half-made stays behind: the container goes, and so do volumes this attempt
        # created (volumes from earlier runs hold the user's data and stay).
        try:
            container = self._find(handle)
            if container is not None:
                container.remove(force=True)
            for name in new_volumes:
                self.client.volumes.get(name).remove(force=True)
        except (DockerException, OSError):
            pass

    def _find(self, handle: Handle):
        try:
            return self.client.containers.get(handle.name)
        except NotFound:
            return None

    def _ensure_network(self) -> None:
        if self._network_ready:
            return
        self._ensure_bridge(self.network, settings.DOCKYARD_DOCKER_BRIDGE)
        self._network_ready = True

    def _ensure_bridge(self, name: str, bridge: str):
        """The bridge network `name`, made if missing: no traffic between its containers, and
        a fixed host-side name (`bridge`) that the host firewall (scripts/workload-firewall.sh)
        refers to."""
        for network in self.client.networks.list(names=[name]):
            if network.name == name:
                return network
        try:
            return self.client.networks.create(
                name,
                driver="bridge",
                options={"com.docker.network.bridge.enable_icc": "false", "com.docker.network.bridge.name": bridge},
                labels={LABEL_MANAGED: "true"},
                check_duplicate=True,
            )
        except APIError as error:
            if error.status_code != 409:
                raise
        return self.client.networks.get(name)

    def _ensure_volumes(self, spec: WorkloadSpec) -> set[str]:
        created = set()
        for mount in spec.mounts:
            name = volume_name(spec.uid, mount.name)
            try:
                self.client.volumes.get(name)
            except NotFound:
                self.client.volumes.create(name, labels={**spec.all_labels(), "dockyard.mount": mount.name})
                created.add(name)
        return created

    def inspect(self, handle: Handle) -> Observed:
        try:
            container = self._find(handle)
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"inspecting {handle.name}") from error
        if container is None:
            return Observed(uid=handle.uid, state=State.MISSING)
        return self._observed(container.attrs)

    def _observed(self, attrs: dict) -> Observed:
        labels = attrs.get("Config", {}).get("Labels") or {}
        uid = labels.get(LABEL_UID, "")
        raw = attrs.get("State", {})
        state = STATES.get(raw.get("Status", ""), State.EXITED)
        exit_code = raw.get("ExitCode") if state == State.EXITED else None
        if raw.get("OOMKilled"):
            reason = "OOMKilled"
        elif state == State.EXITED:
            reason = "Completed" if exit_code == 0 else (raw.get("Error") or "Error")
        else:
            reason = ""
        return Observed(
            uid=uid,
            kind=labels.get(LABEL_KIND, ""),
            state=state,
            exit_code=exit_code,
            reason=reason,
            endpoints=self._endpoints(attrs),
            started_at=_time(raw.get("StartedAt")),
            finished_at=_time(raw.get("FinishedAt")) if state == State.EXITED else None,
            labels=labels,
            handle=Handle(uid=uid, name=attrs["Id"]) if attrs.get("Id") else None,
            stray=attrs.get("Name", "").lstrip("/") != container_name(uid),
        )

    def _endpoints(self, attrs: dict) -> dict[int, Endpoint]:
        network = (attrs.get("NetworkSettings", {}).get("Networks") or {}).get(self.network) or {}
        address = network.get("IPAddress")
        if not address:
            return {}
        ports = attrs.get("Config", {}).get("ExposedPorts") or {}
        labelled = (attrs.get("Config", {}).get("Labels") or {}).get("dockyard.ports", "")
        numbers = {int(p.split("/")[0]) for p in ports} | {int(p) for p in labelled.split(",") if p}
        return {port: Endpoint(host=address, port=port) for port in sorted(numbers)}

    def stop(self, handle: Handle, grace_s: int = 10) -> None:
        try:
            self.client.api.stop(handle.name, timeout=grace_s)  # an ended container answers "not modified"
        except NotFound:
            pass
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"stopping {handle.name}") from error

    def remove(self, handle: Handle, keep_data: bool = True) -> None:
        try:
            try:
                self.client.api.remove_container(handle.name, force=True)  # one call, no inspect first
            except NotFound:
                pass
            if not keep_data:
                for volume in self.client.volumes.list(filters={"label": f"{LABEL_UID}={handle.uid}"}):
                    volume.remove(force=True)
        except NotFound:
            pass
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"removing {handle.name}") from error

    def logs(
        self, handle: Handle, since: datetime | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        """The container's output, line by line (each cut at DOCKYARD_LOG_LINE_MAX_KB); with
        follow, until the container ends."""
        try:
            container = self.client.containers.get(handle.name)
            chunks = container.logs(stream=True, follow=follow, since=since, tail="all" if tail is None else tail)
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"reading logs of {handle.name}") from error
        yield from log_lines(chunks, max_bytes=settings.DOCKYARD_LOG_LINE_MAX_KB * 1024)

    def archive_get(self, handle: Handle, path: str) -> Iterator[bytes]:
        try:
            stream, _ = self.client.api.get_archive(handle.name, path, chunk_size=ARCHIVE_CHUNK)
        except (DockerException, OSError) as error:
            raise _engine_error(error, f"reading {path} of {handle.name}") from error
        return stream

    def list_managed(self, kind: str = "") -> list[Observed]:
        # Only this installation's workloads: DOCKYARD_WORKLOAD_LABELS tell apart installations
        # (or test runs) sharing one engine.
        scope = [f"{key}={value}" for key, value in settings.DOCKYARD_WORKLOAD_LABELS.items()]
        labels = [f"{LABEL_MANAGED}=true", *scope, *([f"{LABEL_KIND}={kind}"] if kind else [])]
        try:
            # ignore_removed: a container removed while the list is read is simply not in it.
            containers = self.client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)
        except (DockerException, OSError) as error:
            raise _engine_error(error, "listing workloads") from error
        return [self._observed(c.attrs) for c in containers]

    def engine_started_at(self) -> datetime | None:
        """When the engine's current process started, if it runs on this machine (read from
        /proc); None for a remote engine. A workload container started before this was
        stopped by an engine restart."""
        if self.base_url and not self.base_url.startswith("unix://"):
            return None
        try:
            pid = int(Path(DOCKERD_PID_FILE).read_text().strip())
            start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
            boot = next(
                int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
            )
        except (OSError, ValueError, IndexError, StopIteration):
            return None
        return datetime.fromtimestamp(boot + start_ticks / os.sysconf("SC_CLK_TCK"), tz=UTC)

    def capacity(self) -> list[NodeCapacity]:
        try:
            info = self.client.info()
        except (DockerException, OSError) as error:
            raise _engine_error(error, "reading the engine's capacity") from error
        return [
            NodeCapacity(
                name=info.get("Name", "docker"),
                backend=self.name,
                cpus=float(info.get("NCPU", 0)),
                memory_mib=int(info.get("MemTotal", 0)) // (1024 * 1024),
                gpus=tuple(gpus.discover()),
            )
        ]


def _build_error(message: str) -> RuntimeError_:
    if message.endswith(KILLED_EXIT):
        message += (
            f" (killed: a build step may use at most {settings.DOCKYARD_BUILD_MEMORY_MIB} MiB of memory,"
            " DOCKYARD_BUILD_MEMORY_MIB)"
        )
    return RuntimeError_(f"build failed: {message}", reason="build_failed", permanent=True, user_message=message)


def _percent(layers: dict[str, tuple[int, int]]) -> float | None:
    total = sum(t for _, t in layers.values())
    return 100.0 * sum(c for c, _ in layers.values()) / total if total else None


def _time(value: str | None) -> datetime | None:
    if not value or value.startswith("0001-"):
        return None
    # Docker gives nanoseconds; Python parses microseconds.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", value).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)


def _tar_context(dockerfile: str, files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in {"Dockerfile": dockerfile.encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer
