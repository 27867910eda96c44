"""The usage page, its CSV export and the JSON its charts are drawn from."""

from __future__ import annotations

import csv

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.utils import timezone

from portal.accounts.models import Team
from portal.accounts.permissions import team_visible_or_404
from portal.quotas import selectors


@login_required
def usage(request: HttpRequest) -> HttpResponse:
    """Your work against your limits; each managed team per member; every team for staff."""
    user = request.user
    managed = [] if user.is_staff else list(Team.objects.manageable_by(user))
    context = {
        "mine": selectors.quota_status_for(user=user),
        "managed": [(team, selectors.quota_status_for_members(team=team)) for team in managed],
        "all_teams": selectors.team_status_list(teams=Team.objects.all()) if user.is_staff else [],
        "show_charts": user.is_staff or bool(managed),
        "chart_days": settings.DOCKYARD_USAGE_CHART_DAYS,
        "month": timezone.localdate().strftime("%Y-%m"),
    }
    return render(request, "quotas/usage.html", context)


@login_required
def usage_csv(request: HttpRequest) -> HttpResponse:
    """CPU- and GPU-hours per team and person for one month (`?month=YYYY-MM`, `?team=`)."""
    text = request.GET.get("month") or timezone.localdate().strftime("%Y-%m")
    try:
        month = selectors.month_parse(text=text)
    except ValueError:
        return HttpResponseBadRequest("month must look like 2025-03")
    slug = request.GET.get("team")
    teams = (
        [team_visible_or_404(user=request.user, slug=slug)]
        if slug
        else list(selectors.usage_visible_teams(user=request.user))
    )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="dockyard-usage-{month:%Y-%m}.csv"'
    writer = csv.writer(response)
    writer.writerow(["month", "team", "user", "cpu_hours", "gpu_hours"])
    for row in selectors.usage_rows_visible_to(user=request.user, teams=teams, month=month):
        writer.writerow([row.month, row.team, row.username, row.cpu_hours, row.gpu_hours])
    return response


@login_required
def usage_charts(request: HttpRequest) -> JsonResponse:
    """Daily GPU-hours per team (teams you manage; all for staff) and, for staff, utilisation."""
    user = request.user
    days = settings.DOCKYARD_USAGE_CHART_DAYS
    team_ids = None if user.is_staff else list(Team.objects.manageable_by(user).values_list("pk", flat=True))
    data = {"daily_gpu_hours": selectors.daily_gpu_hours(team_ids=team_ids, days=days)}
    if user.is_staff:
        data["utilisation"] = selectors.gpu_utilisation_daily(days=days)
    return JsonResponse(data)
