"""`Authorization: Bearer <token>` for the REST API."""

from __future__ import annotations

from rest_framework import authentication, exceptions
from structlog.contextvars import bind_contextvars

from portal.accounts.services import token_authenticate


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """Authenticates a request by one of the person's API tokens.

    `request.auth` is the `ApiToken`, so audit events name the token that acted.
    """

    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() != self.keyword.lower():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the token as 'Authorization: Bearer <token>'.")
        token = token_authenticate(raw=header[1])
        if token is None:
            raise exceptions.AuthenticationFailed("This token is not valid: it is unknown, revoked or expired.")
        bind_contextvars(user=token.user.get_username(), token=token.name)  # on this request's log lines
        return token.user, token

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'
