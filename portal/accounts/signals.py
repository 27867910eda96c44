"""Sign-ins and sign-outs, from Django's auth signals, into the audit log; and the end of a
person's place in a team, however it was made (a service, the admin site, a cascade), passed
on to the workload kinds."""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from portal.accounts.models import Membership, User
from portal.accounts.services import membership_ended, user_deactivated
from portal.audit.models import Outcome
from portal.audit.services import Actor, audit_record, client_ip


@receiver(user_logged_in, dispatch_uid="audit_login")
def audit_login(sender, request, user, **kwargs) -> None:
    actor = Actor.for_user(user, ip=client_ip(request) if request else None)
    audit_record(actor=actor, action="auth.login", target=user)


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    # `credentials` holds the attempted password (masked by Django); only the name is kept.
    actor = Actor.for_user(None, ip=client_ip(request) if request else None)
    username = str(credentials.get("username", ""))[:150]
    audit_record(actor=actor, action="auth.login_failed", outcome=Outcome.DENIED, details={"username": username})


@receiver(user_logged_out, dispatch_uid="audit_logout")
def audit_logout(sender, request, user, **kwargs) -> None:
    if user is None:
        return
    actor = Actor.for_user(user, ip=client_ip(request) if request else None)
    audit_record(actor=actor, action="auth.logout", target=user)


@receiver(post_delete, sender=Membership, dispatch_uid="membership_ended")
def membership_deleted(sender, instance: Membership, **kwargs) -> None:
    # `ended_by` is set by membership_remove; a delete from the admin site or a cascade is
    # already audited where it happened, so what follows it is done as the system.
    actor = getattr(instance, "ended_by", None) or Actor.system()
    reason = f"{instance.user.username} is no longer a member of {instance.team.slug}"
    membership_ended(user=instance.user, team=instance.team, actor=actor, reason=reason)


@receiver(pre_save, sender=User, dispatch_uid="user_deactivating")
def user_deactivating(sender, instance: User, update_fields=None, **kwargs) -> None:
    # Compared with the stored row, so a form that saves every field (the admin site's) is
    # seen deactivating only when it really flips is_active.
    instance.was_deactivated = (
        instance.pk is not None
        and not instance.is_active
        and (update_fields is None or "is_active" in update_fields)
        and User.objects.filter(pk=instance.pk, is_active=True).exists()
    )


@receiver(post_save, sender=User, dispatch_uid="user_deactivated")
def user_saved(sender, instance: User, created: bool, **kwargs) -> None:
    if getattr(instance, "was_deactivated", False):
        instance.was_deactivated = False
        user_deactivated(user=instance, actor=Actor.system())


@receiver(user_locked_out, dispatch_uid="audit_lockout")
def audit_lockout(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    # django-axes locked sign-in for this account or address after too many failures.
    actor = Actor.for_user(None, ip=client_ip(request) if request else ip_address)
    details = {"username": str(username or "")[:150], "locked_for_s": int(settings.AXES_COOLOFF_TIME.total_seconds())}
    audit_record(actor=actor, action="auth.lockout", outcome=Outcome.DENIED, details=details)
