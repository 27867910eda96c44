"""Pages: API tokens in settings, team members, switching the active team."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.accounts import selectors, services
from portal.accounts.forms import MemberAddForm, MemberRoleForm, TokenCreateForm
from portal.accounts.middleware import ACTIVE_TEAM_SESSION_KEY
from portal.accounts.models import ApiToken, Membership
from portal.accounts.permissions import team_manageable_or_403, team_visible_or_404
from portal.audit.services import Actor


@never_cache
@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    form = TokenCreateForm(request.POST or None)
    new_token = None
    if request.method == "POST" and form.is_valid():
        try:
            _, new_token = services.token_create(
                user=request.user,
                name=form.cleaned_data["name"],
                expires_at=form.expires_at(),
                actor=Actor.from_request(request),
            )
        except ValidationError as refused:
            form.add_error(None, refused)
        else:
            # Rendered, not redirected: the raw token exists only in this one response.
            form = TokenCreateForm()
    context = {"form": form, "tokens": selectors.token_list_for(user=request.user), "new_token": new_token}
    return render(request, "accounts/tokens.html", context, status=400 if form.errors else 200)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken.objects.filter(user=request.user), pk=pk)
    services.token_revoke(token=token, actor=Actor.from_request(request))
    messages.success(request, f"Token “{token.name}” revoked. Scripts using it now get 401.")
    return redirect("token-list")


@login_required
def team_detail(request: HttpRequest, slug: str) -> HttpResponse:
    team = team_visible_or_404(user=request.user, slug=slug)
    context = {
        "team": team,
        "members": selectors.team_member_list(team=team),
        "can_manage": services.user_can_manage_team(user=request.user, team=team),
    }
    return render(request, "accounts/team_detail.html", context)


@login_required
def team_members(request: HttpRequest, slug: str) -> HttpResponse:
    """The team admin's page: add people, change roles, remove people."""
    if request.method == "POST":
        return _member_add(request, slug)
    team = team_manageable_or_403(user=request.user, slug=slug)
    return _render_members(request, team, MemberAddForm())


def _render_members(request, team, form, status=200) -> HttpResponse:
    context = {
        "team": team,
        "members": selectors.team_member_list(team=team),
        "form": form,
        "role_choices": MemberRoleForm.base_fields["role"].choices,
    }
    return render(request, "accounts/team_members.html", context, status=status)


def _member_add(request, slug: str) -> HttpResponse:
    team = team_visible_or_404(user=request.user, slug=slug)
    form = MemberAddForm(request.POST)
    if form.is_valid():
        try:
            services.membership_add(
                team=team,
                user=form.cleaned_data["username"],
                role=form.cleaned_data["role"],
                by=request.user,
                actor=Actor.from_request(request),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"{form.cleaned_data['username'].username} added to {team.slug}.")
            return redirect("team-members", slug=team.slug)
    return _render_members(request, team, form, status=400)


@require_POST
@login_required
def member_update(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    membership = _membership_or_404(request, slug, username)
    form = MemberRoleForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError("Choose a role: member or team admin.")
        services.membership_set_role(
            membership=membership, role=form.cleaned_data["role"], by=request.user, actor=Actor.from_request(request)
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{username} is now {form.cleaned_data['role'].replace('_', ' ')}.")
    return redirect("team-members", slug=slug)


@require_POST
@login_required
def member_remove(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    membership = _membership_or_404(request, slug, username)
    try:
        services.membership_remove(membership=membership, by=request.user, actor=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, f"{username} removed from {slug}.")
    if membership.user_id == request.user.pk and not request.user.is_staff:
        return redirect("home")
    return redirect("team-members", slug=slug)


def _membership_or_404(request, slug: str, username: str) -> Membership:
    team = team_visible_or_404(user=request.user, slug=slug)
    return get_object_or_404(Membership.objects.select_related("team", "user"), team=team, user__username=username)


@require_POST
@login_required
def team_switch(request: HttpRequest) -> HttpResponse:
    """Makes one of the person's teams the active one (kept in the session)."""
    wanted = request.POST.get("team", "")
    membership = next((m for m in request.my_memberships if m.team.slug == wanted), None)
    if membership is None:
        raise PermissionDenied("You are not a member of that team.")
    request.session[ACTIVE_TEAM_SESSION_KEY] = membership.team_id
    next_url = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = "/"
    return redirect(next_url)
