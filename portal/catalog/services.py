"""Every change to the catalog: images, revisions, builds, deprecation. All audited."""

from __future__ import annotations

import time
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
from portal.runtime.base import Progress

# Build logs and progress are written to the database at most this often (seconds), so a
# chatty build does not turn every output line into a write; pages poll at about this rate.
BUILD_FLUSH_INTERVAL_S = 1.0


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
    from portal.catalog.tasks import build_image_task

    revision = revision or image.revisions.order_by("-number").first()
    if revision is None or revision.image_id != image.pk:
        raise ValidationError("This image has no revision to build.")
    with transaction.atomic():
        existing = ImageBuild.objects.filter(revision=revision, status__in=ImageBuild.Status.active()).first()
        if existing is not None:
            return existing
        build = ImageBuild.objects.create(revision=revision, requested_by=by)
        ImageRevision.objects.filter(pk=revision.pk).update(status=ImageRevision.Status.BUILDING)
        _refresh_status(image)
        audit_record(
            actor=actor, action="image.build", target=image, details={"revision": revision.number, "build": build.pk}
        )
        build_image_task.delay_on_commit(build.pk)
    return build


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
    """Builds or pulls the revision, streaming progress and log, then records the outcome."""
    build = build_claim(build_id=build_id)
    if build is None:
        return
    revision = build.revision
    sink = _BuildLog(build.pk)
    backend = get_backend()
    try:
        if revision.source_type == SourceType.PULL:
            info = backend.ensure_image(revision.pull_ref, on_progress=sink)
        else:
            context = dockerfile.render(
                dockerfile.BuildSpec(
                    base_image=revision.base_image,
                    apt_packages=tuple(revision.apt_packages),
                    pip_requirements=tuple(revision.pip_requirements),
                ),
                ca_bundle=_ca_bundle(),
                pip_index_url=settings.DOCKYARD_PIP_INDEX_URL,
            )
            sink(Progress(0, context.dockerfile))
            info = backend.build_image(
                dockerfile=context.dockerfile,
                tag=revision.tag,
                files={k: v for k, v in context.files.items() if k != "Dockerfile"},
                labels={"dockyard.image": revision.image.slug, "dockyard.revision": str(revision.number)},
                on_progress=sink,
            )
        packages = backend.image_python_packages(info.digest)
    except RuntimeError_ as error:
        sink.flush()
        if not error.permanent:
            raise  # the task retries with backoff; the build stays `running`
        _build_failed(build, error)
        return
    sink.flush()
    _build_succeeded(build, digest=info.digest, size=info.size_bytes, packages=packages)


def build_give_up(*, build_id: int, error: RuntimeError_) -> None:
    """Marks a build failed after its retries ran out."""
    build = ImageBuild.objects.select_related("revision__image").get(pk=build_id)
    if build.is_active:
        _build_failed(build, error)


def _ca_bundle() -> bytes | None:
    path = settings.DOCKYARD_BUILD_CA_BUNDLE
    return Path(path).read_bytes() if path else None


def _build_succeeded(build: ImageBuild, *, digest: str, size: int, packages: list) -> None:
    now = timezone.now()
    with transaction.atomic():
        ImageBuild.objects.filter(pk=build.pk).update(
            status=ImageBuild.Status.SUCCEEDED, progress=100, step="Done", finished_at=now
        )
        revision = build.revision
        ImageRevision.objects.filter(pk=revision.pk).update(
            status=ImageRevision.Status.READY, digest=digest, size_bytes=size, packages=packages, built_at=now
        )
        image = Image.objects.select_for_update().get(pk=revision.image_id)
        # A newer revision already in use is not replaced by an older one finishing late.
        if image.current_revision is None or image.current_revision.number <= revision.number:
            image.current_revision_id = revision.pk
            image.save(update_fields=["current_revision", "updated_at"])
        _refresh_status(image)
        audit_record(
            actor=Actor.system(),
            action="image.build_finish",
            target=image,
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
            action="image.build_finish",
            target=image,
            outcome=Outcome.ERROR,
            details={"revision": build.revision.number, "build": build.pk, "error": error.user_message[:500]},
        )


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
