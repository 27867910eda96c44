"""Workspace pages: list, create, the live detail page, open, stop, start, delete."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.accounts.models import User
from portal.audit.services import Actor
from portal.catalog.environments import capture
from portal.catalog.environments import services as environment_services
from portal.catalog.environments.forms import SaveWorkspaceForm
from portal.core.forms import form_add_validation_error
from portal.proxy import tickets
from portal.proxy.hosts import notebook_origin
from portal.runtime import RuntimeError_, get_backend
from portal.workloads.services import IllegalTransition
from workspaces import selectors, services
from workspaces.forms import WorkspaceForm, launch_choice, profile_choices
from workspaces.models import Workspace, WorkspaceState

STEPS = [("admitted", "Admitted"), ("image", "Image ready"), ("container", "Container created"),
         ("jupyter", "Waiting for Jupyter"), ("running", "Running")]  # fmt: skip


@login_required
def workspace_list(request: HttpRequest) -> HttpResponse:
    context = {
        "workspaces": selectors.workspace_list_for(user=request.user),
        "shared": selectors.workspace_list_for(user=request.user, shared=True),
    }
    template = "workspaces/_list_rows.html" if request.headers.get("HX-Request") else "workspaces/list.html"
    return render(request, template, context)


@login_required
def workspace_create(request: HttpRequest) -> HttpResponse:
    active = request.active_membership
    team = active.team if active else None
    initial = {"image": request.GET["image"]} if request.GET.get("image") else {}
    form = WorkspaceForm(request.POST or None, user=request.user, team=team, initial=initial)
    if request.method == "POST" and form.is_valid():
        team = form.cleaned_data["team"]
        try:
            workspace = services.workspace_create(
                owner=request.user,
                team=team,
                name=form.cleaned_data["name"],
                **launch_choice(form.cleaned_data["image"]),
                profile=form.cleaned_data["profile"],
                actor=Actor.from_request(request),
                wait=form.cleaned_data["wait"],
            )
        except services.QuotaRefused as refused:
            form.add_error("profile", str(refused))
        except ValidationError as error:
            form_add_validation_error(error, form)
        else:
            return redirect("workspace-detail", pk=workspace.pk)
    context = {"form": form, "profiles": profile_choices(user=request.user, team=team), "team": team}
    return render(request, "workspaces/create.html", context, status=400 if form.errors else 200)


def _workspace(request, pk) -> Workspace:
    workspace = selectors.workspace_visible_to(user=request.user).filter(pk=pk).first()
    if workspace is None:
        raise Http404("No such workspace.")
    return workspace


@login_required
def workspace_detail(request: HttpRequest, pk) -> HttpResponse:
    workspace = _workspace(request, pk)
    events = list(selectors.workspace_events(workspace=workspace))
    positions = selectors.workspace_queue_positions(workspaces=[workspace])
    context = {
        "workspace": workspace,
        "events": events,
        "steps": _steps(workspace, events),
        "queue_position": positions.get(workspace.pk),
        "estimated_start": selectors.workspace_estimated_starts(positions=positions).get(workspace.pk),
        "cull_warning_from": timezone.now() + timedelta(seconds=settings.DOCKYARD_CULL_WARNING_S),
    }
    if workspace.owner_id == request.user.pk:
        context["shares"] = selectors.workspace_share_list(workspace=workspace)
        context["teammates"] = workspace.team.memberships.exclude(user=request.user).select_related("user")
    if request.headers.get("HX-Request"):
        return render(request, "workspaces/_live.html", context)
    return render(request, "workspaces/detail.html", context)


def _steps(workspace: Workspace, events) -> list[dict]:
    """The start steps with their state for the progress bar: done, current, failed or todo."""
    since = [e for e in events if e.step == "admitted"][-1:]  # the latest start only
    latest = events[events.index(since[0]) :] if since else []
    done = {e.step for e in latest}
    steps = []
    for key, label in STEPS:
        if workspace.state == WorkspaceState.FAILED and workspace.error_step == key:
            status = "failed"
        elif key in done or workspace.state == WorkspaceState.RUNNING:
            status = "done"
        else:
            status = "todo"
        steps.append({"key": key, "label": label, "status": status})
    if workspace.state == WorkspaceState.STARTING and steps[3]["status"] == "todo":
        steps[3]["status"] = "current"
    return steps


@login_required
def workspace_logs(request: HttpRequest, pk) -> HttpResponse:
    workspace = _workspace(request, pk)
    backend = get_backend()
    try:
        lines = list(backend.logs(backend.handle_for(workspace.uid), tail=500))
    except RuntimeError_:
        lines = []
    return render(request, "workspaces/_logs.html", {"lines": lines, "workspace": workspace})


@never_cache
@login_required
def workspace_open(request: HttpRequest, pk) -> HttpResponse:
    """Signs this browser in to the workspace's notebook host (see portal/proxy/tickets.py).

    Without `state`, the browser is sent to the notebook host to start the handshake (it
    sets its state cookie and comes back); with it, a one-time ticket is made for this
    person, this state and this portal session, and the browser goes back to redeem it
    (audited when used)."""
    workspace = _workspace(request, pk)
    if not selectors.workspace_user_may_open(user_id=request.user.pk, workspace=workspace):
        raise Http404("No such workspace.")
    if workspace.state != WorkspaceState.RUNNING:
        messages.warning(request, f"{workspace.name} is {workspace.get_state_display().lower()}; start it first.")
        return redirect("workspace-detail", pk=pk)
    next_path = tickets.next_path_safe(request.GET.get("next"))
    state = request.GET.get("state", "")
    if not tickets.state_valid(state):
        return redirect(f"{notebook_origin(workspace.pk)}{tickets.LOGIN_PATH}?{urlencode({'next': next_path})}")
    ticket = tickets.ticket_issue(
        user_id=request.user.pk, workspace_id=str(workspace.pk), state=state, session_key=request.session.session_key
    )
    return redirect(
        f"{notebook_origin(workspace.pk)}{tickets.TICKET_PATH}?{urlencode({'t': ticket, 'next': next_path})}"
    )


def _act(request, pk, action, *, staff_may: bool = False) -> HttpResponse:
    """Runs an owner's action (staff may also stop anything); others get 403."""
    workspace = _workspace(request, pk)
    if workspace.owner_id != request.user.pk and not (staff_may and request.user.is_staff):
        raise PermissionDenied("Only the workspace's owner can do this.")
    try:
        action(workspace)
    except services.QuotaRefused as refused:
        messages.error(request, str(refused))
    except IllegalTransition as conflict:
        messages.error(request, str(conflict))
    return (
        redirect("workspace-detail", pk=pk) if Workspace.objects.filter(pk=pk).exists() else redirect("workspace-list")
    )


