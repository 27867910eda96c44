from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from portal.accounts import api as accounts_api
from portal.accounts import views as accounts_views
from portal.core import health
from portal.core import views as core_views
from portal.core.api import api_not_found

api_v1 = [
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
]

urlpatterns = [
    path("", core_views.home, name="home"),
    path("workspaces/", core_views.section("core/workspaces.html"), name="workspace-list"),
    path("jobs/", core_views.section("core/jobs.html"), name="job-list"),
    path("images/", core_views.section("core/images.html"), name="image-list"),
    path("usage/", core_views.section("core/usage.html"), name="usage"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/tokens/", accounts_views.token_list, name="token-list"),
    path("settings/tokens/<int:pk>/revoke/", accounts_views.token_revoke, name="token-revoke"),
    path("teams/switch/", accounts_views.team_switch, name="team-switch"),
    path("teams/<slug:slug>/", accounts_views.team_detail, name="team-detail"),
    path("teams/<slug:slug>/members/", accounts_views.team_members, name="team-members"),
    path("teams/<slug:slug>/members/<str:username>/role/", accounts_views.member_update, name="member-update"),
    path("teams/<slug:slug>/members/<str:username>/remove/", accounts_views.member_remove, name="member-remove"),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    re_path(r"^api/", api_not_found),
]
