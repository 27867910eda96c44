"""Every change to tokens, teams and memberships goes through these functions.

Pages, the API, management commands and the admin site call them, so each rule (who may
manage a team, that a team keeps a team admin) and each audit event lives in one place.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.accounts.models import TOKEN_PREFIX, ApiToken, Membership, Role, Team, User, token_digest
from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record

# A token's last-used time is written at most this often, so a busy script does not turn
# every API call into a database write.
TOKEN_LAST_USED_RESOLUTION = timedelta(seconds=60)


# --- API tokens -----------------------------------------------------------------------------


def token_create(
    *, user: User, name: str, expires_at: datetime | None, actor: Actor, parent: ApiToken | None = None
) -> tuple[ApiToken, str]:
    """Makes a token for `user`; returns it with the raw value, which is never stored.

    `parent` is the token the request was authenticated with, if any: the new token expires no
    later than it, so a leaked short-lived token cannot mint a lasting one.
    """
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry must be in the future."})
    if parent is not None and parent.expires_at is not None and (expires_at is None or expires_at > parent.expires_at):
        expires_at = parent.expires_at
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        # One creation at a time per person, so two at once cannot both pass the limit.
        User.objects.select_for_update().filter(pk=user.pk).first()
        limit = settings.DOCKYARD_TOKENS_PER_USER_MAX
        if ApiToken.objects.usable().filter(user=user).count() >= limit:
            raise ValidationError(
                {"name": f"You already have {limit} usable tokens, the most allowed: revoke one you no longer use."}
            )
        token = ApiToken.objects.create(
            user=user, name=name, digest=token_digest(raw), hint=raw[:10], expires_at=expires_at
        )
        details = {"name": name, "owner": user.username, "expires_at": expires_at}
        if parent is not None:
            details["made_with"] = {"id": parent.pk, "name": parent.name}  # the parent API token
        audit_record(actor=actor, action="token.create", target=token, details=details)
    return token, raw


def token_revoke(*, token: ApiToken, actor: Actor) -> ApiToken:
    """Revokes a token at once; revoking one already revoked changes nothing."""
    with transaction.atomic():
        updated = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        token.refresh_from_db()
        if updated:
            audit_record(
                actor=actor,
                action="token.revoke",
                target=token,
                details={"name": token.name, "owner": token.user.username},
            )
    return token


def token_authenticate(*, raw: str) -> ApiToken | None:
    """The usable token with this value, or None; stamps its last-used time."""
    token = ApiToken.objects.usable().select_related("user").filter(digest=token_digest(raw)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > TOKEN_LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


# --- People -----------------------------------------------------------------------------------

PROFILE_FIELDS = ("email", "first_name", "last_name")


def user_update_profile(*, user: User, changes: dict, actor: Actor) -> User:
    """Changes a person's own name and e-mail; nothing else about them is theirs to set."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be set here."))
    changed = {field: value for field, value in changes.items() if getattr(user, field) != value}
    if not changed:
        return user
    with transaction.atomic():
        for field, value in changed.items():
            setattr(user, field, value)
        user.save(update_fields=list(changed))
        audit_record(actor=actor, action="user.update", target=user, details={"changed": changed})
    return user


# --- When someone's place in a team ends --------------------------------------------------------

# A workload kind hears, inside the transaction that ended it, that a person lost their place in
# a team (removed from it, or their account deactivated): `listener(user=, team=, actor=,
# reason=)`. It takes their access to the team's work away and stops what they run there,
# enqueueing any backend work on commit. Kinds register from their AppConfig.ready, so the
# platform never imports a kind.
MembershipEndedListener = Callable[..., None]
_membership_ended_listeners: dict[str, MembershipEndedListener] = {}


def membership_ended_listener_register(*, kind: str, listener: MembershipEndedListener) -> None:
    _membership_ended_listeners[kind] = listener


def membership_ended(*, user: User, team: Team, actor: Actor, reason: str) -> None:
    """Tells every kind that `user` no longer acts in `team` (call inside the change's transaction)."""
    for listener in _membership_ended_listeners.values():
        listener(user=user, team=team, actor=actor, reason=reason)


