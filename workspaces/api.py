"""REST API for workspaces."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.models import Team, User
from portal.audit.services import Actor
from portal.catalog.environments.selectors import environment_labels
from portal.catalog.environments.services import environment_revision_resolve
from portal.catalog.models import Image
from portal.core.api import StrictSerializer, no_content
from portal.core.secrets import secrets_masked
from portal.proxy.hosts import notebook_origin
from portal.quotas.models import ResourceProfile
from portal.workloads.models import WorkloadEvent
from portal.workloads.services import IllegalTransition
from workspaces import selectors, services
from workspaces.models import Workspace


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The workspace is busy with another action."


class EventOut(serializers.ModelSerializer):
    class Meta:
        model = WorkloadEvent
        fields = ["created_at", "step", "state", "message", "percent", "level"]


class WorkspaceOut(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    team = serializers.CharField(source="team.slug")
    image = serializers.CharField(source="image.slug")
    environment = serializers.SerializerMethodField(help_text="<slug>@<revision> when started from an environment.")
    profile = serializers.CharField(source="profile.slug")
    url = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField(help_text="Place in the queue while waiting (1 = next).")
    estimated_start = serializers.SerializerMethodField(help_text="Rough start time while waiting, if known.")

    class Meta:
        model = Workspace
        fields = [
            "id", "name", "owner", "team", "image", "environment", "image_digest", "profile", "cpus", "memory_gib",
            "gpus", "state", "url", "queue_position", "estimated_start", "cull_at", "cull_explanation", "error_step",
            "error_message", "created_at",
            "started_at", "stopped_at", "node",
        ]  # fmt: skip

    def get_url(self, workspace: Workspace) -> str:
        return notebook_origin(workspace.pk) + "/lab"

    def get_environment(self, workspace: Workspace) -> str | None:
        return self.context.get("environments", {}).get(workspace.environment_revision_id)

    def get_queue_position(self, workspace: Workspace) -> int | None:
        return self.context.get("positions", {}).get(workspace.pk)

    def get_estimated_start(self, workspace: Workspace) -> str | None:
        moment = self.context.get("estimates", {}).get(workspace.pk)
        return moment.isoformat() if moment else None


class WorkspaceDetailOut(WorkspaceOut):
    events = EventOut(many=True, source="event_list")
    source_job = serializers.UUIDField(source="source_job_id", help_text="The job it reproduces, if any.")
    code_sha256 = serializers.CharField(source="code.sha256", default=None, help_text="Code at /code, if any.")
    secret_env = serializers.SerializerMethodField(help_text="Names only; values are never shown.")
    secrets_left_out = serializers.SerializerMethodField(
        help_text="Secret names of the job it reproduces that it runs without: they go only to that job's owner."
    )

    class Meta(WorkspaceOut.Meta):
        fields = [*WorkspaceOut.Meta.fields, "source_job", "code_sha256", "parameters", "env", "secret_env",
                  "secrets_left_out", "error_detail", "events"]  # fmt: skip

    def get_secret_env(self, workspace: Workspace) -> dict:
        return secrets_masked(workspace.secret_env_names)

    def get_secrets_left_out(self, workspace: Workspace) -> list[str]:
        return selectors.workspace_secrets_left_out(workspace=workspace)


class WorkspaceIn(StrictSerializer):
    name = serializers.CharField(max_length=63)
    image = serializers.SlugRelatedField(slug_field="slug", queryset=Image.objects.catalog(), required=False)
    environment = serializers.CharField(
        required=False, help_text="<slug>@<revision> instead of an image (the team's default with neither)."
    )
    profile = serializers.SlugRelatedField(
        slug_field="slug", queryset=ResourceProfile.objects.filter(is_active=True), required=False,
        help_text="Default: the environment's profile.",
    )  # fmt: skip
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    wait = serializers.BooleanField(default=False, help_text="Wait in the queue if it does not fit now.")

    def validate(self, data):
        if data.get("image") and data.get("environment"):
            raise serializers.ValidationError({"environment": "Give an image or an environment, not both."})
        return data


def _queue_context(workspaces) -> dict:
    positions = selectors.workspace_queue_positions(workspaces=workspaces)
    return {
        "positions": positions,
        "estimates": selectors.workspace_estimated_starts(positions=positions),
        "environments": environment_labels(revision_ids=[w.environment_revision_id for w in workspaces]),
    }


def _detail(workspace: Workspace) -> dict:
    workspace.event_list = list(selectors.workspace_events(workspace=workspace))
    return WorkspaceDetailOut(workspace, context=_queue_context([workspace])).data


def workspace_detail_data(request, pk) -> dict:
    """The API's view of one workspace the person may see (also answers job reproduction)."""
    return _detail(_get(request, pk))


def _get(request, pk) -> Workspace:
    workspace = selectors.workspace_visible_to(user=request.user).filter(pk=pk).first()
    if workspace is None:
        raise Http404
    return workspace


def _acting(request, workspace) -> None:
    if workspace.owner_id != request.user.pk:
        raise PermissionDenied("Only the workspace's owner can do this.")


class ShareIn(StrictSerializer):
    user = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.filter(is_active=True))


class ShareOut(serializers.Serializer):
    user = serializers.CharField(source="user.username")
    created_at = serializers.DateTimeField()


