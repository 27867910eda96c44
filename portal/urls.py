from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from jobs import api as job_api
from jobs import views as job_views
from portal.accounts import api as accounts_api
from portal.accounts import views as accounts_views
from portal.audit import api as audit_api
from portal.audit import views as audit_views
from portal.catalog import api as catalog_api
from portal.catalog import views as catalog_views
from portal.catalog.environments import api as environment_api
from portal.catalog.environments import views as environment_views
from portal.core import health, metrics, system
from portal.core import views as core_views
from portal.core.api import api_not_found
from portal.quotas.urls import api_urlpatterns as quotas_api
from workspaces import api as workspace_api
from workspaces import views as workspace_views

api_v1 = [
    path("workspaces/", workspace_api.WorkspaceListView.as_view(), name="api-workspace-list"),
    path("workspaces/<uuid:pk>/", workspace_api.WorkspaceDetailView.as_view(), name="api-workspace-detail"),
    path("workspaces/<uuid:pk>/shares/", workspace_api.WorkspaceShareListView.as_view(), name="api-workspace-shares"),
    path("workspaces/policies/<slug:team>/", workspace_api.WorkspacePolicyView.as_view(), name="api-workspace-policy"),
    path(
        "workspaces/<uuid:pk>/shares/<str:username>/",
        workspace_api.WorkspaceShareDetailView.as_view(),
        name="api-workspace-share-detail",
    ),
    path(
        "workspaces/<uuid:pk>/start/",
        workspace_api.WorkspaceActionView.as_view(action_name="start"),
        name="api-workspace-start",
    ),
    path(
        "workspaces/<uuid:pk>/stop/",
        workspace_api.WorkspaceActionView.as_view(action_name="stop"),
        name="api-workspace-stop",
    ),
    path("jobs/", job_api.JobListView.as_view(), name="api-job-list"),
    path("jobs/<uuid:pk>/", job_api.JobDetailView.as_view(), name="api-job-detail"),
    path("jobs/<uuid:pk>/cancel/", job_api.JobCancelView.as_view(), name="api-job-cancel"),
    path("jobs/<uuid:pk>/rerun/", job_api.JobRerunView.as_view(), name="api-job-rerun"),
    path("jobs/<uuid:pk>/logs", job_api.JobLogsView.as_view(), name="api-job-logs"),
    path("jobs/<uuid:pk>/metrics", job_api.JobMetricsView.as_view(), name="api-job-metrics"),
    path("jobs/<uuid:pk>/outputs/", job_api.JobOutputListView.as_view(), name="api-job-outputs"),
    path("jobs/<uuid:pk>/outputs/<path:path>", job_api.JobOutputDownloadView.as_view(), name="api-job-output"),
    path("experiments/", job_api.ExperimentListView.as_view(), name="api-experiment-list"),
    path("experiments/<uuid:pk>/", job_api.ExperimentDetailView.as_view(), name="api-experiment-detail"),
    path("images/", catalog_api.ImageListView.as_view(), name="api-image-list"),
    path("images/builds/<int:pk>/", catalog_api.BuildDetailView.as_view(), name="api-image-build"),
    path("images/<slug:slug>/", catalog_api.ImageDetailView.as_view(), name="api-image-detail"),
    path("images/<slug:slug>/builds/", catalog_api.ImageBuildView.as_view(), name="api-image-builds"),
    path("images/<slug:slug>/deprecate/", catalog_api.ImageDeprecateView.as_view(), name="api-image-deprecate"),
    path("environments/", environment_api.EnvironmentListView.as_view(), name="api-environment-list"),
    path("environments/import", environment_api.EnvironmentImportView.as_view(), name="api-environment-import"),
    path(
        "environments/from-workspace/<uuid:pk>/",
        environment_api.EnvironmentFromWorkspaceView.as_view(),
        name="api-environment-from-workspace",
    ),
    path("environments/<slug:slug>/", environment_api.EnvironmentDetailView.as_view(), name="api-environment-detail"),
    path(
        "environments/<slug:slug>/revisions/",
        environment_api.EnvironmentRevisionListView.as_view(),
        name="api-environment-revisions",
    ),
    path(
        "environments/<slug:slug>/build/", environment_api.EnvironmentBuildView.as_view(), name="api-environment-build"
    ),
    path(
        "environments/<slug:slug>/builds/<int:pk>/",
        environment_api.EnvironmentBuildDetailView.as_view(),
        name="api-environment-build-detail",
    ),
    path(
        "environments/<slug:slug>/share/", environment_api.EnvironmentShareView.as_view(), name="api-environment-share"
    ),
    path(
        "environments/<slug:slug>/default/",
        environment_api.EnvironmentDefaultView.as_view(),
        name="api-environment-default",
    ),
    path(
        "environments/<slug:slug>/export",
        environment_api.EnvironmentExportView.as_view(),
        name="api-environment-export",
    ),
    path("jobs/<uuid:pk>/workspace/", job_api.JobOpenInWorkspaceView.as_view(), name="api-job-open-in-workspace"),
    path("audit/", audit_api.AuditEventListView.as_view(), name="api-audit-list"),
    path("me/", accounts_api.MeView.as_view(), name="api-me"),
    path("tokens/", accounts_api.TokenListView.as_view(), name="api-token-list"),
    path("tokens/<int:pk>/", accounts_api.TokenDetailView.as_view(), name="api-token-detail"),
    path("teams/", accounts_api.TeamListView.as_view(), name="api-team-list"),
    path("teams/<slug:slug>/", accounts_api.TeamDetailView.as_view(), name="api-team-detail"),
    path("teams/<slug:slug>/members/", accounts_api.TeamMemberListView.as_view(), name="api-team-members"),
    path(
        "teams/<slug:slug>/members/<str:username>/",
        accounts_api.TeamMemberDetailView.as_view(),
        name="api-team-member-detail",
    ),
    *quotas_api,
]

