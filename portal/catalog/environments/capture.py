"""Saving a running workspace as an environment: what the person installed in it, against its
image, pinned into a new revision that is built from the recipe (never by committing the
container)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from portal.accounts.models import User
from portal.audit.services import Actor, audit_record
from portal.catalog import dockerfile
from portal.catalog.environments.packages import (
    PackageDiff,
    package_diff,
    python_version_of_venv,
    requirements_pinned,
    site_packages_versions,
    versions_of_list,
)
from portal.catalog.environments.services import (
    CleanRecipe,
    Origin,
    environment_make,
    environment_require_launchable,
    require_manager,
    require_member,
    revision_add,
    revision_audit_details,
)
from portal.catalog.models import Environment, EnvironmentRevision, ImageBuild
from portal.catalog.services import build_queue
from portal.core.secrets import secrets_open
from portal.runtime import RuntimeError_, get_backend


@dataclass(frozen=True)
class WorkspacePackages:
    """What a person installed in a running workspace, against its image's own packages."""

    diff: PackageDiff

    @property
    def proposed(self) -> list[str]:
        """Pins for what was added or changed (removals are not carried into a recipe)."""
        return [f"{c.name}=={c.after}" for c in self.diff.changes if c.after]


def environment_workspace_packages(*, workspace, by: User) -> WorkspacePackages:
    """Compares the packages in the workspace's venv now (read from the running container)
    with those its image was built with."""
    from workspaces.models import WorkspaceState

    if workspace.owner_id != by.pk:
        raise PermissionDenied("Only the workspace's owner can save it as an environment.")
    if workspace.state != WorkspaceState.RUNNING:
        raise ValidationError(f"{workspace.name} is {workspace.state}; start it to read its packages.")
    backend = get_backend()
    handle = backend.handle_for(workspace.uid)
    image_packages = versions_of_list(workspace.image_revision.packages)
    try:
        config = _small_file_text(backend.archive_get(handle, f"{dockerfile.VENV}/pyvenv.cfg"))
        version = python_version_of_venv(config)
        chunks = backend.archive_get(handle, f"{dockerfile.VENV}/lib/python{version}/site-packages")
        now = site_packages_versions(chunks)
    except RuntimeError_ as error:
        if error.reason != "not_found":
            raise
        raise ValidationError(
            f"{workspace.name} has no Python virtualenv at {dockerfile.VENV}: only images Dockyard built can be saved."
        ) from None
    return WorkspacePackages(diff=package_diff(image_packages, now))


def _small_file_text(chunks) -> str:
    from jobs.archives import tar_single_file

    return tar_single_file(chunks, limit=64 * 1024).decode("utf-8", "replace")


def environment_save_from_workspace(
    *, workspace, by: User, actor: Actor, packages: list[str] | None = None, into: Environment | None = None,
    slug: str = "", name: str = "",
) -> tuple[EnvironmentRevision, ImageBuild]:  # fmt: skip
    """A new environment revision with the packages the person installed in the workspace,
    pinned, added to the recipe the workspace started from, and its build queued: rebuilt
    from the recipe, never by committing the container. `packages` limits it to some of the
    proposed pins; `into` revises the environment the workspace was started from, else a new
    environment (slug, name) is made in the workspace's team."""
    found = environment_workspace_packages(workspace=workspace, by=by)
    proposed = found.proposed
    chosen = proposed if packages is None else [p for p in proposed if p in set(packages)]
    unknown = sorted(set(packages or ()) - set(proposed))
    if unknown:
        raise ValidationError({"packages": f"Not among the proposed packages: {', '.join(unknown)}."})
    if not chosen:
        raise ValidationError({"packages": "Nothing to save: no package was added or changed in the workspace."})
    start = workspace.environment_revision
    if start is not None:  # its recipe and secrets are copied: only for those who may launch it
        environment_require_launchable(revision=start, user=by, team=workspace.team)
    if into is not None:
        if start is None or into.pk != start.environment_id:
            raise ValidationError({"environment": "A workspace is saved into the environment it started from."})
        require_manager(environment=into, by=by, actor=actor, action="environment.revise")
    else:
        require_member(by, workspace.team)
    cleaned = _cleaned_from_workspace(workspace, start, chosen)
    note = f"Saved from workspace {workspace.owner.username}/{workspace.name}: " + ", ".join(chosen)
    with transaction.atomic():
        environment = into or environment_make(
            slug=slug, name=name, description="", team=workspace.team, shared=False,
            base=cleaned.base_revision.image, by=by,
        )  # fmt: skip
        revision = revision_add(environment=environment, cleaned=cleaned, origin=Origin.WORKSPACE, by=by, note=note)
        audit_record(
            actor=actor,
            action="environment.revise" if into is not None else "environment.create",
            target=environment,
            team=environment.team,
            details={**revision_audit_details(revision), "workspace": str(workspace.pk), "added": chosen},
        )
        build, _ = build_queue(revision=revision.image_revision, by=by)
        audit_record(
            actor=actor, action="environment.build", target=environment, team=environment.team,
            details={"revision": revision.number, "build": build.pk, "from_lock": False},
        )  # fmt: skip
    return revision, build


def _cleaned_from_workspace(workspace, start: EnvironmentRevision | None, pins: list[str]) -> CleanRecipe:
    if start is None:
        return CleanRecipe(
            base_revision=workspace.image_revision, pip=pins, apt=[], env={}, secrets={}, profile=workspace.profile,
            startup_script="",
        )  # fmt: skip
    return CleanRecipe(
        base_revision=start.base_revision, pip=requirements_pinned(start.pip_requirements, pins),
        apt=start.apt_packages, env=start.env, secrets=secrets_open(start.secret_env), profile=start.profile,
        startup_script=start.startup_script,
    )  # fmt: skip
