"""REST API for training jobs and experiments."""

from __future__ import annotations

import json

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import logs, selectors, services
from jobs.models import Experiment, Job, JobOutput, JobState
from portal.accounts.models import Team
from portal.audit.services import Actor
from portal.catalog.environments.selectors import environment_labels
from portal.catalog.environments.services import environment_revision_resolve, environment_team_default
from portal.catalog.models import Image
from portal.core.api import StrictSerializer
from portal.core.secrets import secrets_masked
from portal.core.streaming import file_download
from portal.quotas.models import ResourceProfile
from portal.workloads.services import IllegalTransition


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The job has already ended."


class JobAttemptOut(serializers.Serializer):
    number = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()
    exit_code = serializers.IntegerField(allow_null=True)
    reason = serializers.CharField()
    log_truncated = serializers.BooleanField()


class JobEventOut(serializers.Serializer):
    created_at = serializers.DateTimeField()
    step = serializers.CharField()
    state = serializers.CharField()
    message = serializers.CharField()
    level = serializers.CharField()


class JobOut(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    team = serializers.CharField(source="team.slug")
    image = serializers.CharField(source="image.slug")
    environment = serializers.SerializerMethodField(help_text="<slug>@<revision> when run from an environment.")
    profile = serializers.CharField(source="profile.slug")
    command = serializers.SerializerMethodField(help_text="As submitted: a list of arguments or a shell string.")
    secret_env = serializers.SerializerMethodField(help_text="Names only; values are never shown.")
    code_sha256 = serializers.CharField(source="code.sha256", default=None)
    code_source = serializers.CharField(source="code.source", default=None)
    experiment = serializers.UUIDField(source="experiment_id")
    rerun_of = serializers.UUIDField(source="rerun_of_id")
    queue_position = serializers.SerializerMethodField(help_text="Place in the queue while waiting (1 = next).")

    class Meta:
        model = Job
        fields = [
            "id", "name", "owner", "team", "state", "image", "environment", "image_digest", "profile", "cpus",
            "memory_gib",
            "gpus", "command", "shell", "parameters", "env", "secret_env", "code_sha256", "code_source",
            "priority", "timeout_s", "max_retries", "nodes", "attempt", "retry_at", "exit_code", "reason",
            "error_message", "metrics_last", "queue_position", "experiment", "rerun_of", "created_at", "started_at",
            "stopped_at", "node",
        ]  # fmt: skip

    @extend_schema_field(OpenApiTypes.ANY)
    def get_command(self, job: Job):
        return job.command[0] if job.shell else job.command

    def get_secret_env(self, job: Job) -> dict:
        return secrets_masked(job.secret_env_names)

    def get_queue_position(self, job: Job) -> int | None:
        return self.context.get("positions", {}).get(job.pk)

    def get_environment(self, job: Job) -> str | None:
        return self.context.get("environments", {}).get(job.environment_revision_id)


class JobDetailOut(JobOut):
    wait_reason = serializers.SerializerMethodField(help_text="Why a queued job waits (the limit it would hit).")
    attempts = JobAttemptOut(many=True, source="attempt_list")
    events = JobEventOut(many=True, source="event_list")
    secrets_left_out = serializers.SerializerMethodField(
        help_text="Secret names of the job it reruns that it runs without: they go only to that job's owner."
    )

    class Meta(JobOut.Meta):
        fields = [*JobOut.Meta.fields, "wait_reason", "attempts", "events", "secrets_left_out"]

    def get_secrets_left_out(self, job: Job) -> list[str]:
        return services.job_secrets_left_out(job=job)

    def get_wait_reason(self, job: Job) -> str:
        return selectors.job_wait_reason(job=job)


class JobIn(StrictSerializer):
    name = serializers.CharField(max_length=100)
    team = serializers.SlugRelatedField(slug_field="slug", queryset=Team.objects.all())
    image = serializers.SlugRelatedField(slug_field="slug", queryset=Image.objects.catalog(), required=False)
    environment = serializers.CharField(
        required=False, help_text="<slug>@<revision> instead of an image (the team's default with neither)."
    )
    profile = serializers.SlugRelatedField(
        slug_field="slug", queryset=ResourceProfile.objects.all(), required=False,
        help_text="Default: the environment's profile.",
    )  # fmt: skip
    command = serializers.JSONField(
        help_text='["python3", "train.py", "--lr", "{lr}"] or "python3 train.py | tee log".'
    )
    env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    secret_env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    parameters = serializers.JSONField(
        required=False, default=dict, help_text="Names to values: PARAM_<NAME> and {name}."
    )
    priority = serializers.IntegerField(required=False, default=0)
    timeout_s = serializers.IntegerField(required=False, allow_null=True, default=None)
    max_retries = serializers.IntegerField(required=False, default=0)
    nodes = serializers.IntegerField(required=False, default=1, help_text="Pods training together (Kubernetes).")
    code_workspace = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="Snapshot a folder of this running workspace of yours."
    )
    code_path = serializers.CharField(required=False, allow_blank=True, default="", help_text="Folder in its home.")


