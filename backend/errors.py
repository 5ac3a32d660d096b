"""Typed domain errors.

Services raise these; transports turn them into their own shape (GraphQL
``extensions.code``, HTTP status, CLI exit code). ``str(error)`` is safe to show:
it never carries secrets or stack traces.
"""

from __future__ import annotations

import enum


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


class CheckErrorCode(str, enum.Enum):
    """Why the checker could not inspect, track or refresh something (``extensions.code``)."""

    DNS_FAILED = "DNS_FAILED"
    CONNECTION_REFUSED = "CONNECTION_REFUSED"
    TIMEOUT = "TIMEOUT"
    TLS_HANDSHAKE_FAILED = "TLS_HANDSHAKE_FAILED"
    STARTTLS_NOT_SUPPORTED = "STARTTLS_NOT_SUPPORTED"
    OUTBOUND_DENIED = "OUTBOUND_DENIED"
    INVALID_URL = "INVALID_URL"
    INVALID_CERTIFICATE = "INVALID_CERTIFICATE"
    BAD_PASSWORD = "BAD_PASSWORD"
    TOO_LARGE = "TOO_LARGE"
    RATE_LIMITED = "RATE_LIMITED"
    CERTIFICATE_EXPIRED = "CERTIFICATE_EXPIRED"


class CheckFailed(CtopsError):
    """A checker failure: the code is one of :class:`CheckErrorCode`."""

    def __init__(self, code: CheckErrorCode, message: str, **extensions: object) -> None:
        super().__init__(message, code=CheckErrorCode(code).value, **extensions)
        self.check_code = CheckErrorCode(code)
