"""Every response carries ``X-Request-ID`` (the client's, when it sent a sane one).

An exception no inner layer handled is logged with that id and answered as a
JSON error that names only the id: no stack, no detail.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.middleware.json_response import send_json_error

log = logging.getLogger("ctops.http")

_SANE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            # No response headers to stamp; every pushed message would pay for a wrapper.
            return await self.app(scope, receive, send)

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("Unhandled error (request %s)", request_id)
            if scope["type"] != "http" or started:
                raise
            await send_json_error(
                send_with_id, 500, "Internal error", "INTERNAL_SERVER_ERROR", extensions={"requestId": request_id}
            )
