"""Every outbound connection the server opens: the SSRF guard in one place.

:func:`connect` is the only way the server reaches another machine (the
checker's inspections, scheduled URL refreshes, later webhooks). It does, in
this order and nothing else:

1. check the host name against the policy (a denied name is refused before any
   DNS query);
2. resolve it once (IP literals are not resolved; names under ``.invalid``
   never resolve, RFC 6761, so no query leaves the machine for them);
3. check **every** resolved address against the policy: one denied address
   refuses the whole connection, before any connection is attempted (a name
   that resolves to a public and a metadata address is not a way in);
4. connect to those exact addresses, in order, without a second lookup: the
   TLS server name (SNI) and, for HTTP, the ``Host`` header keep the name;
5. under one deadline (``timeout``) and a bounded read buffer.

The policy (:class:`Policy`): ``CTOPS_OUTBOUND_ALLOW`` and
``CTOPS_OUTBOUND_DENY`` are comma-separated CIDRs and host names; an allow
rule wins over everything. Denied by default: loopback, link-local (which
holds the cloud metadata address 169.254.169.254), the other cloud metadata
addresses (``fd00:ec2::254``, ``100.100.100.200``), multicast, reserved and
unspecified addresses (``0.0.0.0/8``, ``::``). Private ranges are allowed: this
is a tool for internal networks. IPv6 addresses that carry an IPv4 address
(IPv4-mapped, NAT64 ``64:ff9b::/96``, 6to4) are judged by that address too.

Failures are :class:`backend.errors.CheckFailed` with DNS_FAILED,
OUTBOUND_DENIED, CONNECTION_REFUSED, TIMEOUT or TLS_HANDSHAKE_FAILED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Union

from backend.errors import CheckErrorCode, CheckFailed

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The longest line (or buffered read) a connection accepts.
MAX_LINE_BYTES = 64 * 1024

#: Resolves ``(host, port)`` to address strings. Raise ``socket.gaierror`` (or
#: return nothing) when the name does not resolve.
Resolver = Callable[[str, int], Awaitable[list[str]]]

_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


# --- host names ---------------------------------------------------------------------------


def normalise_host(host: str) -> str:
    """A host name as compared and connected to: IDNA (UTS #46) ASCII, lower case,
    no trailing dot; IP literals in their canonical form. ``ValueError`` if it is
    not a host name."""
    text = (host or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    text = text.rstrip(".")
    if not text or len(text) > 253:
        raise ValueError("not a host name")
    if not text.isascii():
        import idna

        try:
            text = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"not a valid internationalised host name ({exc})") from None
    text = text.lower()
    if not all(_HOST_LABEL.match(label) for label in text.split(".")):
        raise ValueError("not a host name")
    return text


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def never_resolves(host: str) -> bool:
    """Names under ``.invalid`` (RFC 6761 §6.4): answered negatively without a query."""
    name = host.lower().rstrip(".")
    return name == "invalid" or name.endswith(".invalid")


# --- the policy ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """One CIDR or host-name rule of CTOPS_OUTBOUND_ALLOW / CTOPS_OUTBOUND_DENY.

    ``host.example`` matches that name; ``*.example.com`` its subdomains;
    ``.example.com`` the domain and its subdomains; CIDRs (or single addresses)
    match addresses.
    """

    text: str
    network: IPNetwork | None = None
    name: str | None = None
    subdomains: bool = False
    apex: bool = True

    @classmethod
    def parse(cls, text: str) -> Rule:
        raw = text.strip()
        try:
            return cls(raw, network=ipaddress.ip_network(raw, strict=False))
        except ValueError:
            pass
        subdomains, apex, name = False, True, raw
        if name.startswith("*."):
            subdomains, apex, name = True, False, name[2:]
        elif name.startswith("."):
            subdomains, apex, name = True, True, name[1:]
        try:
            return cls(raw, name=normalise_host(name), subdomains=subdomains, apex=apex)
        except ValueError:
            raise ValueError(f"outbound rule {raw!r} is neither a CIDR nor a host name") from None

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if host == self.name:
            return self.apex
        return self.subdomains and host.endswith("." + self.name)

    def matches_address(self, address: IPAddress) -> bool:
        return self.network is not None and address.version == self.network.version and address in self.network


def _carried(address: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address an IPv6 address carries."""
    found: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def builtin_denial(address: IPAddress) -> str | None:
    """Why the default policy refuses ``address`` (None when it does not)."""
    for candidate in reversed(_carried(address)):  # a carried IPv4 address first
        if candidate in _METADATA:
            return "a cloud metadata address"
        if candidate.is_unspecified or (candidate.version == 4 and candidate in _THIS_NETWORK):
            return "an unspecified address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_reserved:
            return "a reserved address"
    return None


@dataclasses.dataclass(frozen=True)
class Policy:
    allow: tuple[Rule, ...] = ()
    deny: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> Policy:
        return cls(tuple(Rule.parse(t) for t in allow if t.strip()), tuple(Rule.parse(t) for t in deny if t.strip()))

    @classmethod
    def from_settings(cls, settings: object) -> Policy:
        return _cached_policy(tuple(getattr(settings, "outbound_allow", ())), tuple(getattr(settings, "outbound_deny", ())))

    def name_allowed(self, host: str) -> bool:
        return any(rule.matches_name(host) for rule in self.allow)

    def name_denial(self, host: str) -> str | None:
        """Why the name itself is refused (before resolving it)."""
        if self.name_allowed(host):
            return None
        for rule in self.deny:
            if rule.matches_name(host):
                return f"{host} is denied by CTOPS_OUTBOUND_DENY ({rule.text})"
        return None

    def address_denial(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused, as
        "<what it is>"; None when allowed."""
        if self.name_allowed(host):
            return None
        carried = _carried(address)
        if any(rule.matches_address(a) for rule in self.allow for a in carried):
            return None
        for rule in self.deny:
            if any(rule.matches_address(a) for a in carried):
                return f"denied by CTOPS_OUTBOUND_DENY ({rule.text})"
        reason = builtin_denial(address)
        if reason is not None:
            return f"{reason}, denied unless CTOPS_OUTBOUND_ALLOW lists it"
        return None

    def check(self, host: str, addresses: Iterable[IPAddress]) -> None:
        """Refuse (OUTBOUND_DENIED) when the name or any of its addresses is denied."""
        reason = self.name_denial(host)
        if reason is None:
            for address in addresses:
                why = self.address_denial(host, address)
                if why is not None:
                    if is_ip(host):
                        reason = f"{address} is {why}"
                    else:
                        reason = f"{host} resolves to {address}, {why}"
                    break
        if reason is not None:
            raise CheckFailed(CheckErrorCode.OUTBOUND_DENIED, f"Outbound connection refused: {reason}.")


@functools.lru_cache(maxsize=16)
def _cached_policy(allow: tuple[str, ...], deny: tuple[str, ...]) -> Policy:
    return Policy.parse(allow, deny)


# --- resolution -----------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [info[4][0] for info in infos]


_resolver: Resolver = system_resolver


@contextlib.contextmanager
def resolver_override(resolver: Resolver) -> Iterator[None]:
    """Resolve with ``resolver`` in this process for the duration (tests: fixed
    names on loopback, no DNS traffic)."""
    global _resolver
    previous, _resolver = _resolver, resolver
    try:
        yield
    finally:
        _resolver = previous


async def resolve(host: str, port: int, resolver: Resolver | None = None) -> list[IPAddress]:
    """The addresses of ``host`` (one lookup; literals as they are), deduplicated in order."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if never_resolves(host):
        raise CheckFailed(CheckErrorCode.DNS_FAILED, f"{host} does not resolve (.invalid names never do).")
    try:
        found = await (resolver or _resolver)(host, port)
    except socket.gaierror as exc:
        raise CheckFailed(CheckErrorCode.DNS_FAILED, f"{host} does not resolve ({exc.strerror or exc}).") from None
    except UnicodeError:
        raise CheckFailed(CheckErrorCode.DNS_FAILED, f"{host} is not a name that can be resolved.") from None
    addresses: list[IPAddress] = []
    for text in found:
        address = ipaddress.ip_address(str(text).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise CheckFailed(CheckErrorCode.DNS_FAILED, f"{host} has no address.")
    return addresses


# --- connecting ---------------------------------------------------------------------------


@dataclasses.dataclass
class Connection:
    """An open stream to ``address`` (what ``host`` resolved to)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    host: str
    address: str
    port: int

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object")

    def abort(self) -> None:
        """Close at once (no TLS close_notify, no waiting on the peer)."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()


def failure(exc: BaseException, host: str, port: int, *, tls: bool) -> CheckFailed:
    """The typed failure for a network exception."""
    where = f"{host}:{port}"
    if isinstance(exc, CheckFailed):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
        return CheckFailed(CheckErrorCode.TIMEOUT, f"{where} did not answer in time.")
    if isinstance(exc, socket.gaierror):
        return CheckFailed(CheckErrorCode.DNS_FAILED, f"{host} does not resolve ({exc.strerror or exc}).")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or exc.__class__.__name__
        return CheckFailed(CheckErrorCode.TLS_HANDSHAKE_FAILED, f"TLS handshake with {where} failed ({reason}).")
    if isinstance(exc, ConnectionRefusedError):
        return CheckFailed(CheckErrorCode.CONNECTION_REFUSED, f"{where} refused the connection.")
    if isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError, EOFError, BrokenPipeError)) and tls:
        return CheckFailed(CheckErrorCode.TLS_HANDSHAKE_FAILED, f"{where} closed the connection during the TLS handshake.")
    if isinstance(exc, OSError):
        reason = (exc.strerror or exc.__class__.__name__).lower()
        return CheckFailed(CheckErrorCode.CONNECTION_REFUSED, f"Could not connect to {where} ({reason}).")
    return CheckFailed(CheckErrorCode.CONNECTION_REFUSED, f"Could not connect to {where} ({exc.__class__.__name__}).")


async def connect(
    host: str,
    port: int,
    *,
    policy: Policy,
    timeout: float,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
    resolver: Resolver | None = None,
    limit: int = MAX_LINE_BYTES,
) -> Connection:
    """Open a connection to ``host:port`` under the policy (see the module doc).

    ``tls`` makes it an implicit-TLS connection, with ``server_name`` as SNI
    (none when None: IP literals cannot be sent as SNI). The whole of
    resolution, connection and handshake shares ``timeout`` seconds.
    """
    try:
        host = normalise_host(host)
    except ValueError as exc:
        raise CheckFailed(CheckErrorCode.INVALID_URL, f"{host!r} is {exc}.") from None
    try:
        async with asyncio.timeout(timeout):
            policy.check(host, ())  # a denied name is refused before any lookup
            addresses = await resolve(host, port, resolver)
            policy.check(host, addresses)
            last: BaseException | None = None
            for address in addresses:
                try:
                    reader, writer = await asyncio.open_connection(
                        str(address), port, ssl=tls, server_hostname=(server_name or "") if tls else None, limit=limit
                    )
                except ssl.SSLError:
                    raise
                except OSError as exc:
                    last = exc
                    continue
                return Connection(reader, writer, host, str(address), port)
            assert last is not None
            raise last
    except CheckFailed:
        raise
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - every network failure is typed
        raise failure(exc, host, port, tls=tls is not None) from None