@require_POST
@login_required
def workspace_stop(request: HttpRequest, pk) -> HttpResponse:
    return _act(
        request, pk, lambda w: services.workspace_stop(workspace=w, actor=Actor.from_request(request)), staff_may=True
    )


@require_POST
@login_required
def workspace_start(request: HttpRequest, pk) -> HttpResponse:
    return _act(request, pk, lambda w: services.workspace_start(workspace=w, actor=Actor.from_request(request)))


@require_POST
@login_required
def workspace_delete(request: HttpRequest, pk) -> HttpResponse:
    delete_data = request.POST.get("data") == "delete"

    def delete(workspace):
        services.workspace_delete(workspace=workspace, delete_data=delete_data, actor=Actor.from_request(request))
        files = " with its files." if delete_data else "; its files are kept."
        messages.success(request, f"{workspace.name} is being deleted{files}")

    _act(request, pk, delete)
    return redirect("workspace-list")


@require_POST
@login_required
def workspace_share(request: HttpRequest, pk) -> HttpResponse:
    workspace = _workspace(request, pk)
    user = User.objects.filter(username=request.POST.get("user", ""), is_active=True).first()
    try:
        if user is None:
            raise ValidationError("Choose a member of the team.")
        services.workspace_share(workspace=workspace, user=user, by=request.user, actor=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{workspace.name} is shared with {user.username}.")
    return redirect("workspace-detail", pk=pk)


@require_POST
@login_required
def workspace_unshare(request: HttpRequest, pk, username: str) -> HttpResponse:
    workspace = _workspace(request, pk)
    user = User.objects.filter(username=username).first()
    if user is None:
        raise Http404("No such person.")
    services.workspace_unshare(workspace=workspace, user=user, by=request.user, actor=Actor.from_request(request))
    messages.success(request, f"{username} can no longer open {workspace.name}.")
    return redirect("workspace-detail", pk=pk)


@login_required
def workspace_save_environment(request: HttpRequest, pk) -> HttpResponse:
    """Save a running workspace as an environment: the packages installed in it on top of its
    image, for review; saving makes a new environment revision and builds it from the recipe."""
    workspace = _workspace(request, pk)
    if workspace.owner_id != request.user.pk:
        raise PermissionDenied("Only the workspace's owner can save it as an environment.")
    try:
        found = capture.environment_workspace_packages(workspace=workspace, by=request.user)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("workspace-detail", pk=pk)
    started = workspace.environment_revision
    may_revise = started is not None and environment_services.environment_may_manage(
        environment=started.environment, user=request.user
    )
    form = SaveWorkspaceForm(request.POST or None, proposed=found.proposed, started_from=started, may_revise=may_revise)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            revision, _ = capture.environment_save_from_workspace(
                workspace=workspace, by=request.user, actor=Actor.from_request(request), packages=data["packages"],
                into=started.environment if data["target"] == "revise" else None, slug=data["slug"],
                name=data["name"],
            )  # fmt: skip
        except ValidationError as error:
            form_add_validation_error(error, form)
        else:
            messages.success(request, f"{revision.ref} saved; it is building from the recipe.")
            return redirect("environment-detail", slug=revision.environment.slug)
    context = {"workspace": workspace, "diff": found.diff, "form": form, "started": started}
    return render(request, "workspaces/save_environment.html", context, status=400 if form.errors else 200)
