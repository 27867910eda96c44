"""Every change to the catalog: images, revisions, builds, deprecation. All audited."""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Value
from django.db.models.functions import Concat
from django.utils import timezone

from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.catalog import dockerfile
from portal.catalog.models import Image, ImageBuild, ImageRevision, ImageStatus, SourceType
from portal.runtime import RuntimeError_, get_backend
from portal.runtime.base import Progress, State, WorkloadSpec

# Build logs and progress are written to the database at most this often (seconds), so a
# chatty build does not turn every output line into a write; pages poll at about this rate.
BUILD_FLUSH_INTERVAL_S = 1.0
# A lock is a line per installed distribution; anything bigger is not one.
LOCK_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """What an image is made from: a reference to pull, or a spec to build."""

    source_type: str
    pull_ref: str = ""
    base_image: str = ""
    apt_packages: tuple[str, ...] = ()
    pip_requirements: tuple[str, ...] = ()

    def cleaned(self) -> SourceSpec:
        if self.source_type == SourceType.PULL:
            return SourceSpec(source_type=SourceType.PULL, pull_ref=dockerfile.clean_image_reference(self.pull_ref))
        if self.source_type != SourceType.BUILD:
            raise ValidationError({"source_type": "Choose pull or build."})
        return SourceSpec(
            source_type=SourceType.BUILD,
            base_image=dockerfile.clean_image_reference(self.base_image or settings.DOCKYARD_BASE_IMAGE, "base_image"),
            apt_packages=tuple(dockerfile.clean_apt_packages(list(self.apt_packages))),
            pip_requirements=tuple(dockerfile.clean_pip_requirements(list(self.pip_requirements))),
        )

    @classmethod
    def of(cls, revision: ImageRevision) -> SourceSpec:
        return cls(
            source_type=revision.source_type,
            pull_ref=revision.pull_ref,
            base_image=revision.base_image,
            apt_packages=tuple(revision.apt_packages),
            pip_requirements=tuple(revision.pip_requirements),
        )


IMAGE_DETAIL_FIELDS = (
    "name",
    "description",
    "framework",
    "framework_version",
    "python_version",
    "cuda_version",
    "gpu_capable",
    "default_command",
    "all_teams",
)


def image_create(*, slug: str, source: SourceSpec, details: dict, teams=(), by, actor: Actor) -> Image:
    """A new catalog entry with its first revision (not built yet: see image_build)."""
    source = source.cleaned()
    _require_detail_fields(details)
    with transaction.atomic():
        image = Image(slug=slug, created_by=by, **details)
        image.full_clean(exclude=["current_revision", "successor"])
        try:
            image.save()
        except IntegrityError:
            raise ValidationError({"slug": f"An image called {slug} already exists."}) from None
        image.teams.set(teams)
        revision = _new_revision(image=image, source=source, by=by)
        audit_record(
            actor=actor, action="image.create", target=image, details={"revision": 1, **_spec_details(revision)}
        )
    return image


def image_update(*, image: Image, details: dict, teams=None, actor: Actor) -> Image:
    """Changes what people read about an image (name, description, visibility...)."""
    _require_detail_fields(details)
    with transaction.atomic():
        changed = {k: v for k, v in details.items() if getattr(image, k) != v}
        for key, value in changed.items():
            setattr(image, key, value)
        image.full_clean(exclude=["current_revision", "successor"])
        image.save()
        if teams is not None:
            image.teams.set(teams)
            changed["teams"] = sorted(t.slug for t in teams)
        if changed:
            audit_record(actor=actor, action="image.update", target=image, details={"changed": changed})
    return image


def _require_detail_fields(details: dict) -> None:
    unknown = set(details) - set(IMAGE_DETAIL_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be set here."))


def image_revise(*, image: Image, source: SourceSpec, by, actor: Actor) -> ImageRevision:
    """A new revision of the spec. The current revision stays in use until this one is built."""
    source = source.cleaned()
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image.pk)
        latest = image.revisions.order_by("-number").first()
        if latest is not None and SourceSpec.of(latest) == source:
            raise ValidationError("The spec is unchanged: nothing to revise.")
        revision = _new_revision(image=image, source=source, by=by)
        audit_record(
            actor=actor,
            action="image.revise",
            target=image,
            details={"revision": revision.number, **_spec_details(revision)},
        )
    return revision


