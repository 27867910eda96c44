"""Every change to an environment: define, revise, build, share, team default, and what
workspaces and jobs call to launch one. Each is audited; secret values stay sealed
(`portal.core.secrets`) everywhere but in the env of the containers that use them. Saving a
workspace as an environment is in `capture`, export and import in `exchange`; both build on
the helpers here (`recipe_checked`, `environment_make`, `revision_add`).

Builds go through the catalog's machinery (`build_queue`, `build_run`): an environment revision
is one revision of the environment's own (hidden) catalog image, with the same progress and log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from jobs import spec as job_rules
from portal.accounts.models import Membership, Team, User, slug_validator
from portal.accounts.services import user_can_manage_team
from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.catalog import dockerfile
from portal.catalog.models import (
    Environment,
    EnvironmentRevision,
    Image,
    ImageBuild,
    ImageRevision,
    SourceType,
    TeamEnvironmentDefault,
)
from portal.catalog.services import build_queue, image_require_startable
from portal.core.secrets import MASK, secrets_open, secrets_seal
from portal.quotas.models import ResourceProfile

# Words the pages and the API use after /environments/; no environment may be called so.
RESERVED_SLUGS = frozenset({"new", "import", "from-workspace"})
# An environment's builds live in a hidden catalog image called this plus its slug.
IMAGE_PREFIX = "env-"
SLUG_MAX = 36  # the image's slug (prefix included) fits the catalog's 40
Origin = EnvironmentRevision.Origin


@dataclass(frozen=True)
class Recipe:
    """What a person asks an environment to be; checked by `recipe_clean`.

    In `secret_env`, a value of ******** keeps the value the previous revision had, so a form
    or a script can resend the masked values it was shown.
    """

    base_image: Image
    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    profile: ResourceProfile | None = None
    startup_script: str = ""


@dataclass(frozen=True)
class CleanRecipe:
    """A checked recipe, ready to become a revision (secret values in the clear, in memory only)."""

    base_revision: ImageRevision
    pip: list[str]
    apt: list[str]
    env: dict[str, str]
    secrets: dict[str, str]
    profile: ResourceProfile | None
    startup_script: str

    @property
    def base_digest(self) -> str:
        return self.base_revision.digest

    def same_as(self, revision: EnvironmentRevision) -> bool:
        return (
            self.base_digest == revision.base_digest
            and self.pip == revision.pip_requirements
            and self.apt == revision.apt_packages
            and self.env == revision.env
            and self.secrets == secrets_open(revision.secret_env)
            and (self.profile.pk if self.profile else None) == revision.profile_id
            and self.startup_script == revision.startup_script
        )


# --- Defining and revising ------------------------------------------------------------------------


def environment_create(
    *, slug: str, name: str, team: Team, recipe: Recipe, by: User, actor: Actor, description: str = "",
    shared: bool = True,
) -> Environment:  # fmt: skip
    """A new environment in a team with its first revision (not built yet: see environment_build)."""
    require_member(by, team)
    cleaned = recipe_clean(recipe=recipe, user=by, previous=None)
    with transaction.atomic():
        environment = environment_make(
            slug=slug, name=name, description=description, team=team, shared=shared, base=recipe.base_image, by=by
        )
        revision = revision_add(environment=environment, cleaned=cleaned, origin=Origin.RECIPE, by=by)
        audit_record(
            actor=actor,
            action="environment.create",
            target=environment,
            team=team,
            details={"shared": shared, **revision_audit_details(revision)},
        )
    return environment


def environment_revise(*, environment: Environment, recipe: Recipe, by: User, actor: Actor) -> EnvironmentRevision:
    """A new revision of the recipe. Launches keep using the revision they name; the new one
    is used once it is built and someone launches it (or a team admin makes it the default)."""
    require_manager(environment=environment, by=by, actor=actor, action="environment.revise")
    previous = revision_latest(environment)
    cleaned = recipe_clean(recipe=recipe, user=by, previous=previous)
    if cleaned.same_as(previous):
        raise ValidationError(f"Nothing changed: the recipe is the same as revision {previous.number}.")
    with transaction.atomic():
        revision = revision_add(environment=environment, cleaned=cleaned, origin=Origin.RECIPE, by=by)
        _sync_image(environment, cleaned.base_revision.image)
        audit_record(
            actor=actor,
            action="environment.revise",
            target=environment,
            team=environment.team,
            details=revision_audit_details(revision),
        )
    return revision


def environment_make(
    *, slug: str, name: str, description: str, team: Team, shared: bool, base: Image, by: User
) -> Environment:
    """The environment row and the hidden catalog image that holds its builds (in the caller's
    transaction). The image copies what workloads need from the base: its Jupyter command, GPU
    ability, framework facts."""
    slug_check(slug)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError({"name": "Give the environment a name of 1 to 100 characters."})
    try:
        with transaction.atomic():
            image = Image.objects.create(slug=IMAGE_PREFIX + slug, name=name, all_teams=False, created_by=by)
            image.teams.set([team])
            environment = Environment.objects.create(
                slug=slug, name=name, description=description or "", team=team, shared=shared, image=image,
                created_by=by,
            )  # fmt: skip
    except IntegrityError:
        raise ValidationError({"slug": f"The name {slug} is taken; choose another slug."}) from None
    _sync_image(environment, base)
    return environment


def _sync_image(environment: Environment, base: Image) -> None:
    fields = ("description", "framework", "framework_version", "python_version", "cuda_version", "gpu_capable",
              "default_command")  # fmt: skip
    Image.objects.filter(pk=environment.image_id).update(
        name=environment.name, **{name: getattr(base, name) for name in fields}
    )


def slug_check(slug: str) -> None:
    if slug in RESERVED_SLUGS:
        raise ValidationError({"slug": f"{slug} is a reserved word; choose another slug."})
    if len(slug) > SLUG_MAX:
        raise ValidationError({"slug": f"Use at most {SLUG_MAX} characters."})
    error_renamed(slug_validator, slug, "slug")


def revision_add(
    *, environment: Environment, cleaned: CleanRecipe, origin: str, by: User | None, note: str = "", from_lock=()
) -> EnvironmentRevision:
    """Revision N of the environment and revision N of its image (same number), not built."""
    Environment.objects.select_for_update().filter(pk=environment.pk).first()  # numbers one at a time
    number = (environment.revisions.aggregate(n=Max("number"))["n"] or 0) + 1
    image_revision = ImageRevision.objects.create(
        image_id=environment.image_id, number=number, source_type=SourceType.BUILD, base_image=cleaned.base_digest,
        apt_packages=cleaned.apt, pip_requirements=cleaned.pip, created_by=by,
    )  # fmt: skip
    return EnvironmentRevision.objects.create(
        environment=environment, number=number, image_revision=image_revision, base_revision=cleaned.base_revision,
        base_digest=cleaned.base_digest, pip_requirements=cleaned.pip, apt_packages=cleaned.apt,
        from_lock=list(from_lock), env=cleaned.env, secret_env=secrets_seal(cleaned.secrets),
        secret_env_names=sorted(cleaned.secrets), profile=cleaned.profile, startup_script=cleaned.startup_script,
        origin=origin, note=note[:300], created_by=by,
    )  # fmt: skip


def recipe_clean(*, recipe: Recipe, user: User, previous: EnvironmentRevision | None) -> CleanRecipe:
    """Checks everything a person can get wrong, naming the field."""
    base = recipe.base_image
    if base is None or not Image.objects.visible_to(user).filter(pk=base.pk).exists():
        raise ValidationError({"base_image": "Choose a catalog image you can use as the base."})
    try:
        base_revision = image_require_startable(image=base)
    except ValidationError as error:
        raise ValidationError({"base_image": error.messages}) from None
    return recipe_checked(recipe=recipe, base_revision=base_revision, previous=previous)


def recipe_checked(
    *, recipe: Recipe, base_revision: ImageRevision, previous: EnvironmentRevision | None
) -> CleanRecipe:
    """The recipe's values checked, on a given base revision; ******** secrets take their
    values from `previous`."""
    pip = error_renamed(dockerfile.clean_pip_requirements, list(recipe.pip), "pip")
    apt = error_renamed(dockerfile.clean_apt_packages, list(recipe.apt), "apt")
    env = job_rules.env_clean(recipe.env, field="env")
    secrets = job_rules.env_clean(recipe.secret_env, field="secret_env")
    if set(env) & set(secrets):
        raise ValidationError({"secret_env": "A variable is either in env or in secret_env, not both."})
    kept = secrets_open(previous.secret_env) if previous else {}
    for name, value in secrets.items():
        if value == MASK:
            if name not in kept:
                raise ValidationError({"secret_env": f"{name}: there is no earlier value to keep; give one."})
            secrets[name] = kept[name]
    if recipe.profile is not None and not recipe.profile.is_active:
        raise ValidationError({"profile": f"The profile {recipe.profile.slug} is not offered any more."})
    return CleanRecipe(
        base_revision=base_revision, pip=pip, apt=apt, env=env, secrets=secrets, profile=recipe.profile,
        startup_script=dockerfile.clean_startup_script(recipe.startup_script),
    )  # fmt: skip


def error_renamed(check, value, field_name: str):
    try:
        return check(value)
    except ValidationError as error:
        raise ValidationError({field_name: error.messages}) from None


def revision_audit_details(revision: EnvironmentRevision) -> dict:
    """What the audit log keeps of a revision: the recipe, with env names but no values."""
    return {
        "revision": revision.number,
        "base": revision.base_revision.image.slug,
        "base_digest": revision.base_digest,
        "pip": revision.pip_requirements,
        "apt": revision.apt_packages,
        "env_names": sorted(revision.env),
        "secret_names": revision.secret_env_names,
        "profile": revision.profile.slug if revision.profile else None,
        "startup_script": bool(revision.startup_script),
        "origin": revision.origin,
        "locked": bool(revision.from_lock),
    }


# --- Building ---------------------------------------------------------------------------------------


def environment_build(
    *, environment: Environment, by: User, actor: Actor, revision: EnvironmentRevision | None = None
) -> ImageBuild:
    """Builds a revision (the latest by default) on the `builds` queue, with the catalog's
    live progress and log. A revision that is already built is never rebuilt in place: asking
    again makes a new revision from its lock (`pip install --require-hashes --no-deps`), so the
    digest a workload recorded always stays what it was. Asking while a build runs returns it."""
    require_manager(environment=environment, by=by, actor=actor, action="environment.build")
    target = revision or revision_latest(environment)
    with transaction.atomic():
        if target.is_ready:
            target = _revision_from_lock(target, by=by)
        build, created = build_queue(revision=target.image_revision, by=by)
        if created:
            audit_record(
                actor=actor,
                action="environment.build",
                target=environment,
                team=environment.team,
                details={"revision": target.number, "build": build.pk, "from_lock": bool(target.from_lock)},
            )
    return build


def _revision_from_lock(source: EnvironmentRevision, *, by: User) -> EnvironmentRevision:
    cleaned = CleanRecipe(
        base_revision=source.base_revision, pip=source.pip_requirements, apt=source.apt_packages, env=source.env,
        secrets=secrets_open(source.secret_env), profile=source.profile, startup_script=source.startup_script,
    )  # fmt: skip
    return revision_add(
        environment=source.environment, cleaned=cleaned, origin=Origin.LOCK, by=by,
        note=f"Rebuilt from the lock of revision {source.number}", from_lock=source.lock,
    )  # fmt: skip


def environment_build_spec(revision: EnvironmentRevision) -> dockerfile.BuildSpec:
    """What the catalog's build renders for a revision: on its exact base digest, from its lock
    when it has one. A pulled base (e.g. a CUDA framework image) keeps its own packages
    visible in the new virtualenv."""
    return dockerfile.BuildSpec(
        base_image=revision.base_digest,
        apt_packages=tuple(revision.apt_packages),
        pip_requirements=tuple(revision.pip_requirements),
        pip_lock=tuple(revision.from_lock),
        startup_script=revision.startup_script,
        system_site_packages=revision.base_revision.source_type == SourceType.PULL,
    )


# --- Sharing and the team default ------------------------------------------------------------------


def environment_share(*, environment: Environment, shared: bool, by: User, actor: Actor) -> Environment:
    """Shared: every member of the team sees and launches it. Private: only its creator."""
    require_manager(environment=environment, by=by, actor=actor, action="environment.share")
    if not shared and _default_of(environment.team, environment) is not None:
        raise ValidationError("This environment is the team's default: choose another default first.")
    with transaction.atomic():
        Environment.objects.filter(pk=environment.pk).update(shared=shared)
        environment.shared = shared
        audit_record(
            actor=actor, action="environment.share", target=environment, team=environment.team,
            details={"shared": shared},
        )  # fmt: skip
    return environment


def environment_default_set(*, team: Team, revision: EnvironmentRevision | None, by: User, actor: Actor) -> None:
    """Team admins choose the revision new workspaces and jobs of the team start from when
    they name no image or environment (None: no default)."""
    ref = revision.ref if revision else None
    if not user_can_manage_team(user=by, team=team):
        audit_record(
            actor=actor, action="environment.default_set", team=team, outcome=Outcome.DENIED,
            target=revision.environment if revision else team, details={"revision": ref},
        )  # fmt: skip
        raise PermissionDenied(f"Only team admins of {team.slug} can choose its default environment.")
    if revision is not None:
        if revision.environment.team_id != team.pk or not revision.environment.shared:
            raise ValidationError("The default must be a shared environment of the team.")
        if not revision.is_ready:
            raise ValidationError(f"{revision.ref} is not built; build it first.")
    with transaction.atomic():
        if revision is None:
            TeamEnvironmentDefault.objects.filter(team=team).delete()
        else:
            TeamEnvironmentDefault.objects.update_or_create(team=team, defaults={"revision": revision, "set_by": by})
        audit_record(
            actor=actor, action="environment.default_set", target=revision.environment if revision else team,
            team=team, details={"revision": ref},
        )  # fmt: skip


def environment_team_default(*, team: Team) -> EnvironmentRevision | None:
    row = TeamEnvironmentDefault.objects.filter(team=team).select_related("revision__environment").first()
    return row.revision if row else None


def _default_of(team: Team, environment: Environment) -> TeamEnvironmentDefault | None:
    return TeamEnvironmentDefault.objects.filter(team=team, revision__environment=environment).first()


# --- Launching: what workspaces and jobs call ------------------------------------------------------


def environment_revision_resolve(*, user: User, ref: str) -> EnvironmentRevision:
    """`<slug>@<number>` (or `<slug>` for its newest built revision) among the environments a
    person may see. Unknown and invisible read the same, so nothing leaks about other teams."""
    slug, _, number = (ref or "").strip().partition("@")
    environment = Environment.objects.visible_to(user).filter(slug=slug).first()
    if environment is None:
        raise ValidationError({"environment": f"There is no environment {slug!r} you can use."})
    revisions = environment.revisions.select_related("image_revision", "environment__team")
    if number:
        if not number.isdigit():
            raise ValidationError({"environment": "Name a revision as <slug>@<number>, e.g. churn@3."})
        revision = revisions.filter(number=int(number)).first()
    else:
        revision = revisions.filter(image_revision__status=ImageRevision.Status.READY).order_by("-number").first()
    if revision is None:
        raise ValidationError({"environment": f"{slug} has no built revision {number or ''}".strip() + "."})
    _require_visible_and_built(revision=revision, user=user)
    return revision


def environment_require_launchable(*, revision: EnvironmentRevision, user: User, team: Team) -> None:
    """The one check before a workload starts from an environment revision (submit, rerun,
    workspace create, open in workspace, save as environment): the environment belongs to the
    workload's team, the person may see it (the team's shared ones and their own private
    ones; staff are no exception here, as workloads of one team never run another's recipe
    and secrets), and the revision is built."""
    environment = revision.environment
    if environment.team_id != team.pk:
        raise ValidationError(
            {"environment": f"{environment.slug} belongs to another team: workloads of {team.slug} cannot use it."}
        )
    mine = Q(shared=True) | Q(created_by=user)
    if not Environment.objects.filter(mine, pk=environment.pk, team__memberships__user=user).exists():
        raise ValidationError({"environment": f"There is no environment {environment.slug!r} you can use."})
    _require_built(revision)


def _require_visible_and_built(*, revision: EnvironmentRevision, user: User) -> None:
    if not Environment.objects.visible_to(user).filter(pk=revision.environment_id).exists():
        raise ValidationError({"environment": f"There is no environment {revision.environment.slug!r} you can use."})
    _require_built(revision)


def _require_built(revision: EnvironmentRevision) -> None:
    if not revision.is_ready:
        raise ValidationError(
            {"environment": f"{revision.ref} is not built (status: {revision.image_revision.get_status_display()})."}
        )


def environment_workload_env(revision: EnvironmentRevision | None) -> dict[str, str]:
    """The env vars a workload gets from its environment, secret values decrypted."""
    if revision is None:
        return {}
    return {**revision.env, **secrets_open(revision.secret_env)}


def environment_workload_command(revision: EnvironmentRevision | None, command: tuple[str, ...]) -> tuple[str, ...]:
    """The workload's command, run after the environment's start-up script when it has one."""
    if revision is None or not revision.startup_script:
        return tuple(command)
    return dockerfile.startup_command(tuple(command))


# --- Small shared checks ----------------------------------------------------------------------------


def revision_latest(environment: Environment) -> EnvironmentRevision:
    return environment.revisions.select_related("image_revision", "base_revision__image").order_by("-number").first()


def revision_latest_ready(environment: Environment) -> EnvironmentRevision | None:
    return (
        environment.revisions.select_related("image_revision", "base_revision__image")
        .filter(image_revision__status=ImageRevision.Status.READY)
        .order_by("-number")
        .first()
    )


def environment_may_manage(*, environment: Environment, user: User) -> bool:
    return Environment.objects.manageable_by(user).filter(pk=environment.pk).exists()


def require_manager(*, environment: Environment, by: User, actor: Actor, action: str) -> None:
    """Its creator, and team admins for shared ones (and staff); the refusal is audited."""
    if environment_may_manage(environment=environment, user=by):
        return
    audit_record(actor=actor, action=action, target=environment, team=environment.team, outcome=Outcome.DENIED)
    raise PermissionDenied("Only the environment's creator or a team admin can change it.")


def require_member(user: User, team: Team) -> None:
    if not Membership.objects.filter(user=user, team=team).exists():
        raise ValidationError({"team": f"You are not a member of {team.slug}."})
