"""Reading the catalog: what a person may see and start, with the filters of the catalog page."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from portal.catalog.models import Image, ImageBuild, ImageRevision, ImageStatus


def image_list_visible_to(
    *, user, framework: str = "", gpu: str = "", version: str = "", include_unready: bool = False
) -> QuerySet[Image]:
    """Images a person may see; only ready ones unless asked (staff see drafts and failures)."""
    images = Image.objects.visible_to(user).select_related("current_revision", "successor")
    if not include_unready:
        images = images.filter(status=ImageStatus.READY)
    if framework:
        images = images.filter(framework__iexact=framework)
    if gpu in ("yes", "no"):
        images = images.filter(gpu_capable=(gpu == "yes"))
    if version:
        images = images.filter(framework_version__startswith=version)
    return images.order_by("slug")


def image_get_visible(*, user, slug: str) -> Image:
    return Image.objects.visible_to(user).select_related("current_revision", "successor").get(slug=slug)


def image_revisions(*, image: Image) -> QuerySet[ImageRevision]:
    latest_builds = ImageBuild.objects.order_by("-created_at")
    return image.revisions.order_by("-number").prefetch_related(Prefetch("builds", queryset=latest_builds))


def image_frameworks(*, user) -> list[str]:
    return sorted(set(Image.objects.visible_to(user).exclude(framework="").values_list("framework", flat=True)))
