"""The contract every runtime backend meets: value types in, value types out.

Backends are stateless and level-triggered: everything they need is in the spec or derived
from the workload's uid, so any process may call them, any number of times.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

LABEL_PREFIX = "dockyard."
LABEL_UID = "dockyard.uid"
LABEL_KIND = "dockyard.kind"
LABEL_OWNER = "dockyard.owner"
LABEL_TEAM = "dockyard.team"
LABEL_MANAGED = "dockyard.managed"
# On an image: "<uid>:<gid> <dir> <dir>...": folders the image gives that user. A new volume
# mounted on one starts out as the image's folder, owner included, so there is nothing to hand over.
LABEL_USER_DIRS = "dockyard.user-dirs"


class RuntimeError_(Exception):
    """A backend call failed.

    `permanent`: retrying will not help (e.g. an image that does not exist).
    `reason`: a short machine-readable cause, for metrics and events.
    `user_message`: what a data scientist is told.
    """

    def __init__(self, message: str, *, reason: str = "backend_error", permanent: bool = False, user_message: str = ""):
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent
        self.user_message = user_message or message


class State(StrEnum):
    """What a backend observes of a workload's container or pod."""

    CREATED = "created"  # made, not started yet
    RUNNING = "running"
    EXITED = "exited"  # finished; see exit_code and reason
    MISSING = "missing"  # nothing by that name on the backend


@dataclass(frozen=True)
class Mount:
    """A persistent volume the backend manages, named from the workload (never a host path)."""

    name: str  # e.g. "home" or "output"; the volume is named after the workload uid and this
    target: str  # path inside the container
    read_only: bool = False


