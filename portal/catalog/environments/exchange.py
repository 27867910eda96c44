"""Export and import: an environment revision as a small YAML file (base slug and digest,
requirements and lock, env names, profile), and recreating one from such a file."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from portal.accounts.models import Team, User
from portal.audit.services import Actor, audit_record
from portal.catalog import dockerfile
from portal.catalog.environments import envfile
from portal.catalog.environments.services import (
    Origin,
    Recipe,
    environment_make,
    error_renamed,
    recipe_checked,
    require_member,
    revision_add,
    revision_audit_details,
    revision_latest,
    revision_latest_ready,
    slug_check,
)
from portal.catalog.models import Environment, EnvironmentRevision, Image, ImageRevision, ImageStatus
from portal.catalog.services import image_require_startable
from portal.quotas.models import ResourceProfile

FILE_MAX_BYTES = 256 * 1024  # an exported file is a few KiB: anything this big is something else


def environment_file_text(upload) -> str:
    """The text of an uploaded environment file; ValidationError if too big or not text."""
    if upload.size > FILE_MAX_BYTES:
        raise ValidationError(f"The file is larger than {FILE_MAX_BYTES // 1024} KiB.")
    try:
        return upload.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("The file is not UTF-8 text: choose the YAML file Dockyard exported.") from None


def environment_export(
    *, environment: Environment, by: User, actor: Actor, revision: EnvironmentRevision | None = None
) -> tuple[str, str]:
    """(file name, YAML) of a revision, the newest built one by default: base slug and digest,
    requirements and lock, env (secret names only), profile, start-up script."""
    revision = revision or revision_latest_ready(environment) or revision_latest(environment)
    document = envfile.EnvironmentFile(
        slug=environment.slug, name=environment.name, description=environment.description, revision=revision.number,
        base_image=revision.base_revision.image.slug, base_digest=revision.base_digest,
        apt=tuple(revision.apt_packages), pip=tuple(revision.pip_requirements), lock=tuple(revision.lock),
        env=dict(revision.env), secret_env=tuple(revision.secret_env_names),
        profile=revision.profile.slug if revision.profile else "", startup_script=revision.startup_script,
    )  # fmt: skip
    with transaction.atomic():
        audit_record(
            actor=actor, action="environment.export", target=environment, team=environment.team,
            details={"revision": revision.number, "locked_packages": len(revision.lock)},
        )  # fmt: skip
    return f"{environment.slug}-r{revision.number}.yaml", envfile.dump(document)


@dataclass(frozen=True)
class ImportResult:
    environment: Environment | None  # None for a dry run
    warnings: list[str]


def environment_import(
    *, text: str, team: Team, by: User, actor: Actor, slug: str = "", name: str = "", dry_run: bool = False
) -> ImportResult:
    """Recreates an exported environment in a team, from its lock: the first build installs
    exactly the locked files on the same base digest when this Dockyard has it. What cannot be
    honoured is said: an unknown base (refused), another base digest, secret values (not in
    files), an unknown profile. A dry run only checks."""
    require_member(by, team)
    document = envfile.parse(text)
    warnings: list[str] = []
    base = Image.objects.visible_to(by).filter(slug=document.base_image).first()
    if base is None:
        raise ValidationError({"base": f"There is no catalog image {document.base_image!r} here to build on."})
    base_revision = _import_base(base, document.base_digest, warnings)
    lock = error_renamed(dockerfile.clean_pip_lock, list(document.lock), "lock")
    if not lock and document.pip:
        warnings.append("The file has no lock: the pip requirements are resolved afresh, versions may differ.")
    profile = (
        ResourceProfile.objects.filter(slug=document.profile, is_active=True).first() if document.profile else None
    )
    if document.profile and profile is None:
        warnings.append(f"There is no profile {document.profile!r} here: the environment has no default profile.")
    if document.secret_env:
        warnings.append(
            "Secret values are never exported: set " + ", ".join(document.secret_env) + " in a new revision."
        )
    recipe = Recipe(
        base_image=base, pip=document.pip, apt=document.apt, env=document.env, profile=profile,
        startup_script=document.startup_script,
    )  # fmt: skip
    cleaned = recipe_checked(recipe=recipe, base_revision=base_revision, previous=None)
    slug, name = slug or document.slug, name or document.name
    if dry_run:
        slug_check(slug)
        if Environment.objects.filter(slug=slug).exists():
            warnings.append(f"An environment called {slug} exists: give another slug to import it.")
        return ImportResult(environment=None, warnings=warnings)
    with transaction.atomic():
        environment = environment_make(
            slug=slug, name=name, description=document.description, team=team, shared=True, base=base, by=by
        )
        revision = revision_add(
            environment=environment, cleaned=cleaned, origin=Origin.IMPORT, by=by, from_lock=lock,
            note=f"Imported from {document.slug}" + (f"@{document.revision}" if document.revision else ""),
        )  # fmt: skip
        audit_record(
            actor=actor, action="environment.import", target=environment, team=team,
            details={**revision_audit_details(revision), "source": document.slug, "warnings": warnings},
        )  # fmt: skip
    return ImportResult(environment=environment, warnings=warnings)


def _import_base(base: Image, digest: str, warnings: list[str]) -> ImageRevision:
    """The base revision with the file's digest when this Dockyard has it built; else the
    image's current revision, with a warning saying the base differs."""
    exact = base.revisions.filter(digest=digest, status=ImageRevision.Status.READY).first() if digest else None
    if exact is not None and base.status != ImageStatus.DEPRECATED:
        return exact
    try:
        current = image_require_startable(image=base)
    except ValidationError as error:
        raise ValidationError({"base": error.messages}) from None
    warnings.append(
        f"The base {base.slug} here is {current.digest}, not {digest or 'the digest of the file'}: "
        "the environment is built on this one."
    )
    return current