def _new_revision(*, image: Image, source: SourceSpec, by) -> ImageRevision:
    number = (image.revisions.aggregate(n=Max("number"))["n"] or 0) + 1
    return ImageRevision.objects.create(
        image=image,
        number=number,
        source_type=source.source_type,
        pull_ref=source.pull_ref,
        base_image=source.base_image,
        apt_packages=list(source.apt_packages),
        pip_requirements=list(source.pip_requirements),
        created_by=by,
    )


def _spec_details(revision: ImageRevision) -> dict:
    return {"source": revision.source_type, **revision.spec_summary()}


def image_build(*, image: Image, revision: ImageRevision | None = None, by, actor: Actor) -> ImageBuild:
    """Queues a build (or pull) of a revision, the latest by default, on the `builds` queue.

    Asking again while one is queued or running returns that one.
    """
    revision = revision or image.revisions.order_by("-number").first()
    if revision is None or revision.image_id != image.pk:
        raise ValidationError("This image has no revision to build.")
    with transaction.atomic():
        build, created = build_queue(revision=revision, by=by)
        if created:
            audit_record(
                actor=actor,
                action="image.build",
                target=image,
                details={"revision": revision.number, "build": build.pk},
            )
    return build


def build_queue(*, revision: ImageRevision, by) -> tuple[ImageBuild, bool]:
    """The build of a revision: the one queued or running, or a new one queued on the `builds`
    queue after commit. Callers audit what they asked for. Returns (build, created)."""
    from portal.catalog.tasks import build_image_task

    with transaction.atomic():
        existing = ImageBuild.objects.filter(revision=revision, status__in=ImageBuild.Status.active()).first()
        if existing is not None:
            return existing, False
        build = ImageBuild.objects.create(revision=revision, requested_by=by)
        ImageRevision.objects.filter(pk=revision.pk).update(status=ImageRevision.Status.BUILDING)
        _refresh_status(revision.image)
        build_image_task.delay_on_commit(build.pk)
    return build, True


def image_deprecate(*, image: Image, successor: Image | None, message: str, actor: Actor) -> Image:
    """No new workloads from this image; running ones go on and reruns still find its digest."""
    if successor is not None and successor.pk == image.pk:
        raise ValidationError({"successor": "An image cannot succeed itself."})
    with transaction.atomic():
        image.status = ImageStatus.DEPRECATED
        image.successor = successor
        image.deprecation_message = message
        image.save(update_fields=["status", "successor", "deprecation_message", "updated_at"])
        audit_record(
            actor=actor,
            action="image.deprecate",
            target=image,
            details={"successor": successor.slug if successor else None, "message": message},
        )
    return image


def image_require_startable(*, image: Image) -> ImageRevision:
    """The revision a new workload may start from, or a refusal a person can act on."""
    if image.status == ImageStatus.DEPRECATED:
        hint = f" Use {image.successor.slug} instead." if image.successor else ""
        raise ValidationError(
            f"{image.slug} is deprecated and cannot start new work.{hint} {image.deprecation_message}"
        )
    if image.current_revision is None or image.status not in ImageStatus.startable():
        raise ValidationError(f"{image.slug} is not ready yet (status: {image.get_status_display().lower()}).")
    return image.current_revision


def _refresh_status(image: Image) -> None:
    """Derives the image's status from its revisions and builds (deprecation is sticky)."""
    image = Image.objects.select_for_update().get(pk=image.pk)
    if image.status == ImageStatus.DEPRECATED:
        return
    builds = ImageBuild.objects.filter(revision__image=image)
    if image.current_revision_id:
        status = ImageStatus.READY
    elif builds.filter(status__in=ImageBuild.Status.active()).exists():
        status = ImageStatus.BUILDING
    elif builds.filter(status=ImageBuild.Status.FAILED).exists():
        status = ImageStatus.FAILED
    else:
        status = ImageStatus.DRAFT
    if status != image.status:
        Image.objects.filter(pk=image.pk).update(status=status, updated_at=timezone.now())


