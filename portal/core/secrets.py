"""Secret values (env vars people mark secret) stored encrypted and shown masked.

Encrypted with Fernet under DOCKYARD_SECRETS_KEY, or a key derived from SECRET_KEY when that is
not set. Changing the key makes stored secrets unreadable: set DOCKYARD_SECRETS_KEY once and keep it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

MASK = "********"


@cache
def _fernet(key: str, secret_key: str) -> Fernet:
    if key:
        return Fernet(key.encode())
    derived = hashlib.sha256(b"dockyard-secrets:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def _current() -> Fernet:
    return _fernet(settings.DOCKYARD_SECRETS_KEY, settings.SECRET_KEY)


def secrets_seal(values: dict[str, str]) -> str:
    """Encrypts a name → value mapping into one token ("" for none)."""
    if not values:
        return ""
    return _current().encrypt(json.dumps(values, sort_keys=True).encode()).decode()


def secrets_open(token: str) -> dict[str, str]:
    """The mapping `secrets_seal` encrypted. Raises ValueError if the key changed."""
    if not token:
        return {}
    try:
        return json.loads(_current().decrypt(token.encode()))
    except InvalidToken:
        raise ValueError("Stored secrets cannot be read with the current DOCKYARD_SECRETS_KEY.") from None


def secrets_masked(names) -> dict[str, str]:
    """What people and logs see instead of secret values."""
    return dict.fromkeys(sorted(names), MASK)
