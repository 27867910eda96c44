"""REST API for the signed-in person, their tokens, and team membership."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts import selectors, services
from portal.accounts.models import ApiToken, Membership, Role, Team, User
from portal.accounts.permissions import team_visible_or_404
from portal.audit.services import Actor
from portal.core.api import StrictSerializer, no_content

# --- Output -----------------------------------------------------------------------------------


class TeamRoleOut(serializers.Serializer):
    slug = serializers.CharField(source="team.slug")
    name = serializers.CharField(source="team.name")
    role = serializers.CharField()


class MeOut(serializers.Serializer):
    username = serializers.CharField()
    email = serializers.CharField(help_text="An e-mail address, or empty when none is set.")
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    is_staff = serializers.BooleanField()
    teams = TeamRoleOut(many=True, source="memberships_list")


class TokenOut(serializers.ModelSerializer):
    status = serializers.CharField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "hint", "created_at", "expires_at", "last_used_at", "revoked_at", "status"]


class TokenCreatedOut(TokenOut):
    token = serializers.CharField(help_text="The token itself. Shown only in this response.")

    class Meta(TokenOut.Meta):
        fields = [*TokenOut.Meta.fields, "token"]


class TeamOut(serializers.ModelSerializer):
    class Meta:
        model = Team
        fields = ["slug", "name", "created_at"]


class MemberOut(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField()
    joined_at = serializers.DateTimeField(source="created_at")


# --- Input ------------------------------------------------------------------------------------


class MeIn(StrictSerializer):
    email = serializers.EmailField(required=False, allow_blank=True)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=150)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=150)


class TokenIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)


class MemberIn(StrictSerializer):
    user = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.filter(is_active=True), help_text="Username."
    )
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class MemberRoleIn(StrictSerializer):
    role = serializers.ChoiceField(choices=Role.choices)


# --- Views ------------------------------------------------------------------------------------


class MeView(APIView):
    @extend_schema(responses=MeOut)
    def get(self, request: Request) -> Response:
        return Response(_me(request.user))

    @extend_schema(request=MeIn, responses=MeOut)
    def patch(self, request: Request) -> Response:
        data = MeIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        user = services.user_update_profile(
            user=request.user, changes=data.validated_data, actor=Actor.from_request(request)
        )
        return Response(_me(user))


def _me(user: User) -> dict:
    user.memberships_list = list(selectors.membership_list_for(user=user))
    return MeOut(user).data


class TokenListView(APIView):
    @extend_schema(responses=TokenOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(TokenOut(selectors.token_list_for(user=request.user), many=True).data)

    @extend_schema(request=TokenIn, responses={201: TokenCreatedOut})
    def post(self, request: Request) -> Response:
        data = TokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        parent = request.auth if isinstance(request.auth, ApiToken) else None
        token, raw = services.token_create(
            user=request.user, actor=Actor.from_request(request), parent=parent, **data.validated_data
        )
        token.token = raw
        return Response(TokenCreatedOut(token).data, status=status.HTTP_201_CREATED)


class TokenDetailView(APIView):
    def _token(self, request, pk) -> ApiToken:
        return get_object_or_404(selectors.token_list_for(user=request.user), pk=pk)

    @extend_schema(responses=TokenOut)
    def get(self, request: Request, pk: int) -> Response:
        return Response(TokenOut(self._token(request, pk)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        """Revokes the token (it stays listed, marked revoked)."""
        services.token_revoke(token=self._token(request, pk), actor=Actor.from_request(request))
        return no_content()


class TeamListView(APIView):
    @extend_schema(responses=TeamOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(TeamOut(Team.objects.visible_to(request.user), many=True).data)


class TeamDetailView(APIView):
    @extend_schema(responses=TeamOut)
    def get(self, request: Request, slug: str) -> Response:
        return Response(TeamOut(team_visible_or_404(user=request.user, slug=slug)).data)


class TeamMemberListView(APIView):
    @extend_schema(responses=MemberOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        team = team_visible_or_404(user=request.user, slug=slug)
        return Response(MemberOut(selectors.team_member_list(team=team), many=True).data)

    @extend_schema(request=MemberIn, responses={201: MemberOut})
    def post(self, request: Request, slug: str) -> Response:
        team = team_visible_or_404(user=request.user, slug=slug)
        data = MemberIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_add(
            team=team, by=request.user, actor=Actor.from_request(request), **data.validated_data
        )
        return Response(MemberOut(membership).data, status=status.HTTP_201_CREATED)


class TeamMemberDetailView(APIView):
    def _membership(self, request, slug, username) -> Membership:
        team = team_visible_or_404(user=request.user, slug=slug)
        return get_object_or_404(Membership.objects.select_related("team", "user"), team=team, user__username=username)

    @extend_schema(responses=MemberOut)
    def get(self, request: Request, slug: str, username: str) -> Response:
        return Response(MemberOut(self._membership(request, slug, username)).data)

    @extend_schema(request=MemberRoleIn, responses=MemberOut)
    def patch(self, request: Request, slug: str, username: str) -> Response:
        membership = self._membership(request, slug, username)
        data = MemberRoleIn(data=request.data)
        data.is_valid(raise_exception=True)
        membership = services.membership_set_role(
            membership=membership, role=data.validated_data["role"], by=request.user, actor=Actor.from_request(request)
        )
        return Response(MemberOut(membership).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, slug: str, username: str) -> Response:
        membership = self._membership(request, slug, username)
        services.membership_remove(membership=membership, by=request.user, actor=Actor.from_request(request))
        return no_content()
