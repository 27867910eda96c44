"""REST API for the image catalog."""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAdminUser, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.models import Team
from portal.audit.services import Actor
from portal.catalog import selectors, services
from portal.catalog.models import Image, ImageBuild, SourceType
from portal.catalog.services import SourceSpec
from portal.core.api import StrictSerializer

# --- Output -------------------------------------------------------------------------------------


class ImageOut(serializers.ModelSerializer):
    digest = serializers.CharField()
    revision = serializers.IntegerField(source="current_revision.number", default=None)
    size_bytes = serializers.IntegerField(source="current_revision.size_bytes", default=None)
    successor = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Image
        fields = [
            "slug", "name", "description", "status", "digest", "revision", "size_bytes", "framework",
            "framework_version", "python_version", "cuda_version", "gpu_capable", "default_command",
            "successor", "deprecation_message",
        ]  # fmt: skip


class RevisionOut(serializers.Serializer):
    number = serializers.IntegerField()
    source_type = serializers.CharField()
    pull_ref = serializers.CharField()
    base_image = serializers.CharField()
    apt_packages = serializers.ListField(child=serializers.CharField())
    pip_requirements = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    digest = serializers.CharField()
    size_bytes = serializers.IntegerField(allow_null=True)
    lock = serializers.ListField(
        source="pip_lock", child=serializers.CharField(), help_text="What pip installed: name==version --hash=..."
    )
    built_at = serializers.DateTimeField(allow_null=True)


class ImageDetailOut(ImageOut):
    packages = serializers.ListField(source="current_revision.packages", default=list)
    revisions = RevisionOut(many=True, source="revision_list")

    class Meta(ImageOut.Meta):
        fields = [*ImageOut.Meta.fields, "packages", "revisions"]


class BuildOut(serializers.ModelSerializer):
    image = serializers.CharField(source="revision.image.slug")
    revision = serializers.IntegerField(source="revision.number")

    class Meta:
        model = ImageBuild
        fields = ["id", "image", "revision", "status", "progress", "step", "error", "created_at", "finished_at"]


# --- Input --------------------------------------------------------------------------------------


class SourceIn(StrictSerializer):
    type = serializers.ChoiceField(choices=SourceType.choices)
    pull_ref = serializers.CharField(required=False, default="")
    base_image = serializers.CharField(required=False, default="")
    apt_packages = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    pip_requirements = serializers.ListField(child=serializers.CharField(), required=False, default=list)

    def spec(self) -> SourceSpec:
        data = self.validated_data
        return SourceSpec(
            source_type=data["type"],
            pull_ref=data["pull_ref"],
            base_image=data["base_image"],
            apt_packages=tuple(data["apt_packages"]),
            pip_requirements=tuple(data["pip_requirements"]),
        )


class ImageIn(StrictSerializer):
    slug = serializers.SlugField(max_length=40)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, default="", allow_blank=True)
    framework = serializers.CharField(required=False, default="", allow_blank=True, max_length=40)
    framework_version = serializers.CharField(required=False, default="", allow_blank=True, max_length=20)
    python_version = serializers.CharField(required=False, default="", allow_blank=True, max_length=10)
    cuda_version = serializers.CharField(required=False, default="", allow_blank=True, max_length=10)
    gpu_capable = serializers.BooleanField(required=False, default=False)
    default_command = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    teams = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all(), many=True, required=False)
    source = SourceIn()


class BuildIn(StrictSerializer):
    revision = serializers.IntegerField(required=False, help_text="Revision number; the latest by default.")


class DeprecateIn(StrictSerializer):
    successor = serializers.SlugRelatedField(slug_field="slug", queryset=Image.objects.catalog(), required=False)
    message = serializers.CharField(required=False, default="", allow_blank=True, max_length=300)


# --- Views --------------------------------------------------------------------------------------


class StaffWrites(IsAuthenticated):
    """Everyone signed in reads; only staff write."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        return request.method in ("GET", "HEAD", "OPTIONS") or request.user.is_staff


class ImageListView(APIView):
    permission_classes = [StaffWrites]

    @extend_schema(
        parameters=[
            OpenApiParameter("framework", str),
            OpenApiParameter("gpu", str, enum=["yes", "no"]),
            OpenApiParameter("version", str),
            OpenApiParameter("all", bool, description="Staff: include images that are not ready."),
        ],
        responses=ImageOut(many=True),
    )
    def get(self, request: Request) -> Response:
        images = selectors.image_list_visible_to(
            user=request.user,
            framework=request.query_params.get("framework", ""),
            gpu=request.query_params.get("gpu", ""),
            version=request.query_params.get("version", ""),
            include_unready=request.user.is_staff and request.query_params.get("all") in ("1", "true"),
        )
        return Response(ImageOut(images, many=True).data)

    @extend_schema(request=ImageIn, responses={201: ImageDetailOut})
    def post(self, request: Request) -> Response:
        data = ImageIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        source = SourceIn(data=request.data["source"])
        source.is_valid(raise_exception=True)
        teams = fields.pop("teams", [])
        slug = fields.pop("slug")
        fields.pop("source")
        image = services.image_create(
            slug=slug,
            source=source.spec(),
            details={**fields, "all_teams": not teams},
            teams=teams,
            by=request.user,
            actor=Actor.from_request(request),
        )
        return Response(_detail(image), status=status.HTTP_201_CREATED)


def _detail(image: Image) -> dict:
    image = Image.objects.select_related("current_revision", "successor").get(pk=image.pk)
    image.revision_list = list(image.revisions.order_by("-number"))
    return ImageDetailOut(image).data


def _visible(request, slug: str) -> Image:
    try:
        return selectors.image_get_visible(user=request.user, slug=slug)
    except Image.DoesNotExist:
        raise Http404 from None


class ImageDetailView(APIView):
    @extend_schema(responses=ImageDetailOut)
    def get(self, request: Request, slug: str) -> Response:
        return Response(_detail(_visible(request, slug)))


class ImageBuildView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=BuildIn, responses={202: BuildOut})
    def post(self, request: Request, slug: str) -> Response:
        image = get_object_or_404(Image.objects.catalog(), slug=slug)
        data = BuildIn(data=request.data)
        data.is_valid(raise_exception=True)
        revision = None
        if "revision" in data.validated_data:
            revision = get_object_or_404(image.revisions, number=data.validated_data["revision"])
        build = services.image_build(image=image, revision=revision, by=request.user, actor=Actor.from_request(request))
        return Response(BuildOut(build).data, status=status.HTTP_202_ACCEPTED)


class ImageDeprecateView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=DeprecateIn, responses=ImageOut)
    def post(self, request: Request, slug: str) -> Response:
        image = get_object_or_404(Image.objects.catalog(), slug=slug)
        data = DeprecateIn(data=request.data)
        data.is_valid(raise_exception=True)
        image = services.image_deprecate(
            image=image,
            successor=data.validated_data.get("successor"),
            message=data.validated_data["message"],
            actor=Actor.from_request(request),
        )
        return Response(ImageOut(image).data)


class BuildDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses=BuildOut)
    def get(self, request: Request, pk: int) -> Response:
        build = get_object_or_404(ImageBuild.objects.select_related("revision__image"), pk=pk)
        return Response({**BuildOut(build).data, "log": build.log})
