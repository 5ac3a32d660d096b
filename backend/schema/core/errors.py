"""Typed GraphQL errors: every error carries ``extensions.code``.

Domain errors (:class:`backend.errors.CtopsError`) keep their message and code.
Errors graphql-core raises itself (a document that does not fit the schema,
a variable of the wrong type, a limit exceeded) are BAD_USER_INPUT. Anything else is masked to "Internal error" with
``extensions.requestId``, and logged with that id and its stack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from backend.errors import CtopsError

log = logging.getLogger("ctops.graphql")


def _code_for(error: GraphQLError) -> tuple[GraphQLError, bool]:
    """The error to send and whether it was unexpected."""
    original = error.original_error
    while isinstance(original, GraphQLError) and original.original_error is not None:
        original = original.original_error
    if isinstance(original, CtopsError):
        extensions = {**(original.extensions or {}), "code": original.code}
        return _copy(error, str(original), extensions), False
    if original is None:
        extensions = dict(error.extensions or {})
        if "code" not in extensions:
            extensions["code"] = "BAD_USER_INPUT"
        return _copy(error, error.message, extensions), False
    return error, True


def _copy(error: GraphQLError, message: str, extensions: dict) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


def mask(errors: list[GraphQLError], request_id: str | None) -> list[GraphQLError]:
    result = []
    for error in errors:
        coded, unexpected = _code_for(error)
        if unexpected:
            log.error(
                "Unexpected error in %s (request %s)",
                ".".join(str(p) for p in (error.path or [])) or "operation",
                request_id,
                exc_info=error.original_error,
            )
            coded = _copy(error, "Internal error", {"code": "INTERNAL_SERVER_ERROR", "requestId": request_id})
        result.append(coded)
    return result


class ErrorCodes(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if errors:
            context = self.execution_context.context
            result.errors = mask(errors, getattr(context, "request_id", None))