@dataclass(frozen=True)
class FileDrop:
    """Files put into the container before it starts: a tar archive unpacked at `path`.

    Entries keep the owner and mode the archive gives them (e.g. root-owned and read-only, so
    the workload's user can read but not change them).
    """

    path: str
    archive: bytes


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything a backend needs to run one workload."""

    uid: str
    kind: str  # "workspace" | "job" | "probe"
    owner: str
    team: str
    image: str  # pinned digest (sha256:...) or an image reference
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    cpus: float = 1.0
    memory_mib: int = 1024
    pids_limit: int = 1024
    gpu_device_ids: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    ports: tuple[int, ...] = ()  # container ports the portal connects to (e.g. Jupyter's)
    labels: dict[str, str] = field(default_factory=dict)
    files: tuple[FileDrop, ...] = ()
    user: str = "1000:100"  # uid 1000, group "users": the user catalog images are built with
    # Kubernetes only (Docker places GPUs by gpu_device_ids and ignores these): the cluster's
    # scheduler picks GPUs by count and model; a job may span `nodes` pods (an Indexed Job).
    gpus: int = 0
    gpu_model: str = ""  # the node label nvidia.com/gpu.product to require, e.g. "NVIDIA-A100-SXM4-80GB"
    nodes: int = 1
    # The team's limits, mirrored into its namespace's ResourceQuota (Kubernetes): keys cpus,
    # memory_gib, gpus, pods; a missing key is no limit.
    team_limits: dict = field(default_factory=dict)
    timeout_s: int | None = None  # a job's time limit; Kubernetes sets it as the Job's deadline

    def all_labels(self) -> dict[str, str]:
        return {
            **self.labels,
            LABEL_MANAGED: "true",
            LABEL_UID: self.uid,
            LABEL_KIND: self.kind,
            LABEL_OWNER: self.owner,
            LABEL_TEAM: self.team,
        }


# A created workload held up for one of these reasons gets going by itself once capacity frees
# or a batch queue (Kueue) admits it; any other reason (ImagePullBackOff, a config error) is a
# problem that someone has to fix.
WAITING_FOR_CAPACITY = frozenset({"Unschedulable", "Suspended"})


@dataclass(frozen=True)
class Handle:
    """How a backend finds a workload again: derived from the uid, so it can be rebuilt."""

    uid: str
    name: str


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


@dataclass(frozen=True)
class Observed:
    """What the backend sees of a workload right now."""

    uid: str
    state: State
    kind: str = ""
    exit_code: int | None = None
    reason: str = ""  # e.g. "OOMKilled", "Error", "Completed"
    endpoints: dict[int, Endpoint] = field(default_factory=dict)  # container port -> address
    started_at: datetime | None = None
    finished_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    node: str = ""  # where it was scheduled (Kubernetes: the node name(s))
    message: str = ""  # detail for the user, e.g. the scheduler's "0/3 nodes are available: ..."
    pod_ip: str = ""  # Kubernetes: the running pod's own address (endpoints may name its Service)
    # Exactly the object that was seen (Docker: by container id), so acting on it reaches that
    # object and not another one at the uid's derived name; None when only the uid is known.
    handle: Handle | None = None
    # Labelled as the uid's but not at the name derived from it (made by hand, or left by a
    # rename): never the workload's own container, so reconcile removes it.
    stray: bool = False


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    model: str
    memory_mib: int
    healthy: bool = True


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    backend: str
    cpus: float
    memory_mib: int
    gpus: tuple[GpuInfo, ...] = ()


@dataclass(frozen=True)
class ImageInfo:
    digest: str  # content-addressed id the workload runs by (sha256:...)
    size_bytes: int
    reference: str = ""


@dataclass(frozen=True)
class Progress:
    """A step of a pull or build: a percentage (None when unknown) and a log line."""

    percent: float | None
    line: str = ""


ProgressCallback = Callable[[Progress], None]


def log_lines(chunks: Iterable[bytes], *, max_bytes: int) -> Iterator[str]:
    """Lines of a log streamed as byte chunks, each at most `max_bytes`: a longer line is cut,
    with a marker saying so, and the rest of it is read past, never held."""
    pending, cutting = bytearray(), False
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for index, piece in enumerate(pieces):
            if not cutting:
                pending += piece[: max_bytes + 1 - len(pending)]
            ended = index < len(pieces) - 1  # a newline followed this piece
            if (ended or len(pending) > max_bytes) and not cutting:
                yield _log_line(pending, max_bytes)
                cutting = not ended
                pending.clear()
            elif ended:
                cutting = False
    if pending and not cutting:
        yield _log_line(pending, max_bytes)


def _log_line(data: bytearray, max_bytes: int) -> str:
    if len(data) <= max_bytes:
        return data.decode("utf-8", "replace")
    return data[:max_bytes].decode("utf-8", "ignore") + f" [line cut: longer than {max_bytes // 1024} KiB]"


def log_tail(lines: Iterable[str], *, max_bytes: int) -> tuple[str, bool]:
    """The end of a log, whole lines of at most `max_bytes` in all, read through once without
    holding the rest: (text, whether earlier lines were left out)."""
    kept: deque[str] = deque()
    size, cut = 0, False
    for line in lines:
        kept.append(line)
        size += len(line.encode()) + 1
        while size - 1 > max_bytes and kept:
            size -= len(kept.popleft().encode()) + 1
            cut = True
    return "\n".join(kept), cut


class RuntimeBackend(Protocol):
    name: str
    # True when start() returns only once the workload runs (Docker); False when pods may
    # still wait to be scheduled, pulled or admitted (Kubernetes): inspect() says how far.
    starts_at_once: bool

    def ping(self) -> None:
        """Returns if the engine or cluster answers; raises RuntimeError_ otherwise."""

    def ensure_image(self, ref: str, on_progress: ProgressCallback | None = None) -> ImageInfo:
        """Makes the image available (pulling it with progress if needed); returns its digest."""

    def build_image(
        self, *, dockerfile: str, tag: str, build_args: dict[str, str], on_progress: ProgressCallback | None = None
    ) -> ImageInfo:
        """Builds an image from a Dockerfile Dockyard rendered; returns its digest."""

    def image_python_packages(self, ref: str) -> list[list[str]]:
        """The Python packages inside an image, as [name, version] pairs."""

    def start(self, spec: WorkloadSpec) -> Handle:
        """Starts the workload; idempotent by spec.uid (returns what exists)."""

    def inspect(self, handle: Handle) -> Observed: ...

    def stop(self, handle: Handle, grace_s: int = 10) -> None:
        """Stops the workload; already stopped or gone is success."""

    def remove(self, handle: Handle, keep_data: bool = True) -> None:
        """Removes the container; its volumes stay unless keep_data is False."""

    def logs(
        self, handle: Handle, since: datetime | None = None, follow: bool = False, tail: int | None = None
    ) -> Iterator[str]:
        """The workload's output line by line, each cut at DOCKYARD_LOG_LINE_MAX_KB; with tail,
        only its last `tail` lines (read so at the engine, never the whole log); with follow,
        until it ends."""

    def archive_get(self, handle: Handle, path: str) -> Iterator[bytes]:
        """A tar stream of `path` inside the workload (running or exited), read in chunks.

        Raises RuntimeError_ with reason "not_found" when the workload or the path is missing.
        """

    def list_managed(self, kind: str = "") -> list[Observed]:
        """Everything on the backend labelled as Dockyard's (only `kind`, when given)."""

    def capacity(self) -> list[NodeCapacity]: ...

    def engine_started_at(self) -> datetime | None:
        """When the engine last (re)started, if known: what ran before it was stopped by it."""

    def handle_for(self, uid: str) -> Handle: ...

    def team_sync(self, team: str, limits: dict) -> None:
        """Makes the team's place on the backend match its limits (Kubernetes: the namespace,
        its ResourceQuota and NetworkPolicy). Keys of `limits`: cpus, memory_gib, gpus, pods."""
