"""The audit filter as people and scripts send it: query parameters, checked once."""

from __future__ import annotations

from django import forms
from django.conf import settings

from portal.audit.models import Outcome
from portal.audit.selectors import AuditFilter

FILTER_FIELDS = ("actor", "team", "action", "outcome", "since", "until")


class AuditFilterForm(forms.Form):
    """Filters and the keyset cursor, shared by the audit page, its exports and the API."""

    actor = forms.CharField(required=False, max_length=150, help_text="Username, system or anonymous.")
    team = forms.CharField(required=False, max_length=40, help_text="Team slug.")
    action = forms.CharField(required=False, max_length=64, help_text="Action or its start, e.g. team.")
    outcome = forms.ChoiceField(required=False, choices=[("", "Any"), *Outcome.choices])
    since = forms.DateTimeField(required=False, help_text="From this time (inclusive).")
    until = forms.DateTimeField(required=False, help_text="Up to this time (exclusive).")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)
    limit = forms.IntegerField(required=False, min_value=1, max_value=settings.DOCKYARD_AUDIT_PAGE_SIZE_MAX)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("before") is not None and data.get("after") is not None:
            raise forms.ValidationError("Give either before or after, not both.")
        since, until = data.get("since"), data.get("until")
        if since and until and since >= until:
            self.add_error("until", "Must be later than since.")
        return data

    def filters(self) -> AuditFilter:
        return AuditFilter(**{name: self.cleaned_data[name] for name in FILTER_FIELDS})

    def page_size(self) -> int:
        return self.cleaned_data.get("limit") or settings.DOCKYARD_AUDIT_PAGE_SIZE
