"""Setting limits: staff set team quotas; team admins split their team's quota among members."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from portal.accounts.models import Membership, Team, User
from portal.accounts.services import user_can_manage_team
from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record
from portal.quotas.limits import limits_of
from portal.quotas.models import LIMIT_FIELDS, TeamQuota, UserQuota
from portal.quotas.services.admission import team_quota_lock


def team_quota_set(*, team: Team, changes: dict, by: User, actor: Actor) -> TeamQuota:
    """Changes some of a team's limits (None: no limit). Platform admins only.

    Team admins are refused, including for their own team: a team's share of the platform
    is not theirs to raise.
    """
    _require_limit_fields(changes)
    if not by.is_staff:
        _deny(actor=actor, team=team, details={"scope": "team", "requested": changes})
        raise PermissionDenied("Only platform admins can change a team's quota.")
    with transaction.atomic():
        quota = team_quota_lock(team_ids=[team.pk])[team.pk]
        _apply(quota=quota, changes=changes, actor=actor, team=team, scope="team")
        _sync_backend_soon(team)
    return quota


def team_runtime_limits(*, team: Team) -> dict:
    """The team's limits as the runtime mirrors them (e.g. a Kubernetes ResourceQuota, as
    defence in depth): cpus, memory_gib, gpus; a missing key is no limit."""
    quota = TeamQuota.objects.filter(team=team).first()
    limits = limits_of(quota)
    return {key: float(limits[key]) if key != "gpus" else int(limits[key])
            for key in ("cpus", "memory_gib", "gpus") if limits.get(key) is not None}  # fmt: skip


def _sync_backend_soon(team: Team) -> None:
    from portal.quotas.tasks import team_sync_task

    team_sync_task.delay_on_commit(team.pk)


def user_quota_set(*, team: Team, user: User, changes: dict, by: User, actor: Actor) -> UserQuota:
    """Changes some of one member's limits inside a team (None: only the team's limit applies).

    Platform admins may set anything; team admins only values within the team's own limits.
    """
    _require_limit_fields(changes)
    details = {"scope": "user", "user": user.get_username(), "requested": changes}
    if not user_can_manage_team(user=by, team=team):
        _deny(actor=actor, team=team, details=details)
        raise PermissionDenied(f"Only team admins of {team.slug} can set limits for its members.")
    if not Membership.objects.filter(team=team, user=user).exists():
        raise ValidationError({"user": f"{user.get_username()} is not a member of {team.slug}."})
    with transaction.atomic():
        # The team's row is locked so its limits cannot change between the check and the write.
        team_quota = team_quota_lock(team_ids=[team.pk])[team.pk]
        if not by.is_staff:
            _require_within_team(changes=changes, team_quota=team_quota)
        quota, _ = UserQuota.objects.get_or_create(team=team, user=user)
        _apply(quota=quota, changes=changes, actor=actor, team=team, scope="user")
    return quota


def _apply(*, quota: TeamQuota | UserQuota, changes: dict, actor: Actor, team: Team, scope: str) -> None:
    before = limits_of(quota)
    for name, value in changes.items():
        setattr(quota, name, value)
    quota.full_clean(exclude=["team", "user"], validate_unique=False, validate_constraints=False)
    changed = {name: [before[name], getattr(quota, name)] for name in changes if before[name] != getattr(quota, name)}
    if not changed:
        return
    quota.save()
    details = {"scope": scope, "changed": changed}
    if scope == "user":
        details["user"] = quota.user.get_username()
    audit_record(actor=actor, action="quota.update", target=quota, team=team, details=details)


def _require_limit_fields(changes: dict) -> None:
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise ValidationError(dict.fromkeys(unknown, "This field cannot be set here."))


def _require_within_team(*, changes: dict, team_quota: TeamQuota) -> None:
    errors = {}
    for name, value in changes.items():
        team_limit = getattr(team_quota, name)
        if value is not None and team_limit is not None and Decimal(value) > team_limit:
            errors[name] = f"{value} is above the team's limit of {team_limit}."
    if errors:
        raise ValidationError(errors)


def _deny(*, actor: Actor, team: Team, details: dict) -> None:
    # Its own transaction, so the refusal is recorded even though the caller then raises.
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="quota.update",
            target=team,
            team=team,
            outcome=Outcome.DENIED,
            details=details,
        )
