"""Environment pages: list, define, the detail page (revisions, what changed, live build
progress), revise, build, share, team default, export and import."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.accounts.services import user_can_manage_team
from portal.audit.services import Actor
from portal.catalog.environments import exchange, selectors, services
from portal.catalog.environments.api import yaml_download
from portal.catalog.environments.forms import EnvironmentForm, ImportForm, RecipeForm
from portal.catalog.models import Environment, EnvironmentRevision, ImageBuild
from portal.core.forms import form_add_validation_error


def _environment(request: HttpRequest, slug: str) -> Environment:
    try:
        return selectors.environment_get_visible(user=request.user, slug=slug)
    except Environment.DoesNotExist:
        raise Http404("No such environment.") from None


def _revision(environment: Environment, number) -> EnvironmentRevision | None:
    if not str(number or "").isdigit():
        return None
    return environment.revisions.select_related("image_revision").filter(number=int(number)).first()


@login_required
def environment_list(request: HttpRequest) -> HttpResponse:
    environments = list(selectors.environment_list_visible_to(user=request.user))
    defaults = selectors.team_defaults(teams={e.team_id for e in environments})
    for environment in environments:
        environment.latest = environment.revision_list[0] if environment.revision_list else None
        environment.ready = next((r for r in environment.revision_list if r.is_ready), None)
        default = defaults.get(environment.team_id)
        environment.default = default if default is not None and default.environment_id == environment.pk else None
    return render(request, "catalog/environment_list.html", {"environments": environments})


@login_required
def environment_create(request: HttpRequest) -> HttpResponse:
    active = request.active_membership
    form = EnvironmentForm(
        request.POST or None, user=request.user, initial={"team": active.team.slug if active else None}
    )
    if request.method == "POST" and form.is_valid():
        data, actor = form.cleaned_data, Actor.from_request(request)
        try:
            environment = services.environment_create(
                slug=data["slug"], name=data["name"], description=data["description"], team=data["team"],
                recipe=form.recipe(), shared=data["shared"], by=request.user, actor=actor,
            )  # fmt: skip
        except ValidationError as error:
            form_add_validation_error(error, form)
        else:
            services.environment_build(environment=environment, by=request.user, actor=actor)
            messages.success(request, f"{environment.slug} is defined and building.")
            return redirect("environment-detail", slug=environment.slug)
    return render(request, "catalog/environment_form.html", {"form": form}, status=400 if form.errors else 200)


@login_required
def environment_detail(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    revisions = selectors.environment_revision_list(environment=environment)
    default = services.environment_team_default(team=environment.team)
    context = {
        "environment": environment,
        "revisions": revisions,
        "latest": revisions[0] if revisions else None,
        "ready": next((r for r in revisions if r.is_ready), None),
        "build": selectors.environment_latest_build(environment=environment),
        "default": default if default is not None and default.environment_id == environment.pk else None,
        "may_manage": services.environment_may_manage(environment=environment, user=request.user),
        "may_set_default": environment.shared and user_can_manage_team(user=request.user, team=environment.team),
    }
    return render(request, "catalog/environment_detail.html", context)


@login_required
def environment_revise(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    latest = environment.revision_list[0]
    form = RecipeForm(request.POST or None, user=request.user, previous=latest)
    if request.method == "POST" and form.is_valid():
        actor = Actor.from_request(request)
        try:
            revision = services.environment_revise(
                environment=environment, recipe=form.recipe(), by=request.user, actor=actor
            )
        except ValidationError as error:
            form_add_validation_error(error, form)
        else:
            services.environment_build(environment=environment, revision=revision, by=request.user, actor=actor)
            messages.success(request, f"{revision.ref} saved and building.")
            return redirect("environment-detail", slug=slug)
    context = {"environment": environment, "form": form, "latest": latest}
    return render(request, "catalog/environment_revise.html", context, status=400 if form.errors else 200)


@require_POST
@login_required
def environment_build(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    try:
        build = services.environment_build(
            environment=environment, revision=_revision(environment, request.POST.get("revision")),
            by=request.user, actor=Actor.from_request(request),
        )  # fmt: skip
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"Building {environment.slug}@{build.revision.number}.")
    return redirect("environment-detail", slug=slug)


@login_required
def environment_build_progress(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The live build part of the page, polled by htmx; when the build ends, the whole page
    reloads to show the new revision's digest, lock and changes."""
    environment = _environment(request, slug)
    try:
        build = selectors.environment_build_get(environment=environment, build_id=pk)
    except ImageBuild.DoesNotExist:
        raise Http404("No such build.") from None
    url = reverse("environment-build-progress", args=[slug, pk])
    response = render(request, "catalog/_build_progress.html", {"build": build, "progress_url": url})
    if not build.is_active:
        response["HX-Refresh"] = "true"
    return response


@require_POST
@login_required
def environment_share(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    shared = request.POST.get("shared") == "1"
    try:
        services.environment_share(
            environment=environment, shared=shared, by=request.user, actor=Actor.from_request(request)
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{slug} is {'shared with ' + environment.team.slug if shared else 'private'}.")
    return redirect("environment-detail", slug=slug)


@require_POST
@login_required
def environment_default(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    revision = _revision(environment, request.POST.get("revision"))
    try:
        services.environment_default_set(
            team=environment.team, revision=revision, by=request.user, actor=Actor.from_request(request)
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        what = f"{revision.ref} is now" if revision else "There is no longer a"
        messages.success(request, f"{what} default environment of {environment.team.slug}.")
    return redirect("environment-detail", slug=slug)


@login_required
def environment_export(request: HttpRequest, slug: str) -> HttpResponse:
    environment = _environment(request, slug)
    filename, text = exchange.environment_export(
        environment=environment, revision=_revision(environment, request.GET.get("revision")), by=request.user,
        actor=Actor.from_request(request),
    )  # fmt: skip
    return yaml_download(filename, text)


@login_required
def environment_import(request: HttpRequest) -> HttpResponse:
    active = request.active_membership
    form = ImportForm(
        request.POST or None, request.FILES or None, user=request.user,
        initial={"team": active.team.slug if active else None},
    )  # fmt: skip
    if request.method == "POST" and form.is_valid():
        data, actor = form.cleaned_data, Actor.from_request(request)
        try:
            result = exchange.environment_import(
                text=data["text"], team=data["team"], slug=data["slug"], by=request.user, actor=actor
            )
        except ValidationError as error:
            form_add_validation_error(error, form)
        else:
            for warning in result.warnings:
                messages.warning(request, warning)
            services.environment_build(environment=result.environment, by=request.user, actor=actor)
            messages.success(request, f"{result.environment.slug} imported; it is building from its lock.")
            return redirect("environment-detail", slug=result.environment.slug)
    return render(request, "catalog/environment_import.html", {"form": form}, status=400 if form.errors else 200)
