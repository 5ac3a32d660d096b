"""Real servers on loopback for the agent's tests: TLS, plain TCP, and a scripted GraphQL endpoint.

Every server runs in a thread, binds port 0 on 127.0.0.1 or ::1, and stops at
the end of its test; every loop is bounded by a short socket timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.certs import Issued


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6_LOOPBACK = _has_ipv6_loopback()


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temporary directory other users can read (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="ctops-agent-test-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------
# TLS and plain TCP servers
# --------------------------------------------------------------------------


class _Acceptor:
    def __init__(self, family: int, host: str, handle) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.stopping = threading.Event()
        self.server_names: list[str | None] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(2)
            try:
                self.handle(self, conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()


def _write_pem(directory: Path, chain: list[Issued]) -> tuple[str, str]:
    cert_file = directory / "chain.pem"
    key_file = directory / "key.pem"
    cert_file.write_text("".join(item.pem for item in chain))
    key_file.write_bytes(
        chain[0].key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


@pytest.fixture
def tls_server(tmp_path: Path):
    """``tls_server(chain, host="127.0.0.1")`` -> a running TLS server serving ``chain`` (leaf first)."""
    started: list[_Acceptor] = []

    def start(chain: list[Issued], host: str = "127.0.0.1") -> _Acceptor:
        # The IPv6 probe is part of what must be tested: no silent skip.
        assert ":" not in host or HAS_IPV6_LOOPBACK, "this host has no IPv6 loopback (::1) to test the probe on"
        directory = tmp_path / f"tls{len(started)}"
        directory.mkdir()
        cert_file, key_file = _write_pem(directory, chain)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        names: list[str | None] = []

        def remember_sni(sslobj, server_name, ctx):
            names.append(server_name)

        context.sni_callback = remember_sni

        def handle(acceptor: _Acceptor, conn: socket.socket) -> None:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)  # until the client closes

        acceptor = _Acceptor(socket.AF_INET6 if ":" in host else socket.AF_INET, host, handle)
        acceptor.server_names = names
        started.append(acceptor)
        return acceptor

    yield start
    for acceptor in started:
        acceptor.close()


@pytest.fixture
def plain_server():
    """``plain_server()`` -> a TCP server that answers anything with an HTTP 400 and closes."""
    started: list[_Acceptor] = []

    def start(host: str = "127.0.0.1") -> _Acceptor:
        def handle(acceptor: _Acceptor, conn: socket.socket) -> None:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        acceptor = _Acceptor(socket.AF_INET6 if ":" in host else socket.AF_INET, host, handle)
        started.append(acceptor)
        return acceptor

    yield start
    for acceptor in started:
        acceptor.close()


# --------------------------------------------------------------------------
# A scripted GraphQL endpoint
# --------------------------------------------------------------------------


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class ScriptedServer:
    """Answers each POST with the next scripted ``(status, body)``; repeats the last one."""

    url: str
    script: list[tuple[int, dict]]
    requests: list[Recorded] = field(default_factory=list)


@pytest.fixture
def graphql_server(tmp_path: Path):
    """``graphql_server((status, body), ...)``; ``tls=[leaf, ...]`` serves HTTPS with that chain."""
    servers: list[ThreadingHTTPServer] = []

    def start(*script: tuple[int, dict], tls: list[Issued] | None = None) -> ScriptedServer:
        state = ScriptedServer(url="", script=list(script))

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                state.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                index = min(len(state.requests), len(state.script)) - 1
                status, answer = state.script[index]
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        scheme = "http"
        if tls:
            directory = tmp_path / f"https{len(servers)}"
            directory.mkdir()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_write_pem(directory, tls))
            server.socket = context.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
        return state

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback servers are reached directly, whatever proxy the environment names."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
