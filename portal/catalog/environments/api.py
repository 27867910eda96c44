"""REST API for environments, under /api/v1/environments/. Secret values never leave: they are
shown as ******** and only their names are exported."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.accounts.models import Team
from portal.audit.services import Actor
from portal.catalog.environments import capture, exchange, selectors, services
from portal.catalog.models import Environment, EnvironmentRevision, Image, ImageBuild
from portal.core.api import StrictSerializer
from portal.core.secrets import MASK, secrets_masked
from portal.quotas.models import ResourceProfile

# --- Output -------------------------------------------------------------------------------------


class EnvironmentBuildOut(serializers.Serializer):
    id = serializers.IntegerField()
    revision = serializers.IntegerField(source="revision.number")
    status = serializers.CharField()
    progress = serializers.FloatField()
    step = serializers.CharField()
    error = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class EnvironmentRevisionOut(serializers.Serializer):
    number = serializers.IntegerField()
    ref = serializers.CharField(help_text="<slug>@<number>: what workspaces and jobs name to launch it.")
    status = serializers.CharField()
    digest = serializers.CharField()
    base_image = serializers.CharField(source="base_revision.image.slug")
    base_digest = serializers.CharField()
    pip = serializers.ListField(source="pip_requirements", child=serializers.CharField())
    apt = serializers.ListField(source="apt_packages", child=serializers.CharField())
    lock = serializers.ListField(child=serializers.CharField(), help_text="name==version --hash=sha256:...")
    from_lock = serializers.SerializerMethodField(help_text="Built from a lock (pip --require-hashes --no-deps).")
    env = serializers.DictField(child=serializers.CharField())
    secret_env = serializers.SerializerMethodField(help_text="Names only; values are never shown.")
    profile = serializers.CharField(source="profile.slug", default=None, read_only=True)
    startup_script = serializers.CharField()
    origin = serializers.CharField()
    note = serializers.CharField()
    changes = serializers.SerializerMethodField(help_text="Against the revision before it.")
    created_by = serializers.CharField(source="created_by.username", default=None)
    created_at = serializers.DateTimeField()
    built_at = serializers.DateTimeField(source="image_revision.built_at", allow_null=True)

    def get_secret_env(self, revision: EnvironmentRevision) -> dict:
        return secrets_masked(revision.secret_env_names)

    def get_from_lock(self, revision: EnvironmentRevision) -> bool:
        return bool(revision.from_lock)

    def get_changes(self, revision: EnvironmentRevision) -> dict:
        changes = getattr(revision, "changes", None)
        return changes.as_dict() if changes is not None else {}


class EnvironmentOut(serializers.Serializer):
    slug = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    team = serializers.CharField(source="team.slug")
    shared = serializers.BooleanField()
    status = serializers.CharField(source="image.status")
    latest_revision = serializers.SerializerMethodField()
    latest_ready = serializers.SerializerMethodField(help_text="The newest built revision, if any.")
    team_default = serializers.SerializerMethodField(help_text="Its revision that is the team's default, if any.")
    created_by = serializers.CharField(source="created_by.username", default=None)
    created_at = serializers.DateTimeField()

    def get_latest_revision(self, environment: Environment) -> int | None:
        revisions = environment.revision_list
        return revisions[0].number if revisions else None

    def get_latest_ready(self, environment: Environment) -> int | None:
        return next((r.number for r in environment.revision_list if r.is_ready), None)

    def get_team_default(self, environment: Environment) -> int | None:
        default = self.context.get("defaults", {}).get(environment.team_id)
        return default.number if default is not None and default.environment_id == environment.pk else None


class EnvironmentDetailOut(EnvironmentOut):
    revisions = EnvironmentRevisionOut(many=True, source="detail_revisions")
    build = serializers.SerializerMethodField(help_text="The latest build, with its progress.")

    def get_build(self, environment: Environment) -> dict | None:
        build = self.context.get("build")
        return EnvironmentBuildOut(build).data if build is not None else None


def environment_detail_data(environment: Environment) -> dict:
    environment.detail_revisions = selectors.environment_revision_list(environment=environment)
    context = {
        "defaults": selectors.team_defaults(teams=[environment.team_id]),
        "build": selectors.environment_latest_build(environment=environment),
    }
    return EnvironmentDetailOut(environment, context=context).data


# --- Input --------------------------------------------------------------------------------------


def _lines(**kwargs) -> serializers.ListField:
    return serializers.ListField(child=serializers.CharField(), **kwargs)


def _env(**kwargs) -> serializers.DictField:
    return serializers.DictField(child=serializers.CharField(allow_blank=True), **kwargs)


class RecipeIn(StrictSerializer):
    base_image = serializers.SlugRelatedField(
        slug_field="slug", queryset=Image.objects.catalog(), required=False, help_text="A catalog image slug."
    )
    pip = _lines(required=False, help_text='pip requirements, e.g. ["scikit-learn==1.5.2", "six"].')
    apt = _lines(required=False, help_text="Debian packages.")
    env = _env(required=False)
    secret_env = _env(required=False, help_text="Stored encrypted; ******** keeps the current value.")
    profile = serializers.SlugRelatedField(
        slug_field="slug", queryset=ResourceProfile.objects.all(), required=False, allow_null=True
    )
    startup_script = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class EnvironmentIn(RecipeIn):
    slug = serializers.CharField(max_length=40)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    shared = serializers.BooleanField(required=False, default=True)
    base_image = serializers.SlugRelatedField(slug_field="slug", queryset=Image.objects.catalog())


def recipe_from(data: dict, *, previous: EnvironmentRevision | None = None) -> services.Recipe:
    """A Recipe from API input; what is left out stays as in `previous` (secret values too)."""

    def pick(key, attr, default):
        if key in data:
            return data[key]
        return getattr(previous, attr) if previous is not None else default

    secret = data.get("secret_env")
    if secret is None:
        secret = dict.fromkeys(previous.secret_env_names, MASK) if previous else {}
    return services.Recipe(
        base_image=data.get("base_image") or (previous.base_revision.image if previous else None),
        pip=tuple(pick("pip", "pip_requirements", [])),
        apt=tuple(pick("apt", "apt_packages", [])),
        env=dict(pick("env", "env", {})),
        secret_env=dict(secret),
        profile=pick("profile", "profile", None),
        startup_script=pick("startup_script", "startup_script", ""),
    )


class EnvironmentBuildIn(StrictSerializer):
    revision = serializers.IntegerField(
        required=False, help_text="Revision number; the latest by default. A built one is rebuilt from its lock."
    )


class EnvironmentShareIn(StrictSerializer):
    shared = serializers.BooleanField()


class DefaultIn(StrictSerializer):
    revision = serializers.IntegerField(allow_null=True, help_text="null: the team has no default any more.")


class ImportIn(StrictSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    yaml = serializers.CharField(trim_whitespace=False, help_text="The exported file.")
    slug = serializers.CharField(required=False, allow_blank=True, default="", help_text="Another slug.")
    name = serializers.CharField(required=False, allow_blank=True, default="")
    dry_run = serializers.BooleanField(required=False, default=False, help_text="Only check; create nothing.")


class FromWorkspaceIn(StrictSerializer):
    packages = _lines(required=False, help_text="Some of the proposed name==version pins; all by default.")
    environment = serializers.CharField(
        required=False, help_text="Revise the environment the workspace started from (its slug)."
    )
    slug = serializers.CharField(required=False, default="", allow_blank=True, help_text="Else: a new one's slug.")
    name = serializers.CharField(required=False, default="", allow_blank=True)


class YamlParser(BaseParser):
    """An environment file sent as the body (`Content-Type: application/yaml`)."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        return {"yaml": stream.read().decode("utf-8", "replace")}


