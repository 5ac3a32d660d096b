"""Bearer-token authentication for HTTP requests to /graphql.

CORS preflights and websocket upgrades pass (websockets authenticate in
``connection_init``). A missing, unknown or revoked token gets 401 with a JSON
body that does not say which part was wrong.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from backend.middleware.json_response import send_json_error
from backend.services import tokens


def bearer(scope: Scope) -> str | None:
    header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class AuthMiddleware:
    def __init__(self, app: ASGIApp, paths: tuple[str, ...] = ("/graphql",)) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") not in self.paths or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        secret = bearer(scope)
        viewer = await tokens.authenticate(secret) if secret else None
        if viewer is None:
            return await send_json_error(
                send, 401, "Authentication required: send a valid token as `Authorization: Bearer <token>`.",
                "UNAUTHENTICATED", {"www-authenticate": "Bearer"},
            )
        scope.setdefault("state", {})["viewer"] = viewer
        await self.app(scope, receive, send)
