"""Conventions every API view shares: one error shape and strict input."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Every error is JSON with a sentence in `detail`; field errors also under `errors`."""
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, ValidationError):
        errors = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        # Every field maps to a list of messages, however the error was raised.
        errors = {
            field: messages if isinstance(messages, list | dict) else [messages] for field, messages in errors.items()
        }
        response.data = {"detail": _sentence(errors), "errors": errors}
    elif not isinstance(response.data, dict) or "detail" not in response.data:
        response.data = {"detail": str(response.data)}
    return response


def _sentence(errors: dict) -> str:
    parts = []
    for field, messages in errors.items():
        message = messages[0] if isinstance(messages, list) and messages else messages
        parts.append(str(message) if field in ("non_field_errors", "__all__") else f"{field}: {message}")
    return " ".join(parts) or "The request is not valid."


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not accept, rather than silently ignoring them.

    Someone sending `is_staff` or `role` where it cannot be set learns so at once (400),
    instead of believing it worked.
    """

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data.keys()) - writable)
            if unknown:
                raise ValidationError({name: ["This field cannot be set here."] for name in unknown})
        return super().to_internal_value(data)


@csrf_exempt  # a POST to a mistyped path gets this 404, not a CSRF page; it changes nothing
def api_not_found(request, *args, **kwargs) -> JsonResponse:
    """Unknown paths under /api/ answer in the API's own error shape, not an HTML page."""
    return JsonResponse({"detail": f"There is no API endpoint at {request.path}."}, status=404)


def no_content() -> Response:
    return Response(status=status.HTTP_204_NO_CONTENT)
