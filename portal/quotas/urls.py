"""Routes of the quotas app: the usage pages and the REST API (mounted under /api/v1/)."""

from __future__ import annotations

from django.urls import path, re_path

from portal.quotas import api, views

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_csv, name="usage-csv"),
    path("usage/charts.json", views.usage_charts, name="usage-charts"),
]

api_urlpatterns = [
    path("profiles/", api.ProfileListView.as_view(), name="api-profile-list"),
    re_path(r"^quotas/me/?$", api.QuotaMeView.as_view(), name="api-quota-me"),
    path("quotas/teams/<slug:slug>/", api.TeamQuotaView.as_view(), name="api-team-quota"),
    path("quotas/teams/<slug:slug>/users/<str:username>/", api.UserQuotaView.as_view(), name="api-user-quota"),
    path("usage/", api.UsageView.as_view(), name="api-usage"),
]