urlpatterns = [
    path("", core_views.home, name="home"),
    path("workspaces/", workspace_views.workspace_list, name="workspace-list"),
    path("workspaces/new/", workspace_views.workspace_create, name="workspace-create"),
    path("workspaces/<uuid:pk>/", workspace_views.workspace_detail, name="workspace-detail"),
    path("workspaces/<uuid:pk>/logs/", workspace_views.workspace_logs, name="workspace-logs"),
    path("workspaces/<uuid:pk>/open/", workspace_views.workspace_open, name="workspace-open"),
    path("workspaces/<uuid:pk>/stop/", workspace_views.workspace_stop, name="workspace-stop"),
    path("workspaces/<uuid:pk>/start/", workspace_views.workspace_start, name="workspace-start"),
    path("workspaces/<uuid:pk>/delete/", workspace_views.workspace_delete, name="workspace-delete"),
    path("workspaces/<uuid:pk>/shares/", workspace_views.workspace_share, name="workspace-share"),
    path(
        "workspaces/<uuid:pk>/shares/<str:username>/remove/",
        workspace_views.workspace_unshare,
        name="workspace-unshare",
    ),
    path("jobs/", job_views.job_list, name="job-list"),
    path("jobs/new/", job_views.job_create, name="job-create"),
    path("jobs/compare/", job_views.job_compare, name="job-compare"),
    path("jobs/<uuid:pk>/", job_views.job_detail, name="job-detail"),
    path("jobs/<uuid:pk>/cancel/", job_views.job_cancel, name="job-cancel"),
    path("jobs/<uuid:pk>/rerun/", job_views.job_rerun, name="job-rerun"),
    path("experiments/", job_views.experiment_list, name="experiment-list"),
    path("experiments/<uuid:pk>/", job_views.experiment_detail, name="experiment-detail"),
    path("experiments/<uuid:pk>/series.json", job_views.experiment_series, name="experiment-series"),
    path("jobs/<uuid:pk>/workspace/", job_views.job_open_in_workspace, name="job-open-in-workspace"),
    path(
        "workspaces/<uuid:pk>/save-environment/",
        workspace_views.workspace_save_environment,
        name="workspace-save-environment",
    ),
    path("environments/", environment_views.environment_list, name="environment-list"),
    path("environments/new/", environment_views.environment_create, name="environment-create"),
    path("environments/import/", environment_views.environment_import, name="environment-import"),
    path("environments/<slug:slug>/", environment_views.environment_detail, name="environment-detail"),
    path("environments/<slug:slug>/revise/", environment_views.environment_revise, name="environment-revise"),
    path("environments/<slug:slug>/build/", environment_views.environment_build, name="environment-build"),
    path(
        "environments/<slug:slug>/builds/<int:pk>/progress/",
        environment_views.environment_build_progress,
        name="environment-build-progress",
    ),
    path("environments/<slug:slug>/share/", environment_views.environment_share, name="environment-share"),
    path("environments/<slug:slug>/default/", environment_views.environment_default, name="environment-default"),
    path("environments/<slug:slug>/export/", environment_views.environment_export, name="environment-export"),
    path("images/", catalog_views.image_list, name="image-list"),
    path("images/new/", catalog_views.image_create, name="image-create"),
    path("images/builds/<int:pk>/", catalog_views.build_detail, name="image-build"),
    path("images/builds/<int:pk>/progress/", catalog_views.build_progress, name="image-build-progress"),
    path("images/<slug:slug>/", catalog_views.image_detail, name="image-detail"),
    path("images/<slug:slug>/edit/", catalog_views.image_edit, name="image-edit"),
    path("images/<slug:slug>/revise/", catalog_views.image_revise, name="image-revise"),
    path("images/<slug:slug>/build/", catalog_views.image_build, name="image-build-start"),
    path("images/<slug:slug>/deprecate/", catalog_views.image_deprecate, name="image-deprecate"),
    path("", include("portal.quotas.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/tokens/", accounts_views.token_list, name="token-list"),
    path("settings/tokens/<int:pk>/revoke/", accounts_views.token_revoke, name="token-revoke"),
    path("teams/switch/", accounts_views.team_switch, name="team-switch"),
    path("teams/<slug:slug>/", accounts_views.team_detail, name="team-detail"),
    path("teams/<slug:slug>/members/", accounts_views.team_members, name="team-members"),
    path("teams/<slug:slug>/members/<str:username>/role/", accounts_views.member_update, name="member-update"),
    path("teams/<slug:slug>/members/<str:username>/remove/", accounts_views.member_remove, name="member-remove"),
    path("audit/", audit_views.event_list, name="audit-list"),
    path("audit/export.csv", audit_views.event_export_csv, name="audit-export-csv"),
    path("audit/export.jsonl", audit_views.event_export_jsonl, name="audit-export-jsonl"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("system/", system.system, name="system"),
    path("system/reconcile/", system.reconcile_now, name="system-reconcile"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
]
