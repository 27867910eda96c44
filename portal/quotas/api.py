"""REST API: resource profiles, my quotas, usage reports, and setting quotas."""

from __future__ import annotations

from decimal import Decimal

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.models import Team, User
from portal.accounts.permissions import team_visible_or_404
from portal.audit.services import Actor
from portal.core.api import StrictSerializer
from portal.quotas import selectors, services
from portal.quotas.limits import limits_of
from portal.quotas.models import LIMIT_FIELDS, ResourceProfile, TeamQuota, UserQuota

# --- Output -----------------------------------------------------------------------------------


@extend_schema_field({"type": "number", "nullable": True})
class NumberField(serializers.Field):
    """A count or an amount as a JSON number (never a string); null where there is no limit."""

    def to_representation(self, value):
        if value is None:
            return None
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value


class ProfileOut(serializers.ModelSerializer):
    cpus = NumberField()
    memory_gib = NumberField()

    class Meta:
        model = ResourceProfile
        fields = ["slug", "name", "description", "cpus", "memory_gib", "gpus", "gpu_model"]


class DimensionOut(serializers.Serializer):
    dimension = serializers.CharField(help_text="The limit's field name, e.g. `gpus`.")
    label = serializers.CharField()
    limit = NumberField(help_text="The effective limit: the tighter of the team's and yours; null: none.")
    used = NumberField(help_text="Your own use: held now, or GPU-hours this month.")
    remaining = NumberField(help_text="What you can still use given both limits; null: no limit.")
    team_limit = NumberField()
    team_used = NumberField()
    user_limit = NumberField()


class QuotaStatusOut(serializers.Serializer):
    team = serializers.CharField(source="team.slug")
    team_name = serializers.CharField(source="team.name")
    role = serializers.CharField()
    month_cpu_hours = NumberField()
    month_gpu_hours = NumberField()
    dimensions = DimensionOut(many=True)


class LimitsOut(serializers.Serializer):
    team = serializers.CharField(source="team.slug")
    max_workspaces = NumberField()
    max_jobs = NumberField()
    cpus = NumberField()
    memory_gib = NumberField()
    gpus = NumberField()
    gpu_hours_per_month = NumberField()


class UserLimitsOut(LimitsOut):
    username = serializers.CharField(source="user.username")


class UsageRowOut(serializers.Serializer):
    team = serializers.CharField()
    username = serializers.CharField()
    cpu_hours = NumberField()
    gpu_hours = NumberField()


class UsageOut(serializers.Serializer):
    month = serializers.CharField()
    rows = UsageRowOut(many=True)


# --- Input ------------------------------------------------------------------------------------


def _amount(max_digits: int, places: int) -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=max_digits, decimal_places=places, min_value=Decimal(0), required=False, allow_null=True
    )


class LimitsIn(StrictSerializer):
    """Any of the limits; null removes a limit. Fields left out stay as they are."""

    max_workspaces = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    max_jobs = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    cpus = _amount(8, 2)
    memory_gib = _amount(10, 2)
    gpus = serializers.IntegerField(min_value=0, required=False, allow_null=True)
    gpu_hours_per_month = _amount(10, 1)


# --- Views ------------------------------------------------------------------------------------


class ProfileListView(APIView):
    @extend_schema(responses=ProfileOut(many=True))
    def get(self, request: Request) -> Response:
        """The sizes people can start work with, and what each costs against quota."""
        return Response(ProfileOut(selectors.profile_list(), many=True).data)


class QuotaMeView(APIView):
    @extend_schema(responses=QuotaStatusOut(many=True))
    def get(self, request: Request) -> Response:
        """Your limits, use and what remains, per dimension, in each of your teams."""
        return Response(QuotaStatusOut(selectors.quota_status_for(user=request.user), many=True).data)


class UsageView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("team", str, description="A team's slug; all your teams when left out."),
            OpenApiParameter("month", str, description="`YYYY-MM`; this month when left out."),
        ],
        responses=UsageOut,
    )
    def get(self, request: Request) -> Response:
        """CPU- and GPU-hours per person in a month. Members see their own rows; team admins
        and staff see everyone's in their teams."""
        month = _month(request.query_params.get("month"))
        slug = request.query_params.get("team")
        teams = (
            [team_visible_or_404(user=request.user, slug=slug)]
            if slug
            else list(selectors.usage_visible_teams(user=request.user))
        )
        rows = selectors.usage_rows_visible_to(user=request.user, teams=teams, month=month)
        return Response(UsageOut({"month": month.strftime("%Y-%m"), "rows": rows}).data)


def _month(text: str | None):
    if not text:
        return timezone.localdate().replace(day=1)
    try:
        return selectors.month_parse(text=text)
    except ValueError:
        raise ValidationError({"month": "Use the form YYYY-MM, e.g. 2025-03."}) from None


class TeamQuotaView(APIView):
    @extend_schema(responses=LimitsOut)
    def get(self, request: Request, slug: str) -> Response:
        team = team_visible_or_404(user=request.user, slug=slug)
        return Response(LimitsOut(_limits_row(TeamQuota.objects.filter(team=team).first(), team=team)).data)

    @extend_schema(request=LimitsIn, responses=LimitsOut)
    def put(self, request: Request, slug: str) -> Response:
        """Sets the team's limits (staff only). Send any of the fields; null removes a limit."""
        team = team_visible_or_404(user=request.user, slug=slug)
        data = LimitsIn(data=request.data)
        data.is_valid(raise_exception=True)
        quota = services.team_quota_set(
            team=team, changes=data.validated_data, by=request.user, actor=Actor.from_request(request)
        )
        return Response(LimitsOut(quota).data)


class UserQuotaView(APIView):
    def _target(self, request: Request, slug: str, username: str) -> tuple[Team, User]:
        team = team_visible_or_404(user=request.user, slug=slug)
        return team, get_object_or_404(User, username=username, memberships__team=team)

    @extend_schema(responses=UserLimitsOut)
    def get(self, request: Request, slug: str, username: str) -> Response:
        team, user = self._target(request, slug, username)
        quota = UserQuota.objects.filter(team=team, user=user).first()
        return Response(UserLimitsOut(_limits_row(quota, team=team, user=user)).data)

    @extend_schema(request=LimitsIn, responses=UserLimitsOut)
    def put(self, request: Request, slug: str, username: str) -> Response:
        """Sets one member's limits inside the team (staff, or the team's admins within the
        team's own limits). Send any of the fields; null removes the member's own limit."""
        team, user = self._target(request, slug, username)
        data = LimitsIn(data=request.data)
        data.is_valid(raise_exception=True)
        quota = services.user_quota_set(
            team=team, user=user, changes=data.validated_data, by=request.user, actor=Actor.from_request(request)
        )
        return Response(UserLimitsOut(quota).data)


def _limits_row(quota, *, team: Team, user: User | None = None) -> dict:
    """A quota's limits, or all nulls where no row exists yet (no limits)."""
    row = dict.fromkeys(LIMIT_FIELDS) | limits_of(quota)
    return {**row, "team": team, "user": user}
