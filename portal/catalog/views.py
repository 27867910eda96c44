"""Catalog pages: browsing for everyone; creating, building and deprecating for staff."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.audit.services import Actor
from portal.catalog import selectors, services
from portal.catalog.forms import DeprecateForm, ImageDetailsForm, SourceForm
from portal.catalog.models import Image, ImageBuild
from portal.core.forms import form_add_validation_error
from portal.core.permissions import staff_required


@login_required
def image_list(request: HttpRequest) -> HttpResponse:
    filters = {key: request.GET.get(key, "").strip() for key in ("framework", "gpu", "version")}
    images = selectors.image_list_visible_to(user=request.user, include_unready=request.user.is_staff, **filters)
    context = {"images": images, "filters": filters, "frameworks": selectors.image_frameworks(user=request.user)}
    return render(request, "catalog/image_list.html", context)


def _visible_image(request, slug: str) -> Image:
    try:
        return selectors.image_get_visible(user=request.user, slug=slug)
    except Image.DoesNotExist:
        raise Http404("No such image.") from None


@login_required
def image_detail(request: HttpRequest, slug: str) -> HttpResponse:
    image = _visible_image(request, slug)
    context = {"image": image, "revisions": selectors.image_revisions(image=image)}
    if request.user.is_staff:
        context["deprecate_form"] = DeprecateForm(image=image)
    return render(request, "catalog/image_detail.html", context)


@staff_required
def image_create(request: HttpRequest) -> HttpResponse:
    details = ImageDetailsForm(request.POST or None)
    source = SourceForm(request.POST or None)
    if request.method == "POST" and details.is_valid() and source.is_valid():
        try:
            image = services.image_create(
                slug=details.cleaned_data["slug"],
                source=source.spec(),
                details=details.details(),
                teams=details.cleaned_data["teams"],
                by=request.user,
                actor=Actor.from_request(request),
            )
        except ValidationError as error:
            form_add_validation_error(error, details, source)
        else:
            messages.success(request, f"Image {image.slug} created. Build it to make it usable.")
            return redirect("image-detail", slug=image.slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "catalog/image_form.html", {"details": details, "source": source}, status=status)


@staff_required
def image_edit(request: HttpRequest, slug: str) -> HttpResponse:
    image = get_object_or_404(Image.objects.catalog(), slug=slug)
    details = ImageDetailsForm(request.POST or None, instance=Image.objects.get(pk=image.pk))
    if request.method == "POST" and details.is_valid():
        services.image_update(
            image=image,
            details=details.details(),
            teams=details.cleaned_data["teams"],
            actor=Actor.from_request(request),
        )
        messages.success(request, "Details saved.")
        return redirect("image-detail", slug=slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "catalog/image_form.html", {"image": image, "details": details}, status=status)


@staff_required
def image_revise(request: HttpRequest, slug: str) -> HttpResponse:
    image = get_object_or_404(Image.objects.catalog(), slug=slug)
    latest = image.revisions.order_by("-number").first()
    source = SourceForm(request.POST or None, initial=SourceForm.initial_from(latest) if latest else None)
    if request.method == "POST" and source.is_valid():
        try:
            revision = services.image_revise(
                image=image, source=source.spec(), by=request.user, actor=Actor.from_request(request)
            )
        except ValidationError as error:
            form_add_validation_error(error, source)
        else:
            messages.success(request, f"Revision {revision.number} saved. Build it to put it in use.")
            return redirect("image-detail", slug=slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "catalog/image_revise.html", {"image": image, "source": source}, status=status)


@require_POST
@staff_required
def image_build(request: HttpRequest, slug: str) -> HttpResponse:
    image = get_object_or_404(Image.objects.catalog(), slug=slug)
    revision = None
    if number := request.POST.get("revision"):
        revision = get_object_or_404(image.revisions, number=number)
    try:
        build = services.image_build(image=image, revision=revision, by=request.user, actor=Actor.from_request(request))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("image-detail", slug=slug)
    return redirect("image-build", pk=build.pk)


@require_POST
@staff_required
def image_deprecate(request: HttpRequest, slug: str) -> HttpResponse:
    image = get_object_or_404(Image.objects.catalog(), slug=slug)
    form = DeprecateForm(request.POST, image=image)
    if form.is_valid():
        services.image_deprecate(
            image=image,
            successor=form.cleaned_data["successor"],
            message=form.cleaned_data["message"],
            actor=Actor.from_request(request),
        )
        messages.success(request, f"{slug} is deprecated: running work goes on, new work cannot use it.")
    else:
        messages.error(request, "Choose a valid successor.")
    return redirect("image-detail", slug=slug)


@staff_required
def build_detail(request: HttpRequest, pk: int) -> HttpResponse:
    build = get_object_or_404(ImageBuild.objects.select_related("revision__image"), pk=pk)
    return render(request, "catalog/build_detail.html", {"build": build})


@staff_required
def build_progress(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the build page, polled by htmx while the build runs."""
    build = get_object_or_404(ImageBuild.objects.select_related("revision__image"), pk=pk)
    return render(request, "catalog/_build_progress.html", {"build": build})