class TextYamlParser(YamlParser):
    media_type = "text/*"


# --- Views --------------------------------------------------------------------------------------


def _visible(request, slug: str) -> Environment:
    try:
        return selectors.environment_get_visible(user=request.user, slug=slug)
    except Environment.DoesNotExist:
        raise Http404 from None


def _revision(environment: Environment, number) -> EnvironmentRevision:
    revision = environment.revisions.select_related("image_revision").filter(number=number).first()
    if revision is None:
        raise ValidationError({"revision": f"{environment.slug} has no revision {number}."})
    return revision


class EnvironmentListView(APIView):
    @extend_schema(responses=EnvironmentOut(many=True))
    def get(self, request: Request) -> Response:
        environments = list(selectors.environment_list_visible_to(user=request.user))
        defaults = selectors.team_defaults(teams={e.team_id for e in environments})
        return Response(EnvironmentOut(environments, many=True, context={"defaults": defaults}).data)

    @extend_schema(request=EnvironmentIn, responses={201: EnvironmentDetailOut})
    def post(self, request: Request) -> Response:
        data = EnvironmentIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        environment = services.environment_create(
            slug=values["slug"], name=values["name"], description=values["description"], team=values["team"],
            recipe=recipe_from(values), shared=values["shared"], by=request.user, actor=Actor.from_request(request),
        )  # fmt: skip
        return Response(environment_detail_data(_visible(request, environment.slug)), status=status.HTTP_201_CREATED)


