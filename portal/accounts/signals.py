"""Sign-ins and sign-outs, from Django's auth signals, into the audit log."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

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
