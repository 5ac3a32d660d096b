"""What a checker URL names: scheme, host, port, how TLS starts, and its identity.

Accepted: ``https``, ``ldaps``, ``smtps``, ``imaps``, ``pop3s``, ``ftps``
(implicit TLS) and ``smtp``, ``imap``, ``pop3``, ``ldap``, ``postgres``
(``postgresql``) with STARTTLS; a bare ``host`` or ``host:port`` means https.
Each scheme has its default port; an explicit one is allowed.

A tracked source's identity is (scheme, IDNA-lower-cased host, port with the
default filled in, server name): ``https://Shop.Example`` and
``shop.example:443`` are the same source. The path is kept for display only.
A ``serverName`` equal to the host is the same as none.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from urllib.parse import urlsplit

from backend.errors import CheckErrorCode, CheckFailed
from backend.outbound import is_ip, normalise_host

IMPLICIT_TLS = {"https": 443, "ldaps": 636, "smtps": 465, "imaps": 993, "pop3s": 995, "ftps": 990}
STARTTLS = {"smtp": 25, "imap": 143, "pop3": 110, "ldap": 389, "postgres": 5432}
ALIASES = {"postgresql": "postgres"}
DEFAULT_PORTS = {**IMPLICIT_TLS, **STARTTLS}

MAX_URL_LENGTH = 2048


def _invalid(message: str) -> CheckFailed:
    return CheckFailed(CheckErrorCode.INVALID_URL, message)


@dataclasses.dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    """Normalised: IDNA ASCII lower case, or an IP literal (no brackets)."""
    port: int
    path: str
    server_name: str | None
    """The TLS name given apart from the host (normalised; None when equal to it)."""

    @property
    def starttls(self) -> str | None:
        """The STARTTLS protocol (``smtp``, ``imap``, ...), None for implicit TLS."""
        return self.scheme if self.scheme in STARTTLS else None

    @property
    def tls_name(self) -> str | None:
        """The name sent as SNI and checked against the certificate: the server
        name, else the host unless it is an IP address."""
        if self.server_name:
            return self.server_name
        return None if is_ip(self.host) else self.host

    @property
    def check_name(self) -> str:
        """What the certificate must match: the server name, else the host (name or IP)."""
        return self.server_name or self.host

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL as displayed: normalised host, default port left out, path kept."""
        return f"{self.scheme}://{self.netloc}{self.path}"

    @property
    def identity(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}#{self.server_name or ''}"


def parse(url: str, server_name: str | None = None) -> Endpoint:
    """Parse a checker URL (INVALID_URL when it is not one)."""
    text = (url or "").strip()
    if not text:
        raise _invalid("The URL is empty.")
    if len(text) > MAX_URL_LENGTH:
        raise _invalid(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise _invalid("The URL contains spaces or control characters.")
    if "://" not in text:
        try:  # a bare IPv6 address
            text = f"[{ipaddress.IPv6Address(text)}]"
        except ValueError:
            pass
        text = "https://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _invalid(f"Not a valid URL ({exc}).") from None
    scheme = ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in DEFAULT_PORTS:
        accepted = ", ".join(f"{s}://" for s in DEFAULT_PORTS)
        raise _invalid(f"Unsupported scheme {parts.scheme!r}: use one of {accepted} (or a bare host[:port] for https).")
    if parts.username is not None or parts.password is not None:
        raise _invalid("URLs with credentials (user@ or user:password@) are not accepted: leave them out.")
    if not parts.hostname:
        raise _invalid("The URL has no host.")
    try:
        host = normalise_host(parts.hostname)
    except ValueError as exc:
        raise _invalid(f"{parts.hostname!r} is {exc}.") from None
    if port is None:
        if parts.netloc.endswith(":"):
            raise _invalid("The URL has an empty port.")
        port = DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise _invalid("The port must be between 1 and 65535.")
    name: str | None = None
    if server_name is not None and server_name.strip():
        try:
            name = normalise_host(server_name)
        except ValueError as exc:
            raise _invalid(f"serverName {server_name!r} is {exc}.") from None
        if is_ip(name):
            raise _invalid("serverName must be a host name (SNI cannot carry an IP address).")
        if name == host:
            name = None
    path = parts.path if parts.path not in ("", "/") else ""
    return Endpoint(scheme=scheme, host=host, port=port, path=path, server_name=name)