class EnvironmentDetailView(APIView):
    @extend_schema(responses=EnvironmentDetailOut)
    def get(self, request: Request, slug: str) -> Response:
        return Response(environment_detail_data(_visible(request, slug)))


class EnvironmentRevisionListView(APIView):
    @extend_schema(request=RecipeIn, responses={201: EnvironmentRevisionOut})
    def post(self, request: Request, slug: str) -> Response:
        """A new revision; fields left out keep the latest revision's values."""
        environment = _visible(request, slug)
        data = RecipeIn(data=request.data)
        data.is_valid(raise_exception=True)
        latest = environment.revisions.order_by("-number").first()
        revision = services.environment_revise(
            environment=environment,
            recipe=recipe_from(data.validated_data, previous=latest),
            by=request.user,
            actor=Actor.from_request(request),
        )
        return Response(EnvironmentRevisionOut(revision).data, status=status.HTTP_201_CREATED)


class EnvironmentBuildView(APIView):
    @extend_schema(request=EnvironmentBuildIn, responses={202: EnvironmentBuildOut})
    def post(self, request: Request, slug: str) -> Response:
        environment = _visible(request, slug)
        data = EnvironmentBuildIn(data=request.data)
        data.is_valid(raise_exception=True)
        revision = (
            _revision(environment, data.validated_data["revision"]) if "revision" in data.validated_data else None
        )
        build = services.environment_build(
            environment=environment, revision=revision, by=request.user, actor=Actor.from_request(request)
        )
        return Response(EnvironmentBuildOut(build).data, status=status.HTTP_202_ACCEPTED)


class EnvironmentBuildDetailView(APIView):
    @extend_schema(responses=EnvironmentBuildOut)
    def get(self, request: Request, slug: str, pk: int) -> Response:
        environment = _visible(request, slug)
        try:
            build = selectors.environment_build_get(environment=environment, build_id=pk)
        except ImageBuild.DoesNotExist:
            raise Http404 from None
        return Response({**EnvironmentBuildOut(build).data, "log": build.log})


class EnvironmentShareView(APIView):
    @extend_schema(request=EnvironmentShareIn, responses=EnvironmentDetailOut)
    def post(self, request: Request, slug: str) -> Response:
        environment = _visible(request, slug)
        data = EnvironmentShareIn(data=request.data)
        data.is_valid(raise_exception=True)
        services.environment_share(
            environment=environment, shared=data.validated_data["shared"], by=request.user,
            actor=Actor.from_request(request),
        )  # fmt: skip
        return Response(environment_detail_data(environment))


class EnvironmentDefaultView(APIView):
    @extend_schema(request=DefaultIn, responses=EnvironmentDetailOut)
    def post(self, request: Request, slug: str) -> Response:
        """Team admins: make revision N the team's default (or, with null, the team has none)."""
        environment = _visible(request, slug)
        data = DefaultIn(data=request.data)
        data.is_valid(raise_exception=True)
        number = data.validated_data["revision"]
        revision = _revision(environment, number) if number is not None else None
        services.environment_default_set(
            team=environment.team, revision=revision, by=request.user, actor=Actor.from_request(request)
        )
        return Response(environment_detail_data(environment))


