"""Reading environments: who sees which, their revisions with what changed between them, and
what a person may launch."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet

from portal.catalog.environments.packages import (
    PackageDiff,
    package_diff,
    versions_of_list,
    versions_of_requirements,
)
from portal.catalog.models import Environment, EnvironmentRevision, ImageBuild, ImageRevision, TeamEnvironmentDefault

REVISION_RELATED = ("image_revision", "base_revision__image", "profile", "created_by")


def environment_list_visible_to(*, user) -> QuerySet[Environment]:
    """Environments a person may see, each with its revisions (newest first), in three queries."""
    revisions = EnvironmentRevision.objects.select_related(*REVISION_RELATED).order_by("-number")
    return (
        Environment.objects.visible_to(user)
        .select_related("team", "image", "created_by")
        .prefetch_related(Prefetch("revisions", queryset=revisions, to_attr="revision_list"))
        .order_by("slug")
    )


def environment_get_visible(*, user, slug: str) -> Environment:
    """Raises Environment.DoesNotExist for unknown and invisible alike (outsiders get 404)."""
    return environment_list_visible_to(user=user).get(slug=slug)


def environment_revision_list(*, environment: Environment) -> list[EnvironmentRevision]:
    """Newest first, each with `changes` (a PackageDiff against the revision before it) and
    `builds` (newest first)."""
    builds = ImageBuild.objects.order_by("-created_at")
    revisions = list(
        environment.revisions.select_related(*REVISION_RELATED)
        .prefetch_related(Prefetch("image_revision__builds", queryset=builds))
        .order_by("-number")
    )
    for newer, older in zip(revisions, [*revisions[1:], None], strict=True):
        newer.changes = revision_changes(older, newer)
    return revisions


@dataclass(frozen=True)
class RevisionChanges:
    """What changed from one revision to the next: packages (installed ones when both are
    built, else what the recipes ask for), and the rest of the recipe."""

    packages: PackageDiff
    installed: bool  # True: compared what the builds installed; False: the requirement lines
    recipe: tuple[str, ...]  # sentences: "apt: +git", "env: +LOG_LEVEL", "start-up script changed"

    def as_dict(self) -> dict:
        return {**self.packages.as_dict(), "compared": "installed" if self.installed else "requested",
                "recipe": list(self.recipe)}  # fmt: skip


def revision_changes(older: EnvironmentRevision | None, newer: EnvironmentRevision) -> RevisionChanges:
    if older is None:
        return RevisionChanges(packages=PackageDiff(), installed=False, recipe=())
    built = older.is_ready and newer.is_ready and older.image_revision.packages and newer.image_revision.packages
    if built:
        diff = package_diff(
            versions_of_list(older.image_revision.packages), versions_of_list(newer.image_revision.packages)
        )
    else:
        diff = package_diff(
            versions_of_requirements(older.pip_requirements), versions_of_requirements(newer.pip_requirements)
        )
    return RevisionChanges(packages=diff, installed=bool(built), recipe=tuple(_recipe_changes(older, newer)))


def _recipe_changes(older: EnvironmentRevision, newer: EnvironmentRevision) -> list[str]:
    said = []
    if older.base_digest != newer.base_digest:
        said.append(
            f"base: {older.base_revision.image.slug} → {newer.base_revision.image.slug} ({newer.base_digest[:19]})"
        )
    for label, before, after in (
        ("apt", set(older.apt_packages), set(newer.apt_packages)),
        ("env", set(older.env), set(newer.env)),
        ("secret env", set(older.secret_env_names), set(newer.secret_env_names)),
    ):
        moved = [f"+{n}" for n in sorted(after - before)] + [f"−{n}" for n in sorted(before - after)]
        if moved:
            said.append(f"{label}: {' '.join(moved)}")
    changed_values = sorted(n for n in set(older.env) & set(newer.env) if older.env[n] != newer.env[n])
    if changed_values:
        said.append("env changed: " + ", ".join(changed_values))
    if older.profile_id != newer.profile_id:
        said.append(f"profile: {newer.profile.slug if newer.profile else 'none'}")
    if older.startup_script != newer.startup_script:
        said.append("start-up script changed")
    return said


def environment_latest_build(*, environment: Environment) -> ImageBuild | None:
    return (
        ImageBuild.objects.filter(revision__image_id=environment.image_id)
        .select_related("revision__image")
        .order_by("-created_at")
        .first()
    )


def environment_build_get(*, environment: Environment, build_id: int) -> ImageBuild:
    """A build of this environment (Raises ImageBuild.DoesNotExist for any other)."""
    return ImageBuild.objects.select_related("revision__image").get(
        pk=build_id, revision__image_id=environment.image_id
    )


def environment_launch_choices(*, user, workspace: bool = False) -> list[EnvironmentRevision]:
    """Built revisions a person may launch, newest first per environment; for workspaces only
    those whose image starts JupyterLab."""
    revisions = (
        EnvironmentRevision.objects.filter(
            environment__in=Environment.objects.visible_to(user), image_revision__status=ImageRevision.Status.READY
        )
        .select_related("environment__image", "image_revision")
        .order_by("environment__slug", "-number")
    )
    if workspace:
        revisions = revisions.exclude(environment__image__default_command=[])
    return list(revisions)


def team_defaults(*, teams) -> dict[int, EnvironmentRevision]:
    """Team id → its default environment revision, for the teams given."""
    rows = TeamEnvironmentDefault.objects.filter(team__in=teams).select_related("revision__environment")
    return {row.team_id: row.revision for row in rows}


def environment_labels(*, revision_ids) -> dict[int, str]:
    """`<slug>@<number>` of each revision id, in one query (none when no id is given)."""
    ids = {pk for pk in revision_ids if pk}
    if not ids:
        return {}
    rows = EnvironmentRevision.objects.filter(pk__in=ids).values_list("pk", "environment__slug", "number")
    return {pk: f"{slug}@{number}" for pk, slug, number in rows}