class ExperimentIn(JobIn):
    sweep = serializers.JSONField(
        help_text='{"grid": {"lr": [0.1, 0.01]}} or {"random": {"samples": 8, "ranges": ...}}.'
    )
    metric_goals = serializers.JSONField(required=False, default=dict, help_text='{"loss": "min", "acc": "max"}.')


def _spec_from_request(request: Request, serializer_class) -> tuple[dict, services.JobSpec]:
    """JSON, or multipart with the spec as JSON in the `spec` part and the archive in `code`."""
    upload = None
    if request.content_type.startswith("multipart/"):
        try:
            raw = json.loads(request.data.get("spec") or "{}")
        except ValueError:
            raise ValidationError({"spec": "The spec part must be JSON."}) from None
        upload = request.FILES.get("code")
    else:
        raw = request.data
    data = serializer_class(data=raw)
    data.is_valid(raise_exception=True)
    values = dict(data.validated_data)
    environment = None
    if values.get("image") and values.get("environment"):
        raise ValidationError({"environment": "Give an image or an environment, not both."})
    if values.get("environment"):
        environment = environment_revision_resolve(user=request.user, ref=values["environment"])
    elif not values.get("image"):
        environment = environment_team_default(team=values["team"])  # what the job runs: its size too
    profile = values.get("profile") or (environment.profile if environment is not None else None)
    if profile is None:
        raise ValidationError({"profile": "Choose a size."})
    code = None
    if upload is not None and values.get("code_workspace"):
        raise ValidationError({"code": "Give code either as an archive or from a workspace, not both."})
    if upload is not None:
        code = services.code_archive_upload(
            owner=request.user, team=values["team"], upload=upload, filename=upload.name
        )
    elif values.get("code_workspace"):
        from workspaces.models import Workspace

        workspace = Workspace.objects.filter(pk=values["code_workspace"], owner=request.user).first()
        if workspace is None:
            raise ValidationError({"code_workspace": "You have no workspace with that id."})
        code = services.code_archive_from_workspace(owner=request.user, workspace=workspace, path=values["code_path"])
    job_spec = services.JobSpec(
        name=values["name"], team=values["team"], image=values.get("image"), environment_revision=environment,
        profile=profile,
        command=values["command"], env=values["env"], secret_env=values["secret_env"],
        parameters=values["parameters"], priority=values["priority"], timeout_s=values["timeout_s"],
        max_retries=values["max_retries"], nodes=values["nodes"], code=code,
    )  # fmt: skip
    return values, job_spec


def _get(request, pk) -> Job:
    job = selectors.job_visible_to(user=request.user).filter(pk=pk).first()
    if job is None:
        raise Http404
    return job


def _detail(job: Job) -> dict:
    job.attempt_list = list(selectors.job_attempts_brief(job=job))
    job.event_list = list(selectors.job_events(job=job))
    return JobDetailOut(job, context=_list_context([job])).data