class EnvironmentExportView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("revision", int, description="Revision number; the newest built by default.")],
        responses={(200, "application/yaml"): OpenApiTypes.STR},
    )
    def get(self, request: Request, slug: str) -> HttpResponse:
        environment = _visible(request, slug)
        number = request.query_params.get("revision")
        revision = _revision(environment, number) if number and number.isdigit() else None
        filename, text = exchange.environment_export(
            environment=environment, revision=revision, by=request.user, actor=Actor.from_request(request)
        )
        return yaml_download(filename, text)


def yaml_download(filename: str, text: str) -> HttpResponse:
    response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


class EnvironmentImportView(APIView):
    parser_classes = [JSONParser, YamlParser, TextYamlParser, MultiPartParser]

    @extend_schema(
        request=ImportIn,
        parameters=[
            OpenApiParameter("team", str, description="With a YAML body: the team to import into."),
            OpenApiParameter("slug", str, description="With a YAML body: another slug."),
            OpenApiParameter("dry_run", bool, description="With a YAML body: only check."),
        ],
        responses={201: OpenApiTypes.OBJECT, 200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        """JSON {"team", "yaml", ...}; the YAML file itself as the body with ?team=; or a form
        with the file as `file` and the other fields beside it."""
        if "file" in request.FILES:
            raw = {**request.data.dict(), "yaml": None}
            raw.pop("file")
            try:
                raw["yaml"] = exchange.environment_file_text(request.FILES["file"])
            except DjangoValidationError as error:
                raise ValidationError({"file": error.messages}) from None
        elif hasattr(request.data, "dict"):
            raw = request.data.dict()
        elif isinstance(request.data, dict):
            raw = dict(request.data)
        else:
            raise ValidationError({"non_field_errors": ["Send a JSON object with team and yaml, or the YAML file."]})
        if "yaml" in raw and len(raw) == 1:
            raw.update({k: v for k, v in request.query_params.items() if k in ("team", "slug", "name", "dry_run")})
        data = ImportIn(data=raw)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        result = exchange.environment_import(
            text=values["yaml"], team=values["team"], slug=values["slug"], name=values["name"],
            dry_run=values["dry_run"], by=request.user, actor=Actor.from_request(request),
        )  # fmt: skip
        if result.environment is None:
            return Response({"environment": None, "warnings": result.warnings})
        detail = environment_detail_data(_visible(request, result.environment.slug))
        return Response({"environment": detail, "warnings": result.warnings}, status=status.HTTP_201_CREATED)


class EnvironmentFromWorkspaceView(APIView):
    """Save a running workspace as an environment: GET proposes, POST saves and builds."""

    def _workspace(self, request, pk):
        from workspaces.models import Workspace

        workspace = Workspace.objects.select_related(
            "owner", "team", "image_revision", "profile", "environment_revision__environment"
        ).filter(pk=pk, owner=request.user)
        if not workspace.exists():
            raise Http404
        return workspace.get()

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk) -> Response:
        workspace = self._workspace(request, pk)
        found = capture.environment_workspace_packages(workspace=workspace, by=request.user)
        started = workspace.environment_revision
        return Response(
            {"workspace": str(workspace.pk), "environment": started.ref if started else None,
             **found.diff.as_dict(), "proposed": found.proposed}
        )  # fmt: skip

    @extend_schema(request=FromWorkspaceIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk) -> Response:
        workspace = self._workspace(request, pk)
        data = FromWorkspaceIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        into = None
        if values.get("environment"):
            into = _visible(request, values["environment"])
        revision, build = capture.environment_save_from_workspace(
            workspace=workspace, by=request.user, actor=Actor.from_request(request), packages=values.get("packages"),
            into=into, slug=values["slug"], name=values["name"],
        )  # fmt: skip
        detail = environment_detail_data(_visible(request, revision.environment.slug))
        body = {"environment": detail, "revision": revision.number, "build": EnvironmentBuildOut(build).data}
        return Response(body, status=status.HTTP_201_CREATED)