# --- Running a build (the `builds` worker) ------------------------------------------------------


def build_claim(*, build_id: int) -> ImageBuild | None:
    """Marks a build running; None if it already finished (a redelivered task does nothing).

    A build found `running` is claimed again: with acks_late, a redelivery means the worker
    that had it died, and builds are safe to redo (the engine reuses its cached layers).
    """
    claimed = ImageBuild.objects.filter(pk=build_id, status__in=ImageBuild.Status.active()).update(
        status=ImageBuild.Status.RUNNING, started_at=timezone.now(), progress=0, step="Starting"
    )
    if not claimed:
        return None
    return ImageBuild.objects.select_related("revision__image").get(pk=build_id)


def build_run(*, build_id: int) -> None:
    """Builds or pulls the revision, streaming progress and log, then records the outcome:
    digest, size, the Python packages inside and the pip lock the build wrote."""
    build = build_claim(build_id=build_id)
    if build is None:
        return
    revision = build.revision
    sink = _BuildLog(build.pk)
    backend = get_backend()
    lock: list[str] = []
    try:
        if revision.source_type == SourceType.PULL:
            info = backend.ensure_image(revision.pull_ref, on_progress=sink)
        else:
            context = dockerfile.render(
                build_spec_of(revision), ca_bundle=_ca_bundle(), pip_index_url=settings.DOCKYARD_PIP_INDEX_URL
            )
            sink(Progress(0, context.dockerfile))
            info = backend.build_image(
                dockerfile=context.dockerfile,
                tag=revision.tag,
                files={k: v for k, v in context.files.items() if k != "Dockerfile"},
                labels={"dockyard.image": revision.image.slug, "dockyard.revision": str(revision.number)},
                on_progress=sink,
            )
            lock = image_lock_read(backend=backend, digest=info.digest)
        packages = backend.image_python_packages(info.digest)
    except RuntimeError_ as error:
        if error.permanent:
            sink(Progress(None, error.user_message))  # the log ends with why, e.g. a limit it hit
        sink.flush()
        if not error.permanent:
            raise  # the task retries with backoff; the build stays `running`
        _build_failed(build, error)
        return
    sink.flush()
    _build_succeeded(build, digest=info.digest, size=info.size_bytes, packages=packages, lock=lock)


def build_spec_of(revision: ImageRevision) -> dockerfile.BuildSpec:
    """What a build revision renders to; an environment's revision adds its lock, start-up
    script and venv choice to the catalog fields."""
    environment_revision = getattr(revision, "environment_revision", None)
    if environment_revision is not None:
        from portal.catalog.environments.services import environment_build_spec

        return environment_build_spec(environment_revision)
    return dockerfile.BuildSpec(
        base_image=revision.base_image,
        apt_packages=tuple(revision.apt_packages),
        pip_requirements=tuple(revision.pip_requirements),
    )


def image_lock_read(*, backend, digest: str) -> list[str]:
    """The lock a build wrote at /etc/dockyard/pip.lock, read from a short-lived container of
    the image (the lock step's output is not in the log when the engine reused a cached layer,
    so the file in the image is the one source). Empty when the image has no lock."""
    spec = WorkloadSpec(
        uid=str(uuid.uuid4()), kind="probe", owner="dockyard", team="dockyard", image=digest, command=("true",),
        cpus=0.25, memory_mib=64, pids_limit=16, labels=dict(settings.DOCKYARD_WORKLOAD_LABELS),
    )  # fmt: skip
    handle = backend.start(spec)
    try:
        data = b"".join(backend.archive_get(handle, dockerfile.LOCK_PATH))
    except RuntimeError_ as error:
        if error.reason != "not_found":
            raise
        if backend.inspect(handle).state == State.MISSING:
            # Removed under us (the reconciler takes containers no workload wants): try again.
            raise RuntimeError_("the lock reader's container went away", reason="lock_read") from error
        return []
    finally:
        backend.remove(handle, keep_data=False)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = next((m for m in tar if m.isfile()), None)
        text = tar.extractfile(member).read(LOCK_MAX_BYTES).decode("utf-8", "replace") if member else ""
    return [line.strip() for line in text.splitlines() if line.strip()]