def _list_context(jobs: list[Job]) -> dict:
    return {
        "positions": selectors.job_queue_positions(jobs=jobs),
        "environments": environment_labels(revision_ids=[j.environment_revision_id for j in jobs]),
    }


PARSERS = [JSONParser, MultiPartParser, FormParser]


class JobListView(APIView):
    parser_classes = PARSERS

    @extend_schema(
        parameters=[
            OpenApiParameter("state", str, enum=JobState.values),
            OpenApiParameter("team", str),
            OpenApiParameter("experiment", OpenApiTypes.UUID),
            OpenApiParameter("mine", bool, description="Only jobs I submitted."),
            OpenApiParameter("limit", int, description="At most this many, newest first (default 100, max 1000)."),
        ],
        responses=JobOut(many=True),
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state", "")
        if state and state not in JobState.values:
            raise ValidationError({"state": f"Use one of: {', '.join(JobState.values)}."})
        try:
            limit = min(max(int(params.get("limit", 100)), 1), 1000)
        except ValueError:
            raise ValidationError({"limit": "A whole number."}) from None
        jobs = list(
            selectors.job_list(
                user=request.user,
                state=state,
                team=params.get("team", ""),
                experiment=params.get("experiment") or None,
                mine=params.get("mine") in ("1", "true"),
            )[:limit]
        )
        return Response(JobOut(jobs, many=True, context=_list_context(jobs)).data)

    @extend_schema(request=JobIn, responses={201: JobDetailOut})
    def post(self, request: Request) -> Response:
        _, job_spec = _spec_from_request(request, JobIn)
        job = services.job_submit(owner=request.user, job_spec=job_spec, actor=Actor.from_request(request))
        return Response(_detail(_get(request, job.pk)), status=status.HTTP_201_CREATED)


class JobDetailView(APIView):
    @extend_schema(responses=JobDetailOut)
    def get(self, request: Request, pk) -> Response:
        return Response(_detail(_get(request, pk)))


class JobCancelView(APIView):
    @extend_schema(request=None, responses=JobDetailOut)
    def post(self, request: Request, pk) -> Response:
        job = _get(request, pk)
        try:
            services.job_cancel(job=job, by=request.user, actor=Actor.from_request(request))
        except IllegalTransition as conflict:
            raise Conflict(str(conflict)) from None
        return Response(_detail(_get(request, pk)))


class JobRerunView(APIView):
    @extend_schema(request=None, responses={201: JobDetailOut})
    def post(self, request: Request, pk) -> Response:
        job = services.job_rerun(job=_get(request, pk), by=request.user, actor=Actor.from_request(request))
        return Response(_detail(_get(request, job.pk)), status=status.HTTP_201_CREATED)


class JobOpenInWorkspaceIn(StrictSerializer):
    name = serializers.CharField(required=False, default="", allow_blank=True, max_length=63)
    profile = serializers.SlugRelatedField(
        slug_field="slug", queryset=ResourceProfile.objects.filter(is_active=True), required=False
    )


class JobOpenInWorkspaceView(APIView):
    @extend_schema(request=JobOpenInWorkspaceIn, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk) -> Response:
        """A workspace reproducing a finished job: its image digest (and environment revision),
        code at /code (read-only), parameters as PARAM_* and env. Returns the workspace."""
        from workspaces import api as workspace_api
        from workspaces.services import QuotaRefused, workspace_reproduce

        job = _get(request, pk)
        data = JobOpenInWorkspaceIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            workspace = workspace_reproduce(
                job=job, by=request.user, actor=Actor.from_request(request), name=data.validated_data["name"],
                profile=data.validated_data.get("profile"),
            )  # fmt: skip
        except QuotaRefused as refused:
            raise PermissionDenied(str(refused)) from None
        return Response(workspace_api.workspace_detail_data(request, workspace.pk), status=status.HTTP_201_CREATED)


class PlainTextRenderer(BaseRenderer):
    """Lets clients ask for `text/plain` (the log); errors are still JSON text."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, str | bytes) else json.dumps(data)


class JobLogsView(APIView):
    renderer_classes = [JSONRenderer, PlainTextRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("follow", bool, description="Keep streaming until the job ends.")],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    def get(self, request: Request, pk):
        job = _get(request, pk)
        follow = request.query_params.get("follow") in ("1", "true")
        body = logs.job_log_stream(job_id=job.pk, follow=follow)
        response = StreamingHttpResponse(body, content_type="text/plain; charset=utf-8")
        response["Cache-Control"] = "no-store"
        response["X-Accel-Buffering"] = "no"  # proxies in front must not hold the stream back
        return response


class JobMetricsView(APIView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, pk) -> Response:
        job = _get(request, pk)
        series = services.job_metrics_refresh(job=job, max_age_s=1.0)
        return Response({"state": job.state, "metrics": series, "last": {k: v[-1][1] for k, v in series.items() if v}})


class OutputOut(serializers.ModelSerializer):
    class Meta:
        model = JobOutput
        fields = ["path", "size_bytes"]


class JobOutputListView(APIView):
    @extend_schema(responses=OutputOut(many=True))
    def get(self, request: Request, pk) -> Response:
        job = _get(request, pk)
        return Response(OutputOut(job.outputs.all(), many=True).data)


class JobOutputDownloadView(APIView):
    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, pk, path: str):
        job = _get(request, pk)
        output = job.outputs.filter(path=path).first()
        if output is None:
            raise Http404
        handle = services.job_output_open(job=job, output=output, user=request.user, ip=Actor.from_request(request).ip)
        return file_download(request, handle, filename=output.path.rsplit("/", 1)[-1], size=output.size_bytes)


class ExperimentOut(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    team = serializers.CharField(source="team.slug")
    job_count = serializers.IntegerField()

    class Meta:
        model = Experiment
        fields = ["id", "name", "owner", "team", "sweep", "metric_goals", "job_count", "created_at"]


class ExperimentRowOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    state = serializers.CharField()
    parameters = serializers.DictField()
    metrics = serializers.DictField(source="metrics_last")


class ExperimentDetailOut(ExperimentOut):
    jobs = serializers.SerializerMethodField()
    best = serializers.SerializerMethodField(help_text="Metric name → id of the best job.")

    class Meta(ExperimentOut.Meta):
        fields = [*ExperimentOut.Meta.fields, "jobs", "best"]

    def get_jobs(self, experiment) -> list:
        return ExperimentRowOut(self.context["jobs"], many=True).data

    def get_best(self, experiment) -> dict:
        return {k: str(v) if v else None for k, v in self.context["table"]["best"].items()}


def experiment_detail(request, pk) -> dict:
    experiment = selectors.experiment_visible_to(user=request.user).filter(pk=pk).first()
    if experiment is None:
        raise Http404
    jobs = list(selectors.job_list(user=request.user, experiment=experiment.pk).order_by("created_at"))
    table = selectors.experiment_table(experiment=experiment, jobs=jobs)
    return ExperimentDetailOut(experiment, context={"jobs": jobs, "table": table}).data


class ExperimentListView(APIView):
    parser_classes = PARSERS

    @extend_schema(responses=ExperimentOut(many=True))
    def get(self, request: Request) -> Response:
        return Response(ExperimentOut(selectors.experiment_visible_to(user=request.user)[:200], many=True).data)

    @extend_schema(request=ExperimentIn, responses={201: ExperimentDetailOut})
    def post(self, request: Request) -> Response:
        values, job_spec = _spec_from_request(request, ExperimentIn)
        experiment = services.experiment_submit(
            owner=request.user, name=values["name"], job_spec=job_spec, sweep=values["sweep"],
            metric_goals=values["metric_goals"], actor=Actor.from_request(request),
        )  # fmt: skip
        return Response(experiment_detail(request, experiment.pk), status=status.HTTP_201_CREATED)


class ExperimentDetailView(APIView):
    @extend_schema(responses=ExperimentDetailOut)
    def get(self, request: Request, pk) -> Response:
        return Response(experiment_detail(request, pk))
