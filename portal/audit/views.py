"""The staff audit page and its exports."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.audit import exports, selectors
from portal.audit.forms import FILTER_FIELDS, AuditFilterForm
from portal.core.permissions import staff_required


@require_GET
@never_cache
@staff_required
def event_list(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    context = {"form": form, "filter_query": _filter_query(request), "page": None}
    if not form.is_valid():
        return render(request, "audit/event_list.html", context, status=400)
    context["page"] = selectors.audit_event_page(
        filters=form.filters(),
        limit=form.page_size(),
        before=form.cleaned_data["before"],
        after=form.cleaned_data["after"],
    )
    return render(request, "audit/event_list.html", context)


@require_GET
@staff_required
def event_export_csv(request: HttpRequest) -> HttpResponse:
    return _export(request, exports.csv_chunks, extension="csv", content_type="text/csv; charset=utf-8")


@require_GET
@staff_required
def event_export_jsonl(request: HttpRequest) -> HttpResponse:
    return _export(request, exports.jsonl_chunks, extension="jsonl", content_type="application/x-ndjson")


def _export(request: HttpRequest, encode: Callable, *, extension: str, content_type: str) -> HttpResponse:
    """Every event matching the page's filter (all pages, not just the one on screen)."""
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        message = "The filter is not valid: " + " ".join(_messages(form))
        return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
    events = selectors.audit_event_stream(filters=form.filters())
    return exports.streamed_download(request, encode(events), extension=extension, content_type=content_type)


def _filter_query(request: HttpRequest) -> str:
    """The filter part of the query string, for the pagination and export links."""
    query = request.GET.copy()
    for name in list(query):
        if name not in FILTER_FIELDS or not query[name]:
            del query[name]
    return query.urlencode()


def _messages(form: AuditFilterForm) -> list[str]:
    return [f"{field}: {error}" for field, errors in form.errors.items() for error in errors]
