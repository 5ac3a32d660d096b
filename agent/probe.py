"""TLS port probe: the certificate chains this host serves.

The listening sockets come from ``/proc/net/tcp`` and ``/proc/net/tcp6``
(state 0A, LISTEN). A socket bound to every address is probed on loopback
(``0.0.0.0`` -> ``127.0.0.1``, ``::`` -> ``::1``). The handshake does not
verify anything (that is the server's job, later): it accepts any certificate,
any protocol version and cipher OpenSSL still knows, and sends the host's name
as SNI.

Asked ports (``--port 443``) that cannot be probed are errors; one that
listens but could not be read (timeout, failed handshake) also makes the scan
incomplete, since its certificate may still be there. A port nothing listens
on is an error only: its certificate is gone. With ``auto`` every listening
port is tried and the ones that do not answer TLS are skipped silently.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from agent.findings import PortCertificate, ScanError, endpoint

PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
_LISTEN = "0A"
_MAX_PARALLEL = 16


@dataclass(frozen=True, order=True, slots=True)
class Listener:
    address: str
    port: int


@dataclass
class PortScan:
    certificates: list[PortCertificate] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    complete: bool = True
    """False when an asked port listens but could not be read (its certificate may still be there)."""


def _address(hex_address: str) -> str:
    """An address as /proc prints it: 32-bit words in host byte order."""
    raw = b"".join(
        int(hex_address[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hex_address), 8)
    )
    address = ipaddress.ip_address(raw)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "::1"
    return str(address)


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The listening sockets in the text of ``/proc/net/tcp`` or ``/proc/net/tcp6``."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4 or fields[3] != _LISTEN:
            continue
        hex_address, _, hex_port = fields[1].partition(":")
        try:
            found.append(Listener(_address(hex_address), int(hex_port, 16)))
        except ValueError:
            continue
    return found


def listening(files: Sequence[str] = PROC_NET_TCP) -> list[Listener]:
    """Every listening TCP socket of this host, wildcards mapped to loopback, sorted."""
    found: set[Listener] = set()
    for path in files:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                found.update(parse_proc_net_tcp(handle.read()))
        except OSError:
            continue  # no IPv6, or not Linux
    return sorted(found)


def _der(certificate: object) -> bytes:
    if isinstance(certificate, bytes):
        return certificate
    import _ssl

    return certificate.public_bytes(_ssl.ENCODING_DER)  # type: ignore[attr-defined]


def served_chain(sock: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """The certificates the peer sent, leaf first, as DER, unverified.

    Python 3.13 has ``get_unverified_chain()`` on ``SSLSocket`` and
    ``SSLObject``; 3.10 to 3.12 have it on their private ``_sslobj`` only (it
    returns ``_ssl.Certificate`` objects); anything else gives just the leaf.
    The server's endpoint checks (``backend/tls.py``, asyncio's ``SSLObject``)
    use this function too.
    """
    public = getattr(sock, "get_unverified_chain", None)
    if public is not None:
        chain = public()
        if chain:
            return [_der(c) for c in chain]
    private = getattr(getattr(sock, "_sslobj", None), "get_unverified_chain", None)
    if private is not None:
        chain = private()
        if chain:
            return [_der(c) for c in chain]
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


@functools.lru_cache(maxsize=1)
def client_context() -> ssl.SSLContext:
    """A context that completes a handshake with anything that speaks TLS (no
    verification: the agent and the server's checker judge the chain afterwards)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    try:
        context.set_ciphers("ALL:!aNULL:!eNULL:!PSK:!SRP:@SECLEVEL=0")
    except ssl.SSLError:  # an OpenSSL without legacy ciphers
        pass
    return context


def fetch_chain(address: str, port: int, server_name: str | None, timeout: float) -> list[bytes]:
    """Connect, handshake and return the served chain. Raises OSError (ssl.SSLError included)."""
    context = client_context()
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(timeout)
        raw.connect((address, port))
        with context.wrap_socket(raw, server_hostname=server_name or None) as tls:
            return served_chain(tls)


def sni_name(hostname: str | None) -> str | None:
    """The SNI to send: the host name, unless empty or an IP address (SNI cannot carry those)."""
    if not hostname:
        return None
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return hostname.rstrip(".")
    return None


def probe_ports(
    ports: Sequence[int] | str,
    *,
    hostname: str | None,
    timeout: float = 3.0,
    listeners: Sequence[Listener] | None = None,
) -> PortScan:
    """Probe ``ports`` (a list of numbers, or ``"auto"``) on every address they listen on.

    ``listeners`` defaults to :func:`listening` (this host's sockets).
    """
    out = PortScan()
    if not ports:
        return out
    listeners = listening() if listeners is None else list(listeners)
    automatic = ports == "auto"
    if automatic:
        targets = list(listeners)
    else:
        wanted = set(int(p) for p in ports)  # type: ignore[union-attr]
        targets = [item for item in listeners if item.port in wanted]
        for port in sorted(wanted - {item.port for item in targets}):
            out.errors.append(ScanError(f"port {port}", "nothing listens on this port"))
    server_name = sni_name(hostname)

    def attempt(target: Listener) -> tuple[Listener, list[bytes] | None, str | None]:
        try:
            return target, fetch_chain(target.address, target.port, server_name, timeout), None
        except (OSError, ValueError) as exc:
            return target, None, _reason(exc)

    if targets:
        with ThreadPoolExecutor(max_workers=min(_MAX_PARALLEL, len(targets))) as pool:
            results = list(pool.map(attempt, targets))
        for target, chain, problem in results:
            if chain:
                for index, der in enumerate(chain):
                    out.certificates.append(PortCertificate(target.address, target.port, server_name, index, der))
            elif not automatic:
                where = endpoint(target.address, target.port)
                out.errors.append(ScanError(where, problem or "no certificate served"))
                out.complete = False
    return out


def _reason(exc: Exception) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc.__class__.__name__})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError):
        return (exc.strerror or exc.__class__.__name__).lower()
    return str(exc)
