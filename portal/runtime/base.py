"""The contract every runtime backend meets, and the error type it raises."""

from __future__ import annotations

from typing import Protocol


class RuntimeError_(Exception):
    """A backend call failed.

    `permanent`: retrying will not help (e.g. an image that does not exist).
    `reason`: a short machine-readable cause, for metrics and events.
    `user_message`: what a data scientist is told.
    """

    def __init__(self, message: str, *, reason: str = "backend_error", permanent: bool = False, user_message: str = ""):
        super().__init__(message)
        self.reason = reason
        self.permanent = permanent
        self.user_message = user_message or message


class RuntimeBackend(Protocol):
    name: str

    def ping(self) -> None:
        """Returns if the engine or cluster answers; raises RuntimeError_ otherwise."""
