"""`GET /api/v1/audit/`: the audit log for platform admins, filtered and paged by keyset."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.audit import selectors
from portal.audit.exports import event_record
from portal.audit.forms import AuditFilterForm
from portal.audit.models import ActorType, Outcome


class StaffOnly(IsAdminUser):
    message = "The audit log is for platform admins."


class AuditEventOut(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    actor_type = serializers.ChoiceField(choices=ActorType.choices)
    actor_name = serializers.CharField()
    actor_id = serializers.IntegerField(allow_null=True)
    token_name = serializers.CharField(help_text="The API token used, if any.")
    ip = serializers.IPAddressField(allow_null=True)
    action = serializers.CharField(help_text="Dotted verb, e.g. team.member_add.")
    target_type = serializers.CharField()
    target_id = serializers.CharField()
    target_repr = serializers.CharField()
    team_slug = serializers.CharField()
    team_id = serializers.IntegerField(allow_null=True)
    outcome = serializers.ChoiceField(choices=Outcome.choices)
    details = serializers.DictField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class AuditEventPageOut(serializers.Serializer):
    results = AuditEventOut(many=True)
    next = serializers.URLField(allow_null=True, help_text="Older events, or null on the last page.")
    previous = serializers.URLField(allow_null=True, help_text="Newer events, or null on the first page.")


_PARAMETERS = [
    OpenApiParameter(name, OpenApiTypes.STR if name not in ("since", "until") else OpenApiTypes.DATETIME,
                     description=field.help_text or "")
    for name, field in AuditFilterForm.base_fields.items()
]  # fmt: skip


class AuditEventListView(APIView):
    permission_classes = [StaffOnly]

    @extend_schema(parameters=_PARAMETERS, responses=AuditEventPageOut)
    def get(self, request: Request) -> Response:
        """Events newest first; follow `next` for older ones. Filters combine (AND)."""
        form = _valid_form(request)
        page = selectors.audit_event_page(
            filters=form.filters(),
            limit=form.page_size(),
            before=form.cleaned_data["before"],
            after=form.cleaned_data["after"],
        )
        return Response(
            {
                "results": [event_record(event) for event in page.events],
                "next": _link(request, "before", page.older),
                "previous": _link(request, "after", page.newer),
            }
        )


def _valid_form(request: Request) -> AuditFilterForm:
    form = AuditFilterForm(request.query_params)
    errors = {field: list(messages) for field, messages in form.errors.items()}
    # A misspelt filter must not quietly return everything.
    for name in sorted(set(request.query_params) - set(AuditFilterForm.base_fields)):
        errors[name] = ["This is not a filter of the audit log."]
    if errors:
        raise ValidationError(errors)
    return form


def _link(request: Request, cursor: str, value: int | None) -> str | None:
    if value is None:
        return None
    query = request.query_params.copy()
    query.pop("before", None)
    query.pop("after", None)
    query[cursor] = str(value)
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
