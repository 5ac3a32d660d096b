"""Real notification receivers on loopback, started by the tests.

- :class:`HttpReceiver`: an HTTP (or, with a TLS context, HTTPS) server in a
  thread that records every POST (headers and raw body) and answers a chosen
  status; a webhook test checks the signature and timestamp on what it got,
  a Slack test validates the message.
- :func:`smtp_receiver`: an aiosmtpd server with STARTTLS (a test-CA
  certificate), required before AUTH, checking a user name and password, that
  keeps every message it accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.processes import free_port


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpReceiver:
    def __init__(self, *, status: int = 200, tls: ssl.SSLContext | None = None, answer: bytes = b"ok") -> None:
        self.status = status
        self.answer = answer
        self.received: list[Received] = []
        self.port = free_port()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def __enter__(self) -> HttpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@dataclasses.dataclass
class Mailbox:
    port: int
    messages: list[Any]
    """(envelope from, envelope recipients, raw content bytes)."""
    logins: list[str]


@contextlib.contextmanager
def smtp_receiver(tls: ssl.SSLContext, *, user: str, password: str) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1: STARTTLS required, AUTH (PLAIN/LOGIN) only after it."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox(free_port(), [], [])

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
            box.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content or envelope.content))
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
        if ok:
            box.logins.append(auth_data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=box.port, tls_context=tls, require_starttls=True,
        authenticator=authenticator, auth_required=True, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
