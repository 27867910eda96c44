"""Showing a service's ValidationError on the form(s) of the page that called it."""

from __future__ import annotations

from django.core.exceptions import ValidationError


def form_add_validation_error(error: ValidationError, *forms) -> None:
    """Puts each field's messages on the form that has that field (else the first form's
    non-field errors), so a refusal from a service reads like any form error."""
    items = error.message_dict.items() if hasattr(error, "error_dict") else [(None, error.messages)]
    for field, messages in items:
        form = next((f for f in forms if field in f.fields), forms[0])
        form.add_error(field if field in form.fields else None, messages)
