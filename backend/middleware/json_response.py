"""A tiny JSON error answer for middleware (no framework objects needed)."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_json_error(
    send: Send, status: int, message: str, code: str, headers: dict | None = None, extensions: dict | None = None
) -> None:
    error = {"message": message, "extensions": {"code": code, **(extensions or {})}}
    body = json.dumps({"errors": [error]}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
