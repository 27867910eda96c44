"""The append-only, hash-chained record of every state-changing action."""

from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    OK = "ok", "OK"
    DENIED = "denied", "Denied"
    ERROR = "error", "Error"


class ActorType(models.TextChoices):
    USER = "user", "User"  # a person signed in to the portal or the admin site
    TOKEN = "token", "API token"  # a person acting through one of their API tokens
    SYSTEM = "system", "System"  # beat and worker tasks
    ANONYMOUS = "anonymous", "Anonymous"  # e.g. a failed login for an unknown name


class AuditEvent(models.Model):
    """One action, who did it, to what, and how it ended.

    `id` is assigned by the appender (head + 1) under a lock, so ids have no gaps and a
    missing event shows as a gap. `hash` is SHA-256 over the canonical JSON of the event's
    fields and `prev_hash`; the row carries no foreign keys, so deleting a user or team never
    touches the record (and on PostgreSQL a trigger refuses UPDATE and DELETE outright).
    """

    id = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150)
    token_name = models.CharField(max_length=100, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    team_id = models.BigIntegerField(null=True, blank=True)
    team_slug = models.CharField(max_length=40, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-id"]
        # The audit page and API filter by one of these and page through ids, newest first
        # (`WHERE actor_name = %s AND id < %s ORDER BY id DESC LIMIT n`): a (column, id) index
        # answers that from one index range however many millions of rows there are.
        # `action` is filtered by prefix (LIKE 'team.%'), which needs the pattern operator
        # class; `created_at` (time range) keeps its own index. Every index is written while
        # the chain lock is held, so there is none more than the page needs.
        indexes = [
            models.Index(fields=["action"], name="audit_action_idx", opclasses=["varchar_pattern_ops"]),
            models.Index(fields=["actor_name", "id"], name="audit_actor_id_idx"),
            models.Index(fields=["team_slug", "id"], name="audit_team_id_idx"),
            models.Index(fields=["outcome", "id"], name="audit_outcome_id_idx"),
        ]
        # A constraint rather than unique=True: the same guarantee without the extra
        # pattern-matching index Django adds to unique text columns.
        constraints = [models.UniqueConstraint(fields=["hash"], name="audit_hash_unique")]

    def __str__(self) -> str:
        return f"#{self.id} {self.action} by {self.actor_name} ({self.outcome})"