class WorkspaceListView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("shared", bool, description="Workspaces shared with me instead of my own.")],
        responses=WorkspaceOut(many=True),
    )
    def get(self, request: Request) -> Response:
        shared = request.query_params.get("shared") in ("1", "true")
        workspaces = list(selectors.workspace_list_for(user=request.user, shared=shared))
        return Response(WorkspaceOut(workspaces, many=True, context=_queue_context(workspaces)).data)

    @extend_schema(request=WorkspaceIn, responses={201: WorkspaceDetailOut})
    def post(self, request: Request) -> Response:
        data = WorkspaceIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        if "environment" in values:
            values["environment_revision"] = environment_revision_resolve(
                user=request.user, ref=values.pop("environment")
            )
        values.setdefault("profile", None)
        try:
            workspace = services.workspace_create(owner=request.user, actor=Actor.from_request(request), **values)
        except services.QuotaRefused as refused:
            raise PermissionDenied(str(refused)) from None
        return Response(_detail(_get(request, workspace.pk)), status=status.HTTP_201_CREATED)


class WorkspaceDetailView(APIView):
    @extend_schema(responses=WorkspaceDetailOut)
    def get(self, request: Request, pk) -> Response:
        return Response(_detail(_get(request, pk)))

    @extend_schema(
        parameters=[OpenApiParameter("delete_data", bool, description="Also delete the home volume.")],
        responses={204: None},
    )
    def delete(self, request: Request, pk) -> Response:
        workspace = _get(request, pk)
        _acting(request, workspace)
        delete_data = request.query_params.get("delete_data") in ("1", "true")
        services.workspace_delete(workspace=workspace, delete_data=delete_data, actor=Actor.from_request(request))
        return no_content()


class WorkspaceActionView(APIView):
    action_name = ""

    @extend_schema(request=None, responses=WorkspaceDetailOut)
    def post(self, request: Request, pk) -> Response:
        workspace = _get(request, pk)
        actor = Actor.from_request(request)
        try:
            if self.action_name == "start":
                _acting(request, workspace)
                services.workspace_start(workspace=workspace, actor=actor)
            else:
                if workspace.owner_id != request.user.pk and not request.user.is_staff:
                    raise PermissionDenied("Only the workspace's owner can stop it.")
                services.workspace_stop(workspace=workspace, actor=actor)
        except services.QuotaRefused as refused:
            raise PermissionDenied(str(refused)) from None
        except IllegalTransition as conflict:
            raise Conflict(str(conflict)) from None
        return Response(_detail(_get(request, pk)))


class WorkspaceShareListView(APIView):
    @extend_schema(responses=ShareOut(many=True))
    def get(self, request: Request, pk) -> Response:
        workspace = _get(request, pk)
        return Response(ShareOut(selectors.workspace_share_list(workspace=workspace), many=True).data)

    @extend_schema(request=ShareIn, responses={201: ShareOut})
    def post(self, request: Request, pk) -> Response:
        workspace = _get(request, pk)
        data = ShareIn(data=request.data)
        data.is_valid(raise_exception=True)
        share = services.workspace_share(
            workspace=workspace, user=data.validated_data["user"], by=request.user, actor=Actor.from_request(request)
        )
        return Response(ShareOut(share).data, status=status.HTTP_201_CREATED)


class WorkspaceShareDetailView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk, username: str) -> Response:
        workspace = _get(request, pk)
        user = User.objects.filter(username=username).first()
        if user is None:
            raise Http404
        services.workspace_unshare(workspace=workspace, user=user, by=request.user, actor=Actor.from_request(request))
        return no_content()


class PolicyIn(StrictSerializer):
    idle_timeout_minutes = serializers.IntegerField(min_value=1, max_value=60 * 24 * 30, required=False)
    gpu_idle_timeout_minutes = serializers.IntegerField(min_value=1, max_value=60 * 24 * 30, required=False)
    max_lifetime_hours = serializers.IntegerField(min_value=1, max_value=24 * 365, required=False, allow_null=True)


class PolicyOut(serializers.Serializer):
    team = serializers.CharField(source="team.slug")
    idle_timeout_minutes = serializers.SerializerMethodField()
    gpu_idle_timeout_minutes = serializers.SerializerMethodField()
    max_lifetime_hours = serializers.SerializerMethodField()

    def get_idle_timeout_minutes(self, policy) -> int:
        return policy.idle_timeout_s // 60

    def get_gpu_idle_timeout_minutes(self, policy) -> int:
        return policy.gpu_idle_timeout_s // 60

    def get_max_lifetime_hours(self, policy) -> int | None:
        return policy.max_lifetime_s // 3600 if policy.max_lifetime_s else None


class WorkspacePolicyView(APIView):
    """A team's culling policy: idle and GPU-idle timeouts, maximum lifetime."""

    @extend_schema(responses=PolicyOut)
    def get(self, request: Request, team: str) -> Response:
        from portal.accounts.permissions import team_visible_or_404
        from workspaces.models import WorkspacePolicy

        found = team_visible_or_404(user=request.user, slug=team)
        policy = WorkspacePolicy.objects.filter(team=found).first() or WorkspacePolicy(team=found)
        return Response(PolicyOut(policy).data)

    @extend_schema(request=PolicyIn, responses=PolicyOut)
    def put(self, request: Request, team: str) -> Response:
        from portal.accounts.permissions import team_visible_or_404

        found = team_visible_or_404(user=request.user, slug=team)
        data = PolicyIn(data=request.data)
        data.is_valid(raise_exception=True)
        units = {"idle_timeout_minutes": ("idle_timeout_s", 60), "gpu_idle_timeout_minutes": ("gpu_idle_timeout_s", 60),
                 "max_lifetime_hours": ("max_lifetime_s", 3600)}  # fmt: skip
        changes = {
            units[key][0]: (value * units[key][1] if value is not None else None)
            for key, value in data.validated_data.items()
        }
        policy = services.workspace_policy_set(
            team=found, changes=changes, by=request.user, actor=Actor.from_request(request)
        )
        return Response(PolicyOut(policy).data)