def build_give_up(*, build_id: int, error: RuntimeError_) -> None:
    """Marks a build failed after its retries ran out."""
    build = ImageBuild.objects.select_related("revision__image").get(pk=build_id)
    if build.is_active:
        _build_failed(build, error)


def _ca_bundle() -> bytes | None:
    path = settings.DOCKYARD_BUILD_CA_BUNDLE
    return Path(path).read_bytes() if path else None


def _build_succeeded(build: ImageBuild, *, digest: str, size: int, packages: list, lock: list) -> None:
    now = timezone.now()
    with transaction.atomic():
        ImageBuild.objects.filter(pk=build.pk).update(
            status=ImageBuild.Status.SUCCEEDED, progress=100, step="Done", finished_at=now
        )
        revision = build.revision
        ImageRevision.objects.filter(pk=revision.pk).update(
            status=ImageRevision.Status.READY,
            digest=digest,
            size_bytes=size,
            packages=packages,
            pip_lock=lock,
            built_at=now,
        )
        image = Image.objects.select_for_update().get(pk=revision.image_id)
        # A newer revision already in use is not replaced by an older one finishing late.
        if image.current_revision is None or image.current_revision.number <= revision.number:
            image.current_revision_id = revision.pk
            image.save(update_fields=["current_revision", "updated_at"])
        _refresh_status(image)
        audit_record(
            actor=Actor.system(),
            **_finish_subject(revision),
            details={"revision": revision.number, "build": build.pk, "digest": digest, "size_bytes": size},
        )


def _build_failed(build: ImageBuild, error: RuntimeError_) -> None:
    with transaction.atomic():
        ImageBuild.objects.filter(pk=build.pk).update(
            status=ImageBuild.Status.FAILED, error=error.user_message, step="Failed", finished_at=timezone.now()
        )
        ImageRevision.objects.filter(pk=build.revision_id).update(status=ImageRevision.Status.FAILED)
        image = build.revision.image
        _refresh_status(image)
        audit_record(
            actor=Actor.system(),
            **_finish_subject(build.revision),
            outcome=Outcome.ERROR,
            details={"revision": build.revision.number, "build": build.pk, "error": error.user_message[:500]},
        )


def _finish_subject(revision: ImageRevision) -> dict:
    """What a finished build is recorded against: the environment it built, or the image."""
    environment_revision = getattr(revision, "environment_revision", None)
    if environment_revision is None:
        return {"action": "image.build_finish", "target": revision.image}
    environment = environment_revision.environment
    return {"action": "environment.build_finish", "target": environment, "team": environment.team}


class _BuildLog:
    """Collects a build's progress events and appends them to the build row in batches."""

    def __init__(self, build_id: int):
        self.build_id = build_id
        self.lines: list[str] = []
        self.percent: float | None = None
        self.step = ""
        self.flushed_at = time.monotonic()

    def __call__(self, progress: Progress) -> None:
        if progress.line:
            self.lines.append(progress.line)
            self.step = progress.line.splitlines()[0][:200]
        if progress.percent is not None:
            self.percent = progress.percent
        if time.monotonic() - self.flushed_at >= BUILD_FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        changes: dict = {"step": self.step}
        if self.lines:
            changes["log"] = Concat(F("log"), Value("\n".join(self.lines) + "\n"))
        if self.percent is not None:
            changes["progress"] = min(self.percent, 99.0)
        ImageBuild.objects.filter(pk=self.build_id).update(**changes)
        self.lines.clear()
        self.flushed_at = time.monotonic()