def user_deactivate(*, user: User, actor: Actor) -> User:
    """Deactivates an account: it can no longer sign in or use its tokens, and in every team it
    belongs to its shares go and its workspaces stop (the memberships stay, for the record)."""
    with transaction.atomic():
        updated = User.objects.filter(pk=user.pk, is_active=True).update(is_active=False)
        user.is_active = False
        if updated:
            user_deactivated(user=user, actor=actor)
    return user


def user_deactivated(*, user: User, actor: Actor) -> None:
    """What follows an account's deactivation, however it was made (this service, the admin
    site's form, a sign-in sync): audited, and every kind told for each of the person's teams."""
    audit_record(actor=actor, action="user.deactivate", target=user, details={"username": user.username})
    for team in Team.objects.filter(memberships__user=user):
        membership_ended(user=user, team=team, actor=actor, reason=f"the account of {user.username} was deactivated")


# --- Teams and memberships --------------------------------------------------------------------


def user_can_manage_team(*, user: User, team: Team) -> bool:
    return Team.objects.manageable_by(user).filter(pk=team.pk).exists()


def _require_team_manager(*, by: User, team: Team, actor: Actor, action: str, details: dict) -> None:
    """Refuses (and records the refusal) unless `by` is staff or a team admin of `team`."""
    if user_can_manage_team(user=by, team=team):
        return
    audit_record(actor=actor, action=action, team=team, target=team, outcome=Outcome.DENIED, details=details)
    raise PermissionDenied(f"Only team admins of {team.slug} can change its members.")


def team_create(*, slug: str, name: str, actor: Actor) -> Team:
    with transaction.atomic():
        team = Team(slug=slug, name=name)
        team.full_clean()
        team.save()
        audit_record(actor=actor, action="team.create", target=team, team=team, details={"name": name})
    return team


def membership_add(*, team: Team, user: User, role: str, by: User, actor: Actor) -> Membership:
    details = {"user": user.username, "role": role}
    _require_team_manager(by=by, team=team, actor=actor, action="team.member_add", details=details)
    _require_role(role)
    try:
        with transaction.atomic():
            membership = Membership.objects.create(team=team, user=user, role=role)
            audit_record(actor=actor, action="team.member_add", target=membership, team=team, details=details)
    except IntegrityError:
        raise ValidationError({"user": f"{user.username} is already a member of {team.slug}."}) from None
    return membership


def membership_set_role(*, membership: Membership, role: str, by: User, actor: Actor) -> Membership:
    team = membership.team
    details = {"user": membership.user.username, "role": role, "previous_role": membership.role}
    _require_team_manager(by=by, team=team, actor=actor, action="team.member_update", details=details)
    _require_role(role)
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        if locked.role == role:
            return locked
        if locked.role == Role.TEAM_ADMIN:
            _require_another_team_admin(locked)
        locked.role = role
        locked.save(update_fields=["role"])
        audit_record(actor=actor, action="team.member_update", target=locked, team=team, details=details)
    return locked


def membership_remove(*, membership: Membership, by: User, actor: Actor) -> None:
    team = membership.team
    details = {"user": membership.user.username, "role": membership.role}
    _require_team_manager(by=by, team=team, actor=actor, action="team.member_remove", details=details)
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=membership.pk)
        if locked.role == Role.TEAM_ADMIN:
            _require_another_team_admin(locked)
        target = {"target_type": "accounts.membership", "target_id": str(locked.pk), "target_repr": str(locked)}
        locked.ended_by = actor  # the post_delete receiver tells the kinds, naming who removed them
        locked.delete()
        audit_record(actor=actor, action="team.member_remove", team=team, details=details, **target)


def _require_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Role must be one of: {', '.join(Role.values)}."})


def _require_another_team_admin(membership: Membership) -> None:
    # Locks the team's admin rows so two admins cannot demote each other at the same moment
    # and leave the team with none.
    others = (
        Membership.objects.select_for_update()
        .filter(team=membership.team, role=Role.TEAM_ADMIN)
        .exclude(pk=membership.pk)
    )
    if not list(others):
        raise ValidationError(
            f"{membership.team.slug} must keep at least one team admin: make someone else team admin first."
        )
