"""Typed domain errors.

Services raise these; transports turn them into their own shape (GraphQL
``extensions.code``, HTTP status, CLI exit code). ``str(error)`` is safe to show:
it never carries secrets or stack traces.
"""

from __future__ import annotations


class CtopsError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, **extensions: object) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extensions = extensions


class BadUserInput(CtopsError):
    code = "BAD_USER_INPUT"


class NotFound(CtopsError):
    code = "NOT_FOUND"


class Forbidden(CtopsError):
    code = "FORBIDDEN"


class Unauthenticated(CtopsError):
    code = "UNAUTHENTICATED"


class TooLarge(CtopsError):
    code = "TOO_LARGE"
