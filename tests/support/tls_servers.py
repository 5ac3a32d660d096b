"""Real TLS servers on loopback for checker tests, each in its own thread.

- :class:`TLSServer`: implicit TLS on a free port; serves a chain (leaf first)
  and picks another one by SNI; the served chain can be swapped and the server
  stopped and started again on the same port; counts handshakes per SNI name.
- :class:`StartTLSServer`: the same behind an IMAP, POP3 or LDAP STARTTLS dialogue
  (SMTP uses aiosmtpd, PostgreSQL a throwaway cluster: see ``postgres_tls.py``).
- :func:`silent_port`: accepts TCP (kernel backlog) and never answers.

Only loopback addresses are ever bound.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from tests.certs import Issued
from tests.support.processes import free_port


def key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def server_context(chain: Sequence[Issued], directory: Path | None = None) -> ssl.SSLContext:
    """A server context serving ``chain`` (leaf first, as given) with the leaf's key."""
    directory = directory or Path(tempfile.mkdtemp(prefix="ctops-tls-"))
    leaf = chain[0]
    cert_file = directory / f"{leaf.fingerprint[:16]}-{len(chain)}.pem"
    key_file = directory / f"{leaf.fingerprint[:16]}.key"
    cert_file.write_text("".join(item.pem for item in chain))
    key_file.write_bytes(key_pem(leaf))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


class TLSServer:
    def __init__(
        self,
        chain: Sequence[Issued],
        *,
        by_name: dict[str, Sequence[Issued]] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.directory = Path(tempfile.mkdtemp(prefix="ctops-tls-"))
        self.handshakes: collections.Counter[str | None] = collections.Counter()
        """Client hellos received, per SNI name (None: no SNI) and "*" for all of them."""
        self.seen_names: list[str | None] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.serve(chain, by_name=by_name)

    def serve(self, chain: Sequence[Issued], *, by_name: dict[str, Sequence[Issued]] | None = None) -> None:
        """Serve ``chain`` from now on (and ``by_name[sni]`` for those names)."""
        default = server_context(chain, self.directory)
        named = {name: server_context(c, self.directory) for name, c in (by_name or {}).items()}

        def pick(ssl_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
            with self._lock:
                self.seen_names.append(name)
                self.handshakes[name] += 1
                self.handshakes["*"] += 1
            if name in named:
                ssl_socket.context = named[name]

        default.sni_callback = pick
        for context in named.values():
            context.sni_callback = pick
        self._context = default

    def start(self) -> TLSServer:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(64)
        sock.settimeout(0.1)
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with self._context.wrap_socket(conn, server_side=True) as tls:
                with contextlib.suppress(OSError):
                    tls.recv(1)
        except (OSError, ssl.SSLError):
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TLSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def total(self) -> int:
        with self._lock:
            return self.handshakes["*"]


# --- STARTTLS (IMAP, POP3, LDAP) ------------------------------------------------------------------


_LDAP_OK = bytes.fromhex("300c02010178070a010004000400")  # messageID 1, ExtendedResponse resultCode 0


class StartTLSServer(TLSServer):
    """A server that speaks just enough ``protocol`` to start TLS (``offer=False``: it never offers it)."""

    def __init__(self, protocol: str, chain: Sequence[Issued], *, offer: bool = True, **kw) -> None:
        self.protocol = protocol
        self.offer = offer
        super().__init__(chain, **kw)

    def _dialogue(self, conn: socket.socket) -> bool:
        reader = conn.makefile("rb")
        if self.protocol == "imap":
            conn.sendall(b"* OK IMAP4rev1 test server ready\r\n")
            while True:
                line = reader.readline()
                if not line:
                    return False
                tag, _, command = line.decode().strip().partition(" ")
                if command.upper() == "CAPABILITY":
                    caps = "IMAP4rev1 STARTTLS" if self.offer else "IMAP4rev1"
                    conn.sendall(f"* CAPABILITY {caps}\r\n{tag} OK done\r\n".encode())
                elif command.upper() == "STARTTLS" and self.offer:
                    conn.sendall(f"{tag} OK begin TLS\r\n".encode())
                    return True
                else:
                    conn.sendall(f"{tag} BAD no\r\n".encode())
        if self.protocol == "pop3":
            conn.sendall(b"+OK POP3 test server ready\r\n")
            line = reader.readline()
            if line.strip().upper() == b"STLS" and self.offer:
                conn.sendall(b"+OK begin TLS\r\n")
                return True
            conn.sendall(b"-ERR no\r\n")
            return False
        if self.protocol == "ldap":
            request = conn.recv(64)
            if b"1.3.6.1.4.1.1466.20037" not in request:
                return False
            conn.sendall(_LDAP_OK if self.offer else bytes.fromhex("300c02010178070a013404000400"))
            return self.offer
        raise ValueError(self.protocol)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            if not self._dialogue(conn):
                conn.close()
                return
            super()._handle(conn)
        except OSError:
            conn.close()


@contextlib.contextmanager
def silent_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port that completes TCP handshakes (backlog) but never says anything."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
