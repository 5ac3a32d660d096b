"""HTTP/1.1 POST over :func:`backend.outbound.connect`: webhooks and Slack.

Small on purpose: one request per connection (``Connection: close``), no
redirects (a 3xx is a failure: the receiver's URL is what the user entered),
no proxies, no cookies. The outbound policy applies exactly as for the
checker (resolve once, check every address, connect to that address; SNI and
``Host`` keep the name); ``https`` verifies the certificate and the host name
against the system store (plus ``CTOPS_CA_BUNDLE`` when set). One deadline
covers everything: resolve, connect, handshake, request and response. At most
:data:`MAX_RESPONSE_BYTES` of the response are read.

Errors are :class:`backend.errors.CheckFailed` whose messages name the host and
port only, never the path or the query (a Slack URL's path is its secret).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from backend import outbound
from backend.errors import CheckErrorCode, CheckFailed

MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "CT-Ops-Certificates/0.1"


@dataclasses.dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    """Path and query, as sent."""

    @property
    def where(self) -> str:
        """For messages: never the path."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse(url: str, *, https_only: bool = False) -> Target:
    """A POST target; ValueError (a safe message, without the URL) when unusable."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise ValueError("not a valid URL") from None
    scheme = parts.scheme.lower()
    allowed = ("https",) if https_only else ("http", "https")
    if scheme not in allowed:
        raise ValueError(f"the URL must start with {' or '.join(s + '://' for s in allowed)}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not supported")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    host = outbound.normalise_host(parts.hostname)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    if any(c in path for c in "\r\n "):
        raise ValueError("the URL's path holds spaces or line breaks")
    return Target(scheme, host, port or (443 if scheme == "https" else 80), path)


@functools.lru_cache(maxsize=4)
def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """Verifying client context: the system store, plus ``ca_bundle`` when given."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cafile=ca_bundle)
    return context


@dataclasses.dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    """At most MAX_RESPONSE_BYTES."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


async def post(
    url: str | Target,
    body: bytes,
    headers: Mapping[str, str],
    *,
    policy: outbound.Policy,
    timeout: float,
    ca_bundle: str | None = None,
    resolver: outbound.Resolver | None = None,
) -> Response:
    """POST ``body`` and read the status and (the start of) the response."""
    target = url if isinstance(url, Target) else parse(url)
    tls = tls_context(ca_bundle) if target.scheme == "https" else None
    connection: outbound.Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            connection = await outbound.connect(
                target.host, target.port, policy=policy, timeout=timeout, tls=tls,
                server_name=target.host if tls is not None else None, resolver=resolver,
            )  # fmt: skip
            lines = [
                f"POST {target.path} HTTP/1.1",
                f"Host: {target.host_header}",
                f"User-Agent: {USER_AGENT}",
                f"Content-Length: {len(body)}",
                "Connection: close",
            ]
            for name, value in headers.items():
                if any(c in f"{name}{value}" for c in "\r\n"):
                    raise ValueError("header with a line break")
                lines.append(f"{name}: {value}")
            connection.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await connection.writer.drain()
            return await _response(connection.reader, target)
    except CheckFailed:
        raise
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - every network failure is typed
        raise outbound.failure(exc, target.host, target.port, tls=tls is not None) from None
    finally:
        if connection is not None:
            connection.abort()


async def _response(reader: asyncio.StreamReader, target: Target) -> Response:
    status_line = (await reader.readline()).decode("latin-1").strip()
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise CheckFailed(CheckErrorCode.CONNECTION_REFUSED, f"{target.where} did not answer HTTP.")
    status = int(parts[1])
    length: int | None = None
    for _ in range(200):
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    want = MAX_RESPONSE_BYTES if length is None else min(length, MAX_RESPONSE_BYTES)
    body = b""
    try:
        while len(body) < want:
            chunk = await reader.read(want - len(body))
            if not chunk:
                break
            body += chunk
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the status is what counts
    return Response(status, body)
