"""Fetching the certificate chain a TLS endpoint serves (implicit TLS or STARTTLS).

The handshake verifies nothing: it accepts any certificate and any protocol
version and cipher OpenSSL still speaks, so that a broken endpoint can be
inspected; trust is judged afterwards from the chain actually served
(:mod:`backend.chain`). The connection goes through :func:`backend.outbound.connect`
(policy, one lookup, exact address, SNI keeps the name) and is closed right
after the handshake. The chain is read with the agent's
:func:`agent.probe.served_chain` (one implementation of the private 3.11 API),
over the agent's permissive :func:`agent.probe.client_context`.

Limits: the whole fetch (resolve, connect, STARTTLS dialogue, handshake) within
``timeout`` seconds; at most :data:`MAX_CHAIN` certificates of at most 64 KiB
each (TOO_LARGE).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import ssl

from agent.probe import client_context, served_chain
from backend import clock, outbound, starttls, x509
from backend.endpoints import Endpoint
from backend.errors import CheckErrorCode, CheckFailed

MAX_CHAIN = 10


@dataclasses.dataclass(frozen=True)
class Fetched:
    chain: tuple[bytes, ...]
    """DER, as served: the leaf first."""
    tls_version: str | None
    cipher: str | None
    """IANA name (OpenSSL's when the table does not know it)."""
    address: str
    """The address connected to."""
    fetched_at: dt.datetime


# IANA names of the suites OpenSSL names differently (TLS 1.3 names are IANA already).
_IANA = {
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    0x00A3: "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384", 0x009F: "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCAA: "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xC0AF: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8",
    0xC0AD: "TLS_ECDHE_ECDSA_WITH_AES_256_CCM", 0xC0A3: "TLS_DHE_RSA_WITH_AES_256_CCM_8",
    0xC09F: "TLS_DHE_RSA_WITH_AES_256_CCM", 0xC05D: "TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384",
    0xC061: "TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384", 0xC057: "TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384",
    0xC053: "TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384", 0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0x00A2: "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
    0x009E: "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", 0xC0AE: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8",
    0xC0AC: "TLS_ECDHE_ECDSA_WITH_AES_128_CCM", 0xC0A2: "TLS_DHE_RSA_WITH_AES_128_CCM_8",
    0xC09E: "TLS_DHE_RSA_WITH_AES_128_CCM", 0xC05C: "TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256",
    0xC060: "TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256", 0xC056: "TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256",
    0xC052: "TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256", 0xC024: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    0xC028: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", 0x006B: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    0x006A: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256", 0xC073: "TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384",
    0xC077: "TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384", 0x00C4: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256",
    0x00C3: "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256", 0xC023: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    0xC027: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0x0067: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    0x0040: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256", 0xC072: "TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256",
    0xC076: "TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256", 0x00BE: "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256",
    0x00BD: "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256", 0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA", 0x0088: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x0087: "TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA", 0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA", 0x0045: "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA",
    0x0044: "TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA", 0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
    0xC0A1: "TLS_RSA_WITH_AES_256_CCM_8", 0xC09D: "TLS_RSA_WITH_AES_256_CCM",
    0xC051: "TLS_RSA_WITH_ARIA_256_GCM_SHA384", 0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0xC0A0: "TLS_RSA_WITH_AES_128_CCM_8", 0xC09C: "TLS_RSA_WITH_AES_128_CCM",
    0xC050: "TLS_RSA_WITH_ARIA_128_GCM_SHA256", 0x003D: "TLS_RSA_WITH_AES_256_CBC_SHA256",
    0x00C0: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256", 0x003C: "TLS_RSA_WITH_AES_128_CBC_SHA256",
    0x00BA: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256", 0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0084: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA", 0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0041: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", 0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA", 0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0x0004: "TLS_RSA_WITH_RC4_128_MD5", 0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def _suite_codes() -> dict[str, int]:
    return {c["name"]: c["id"] & 0xFFFF for c in client_context().get_ciphers()}


def iana_cipher_name(openssl_name: str | None) -> str | None:
    """The IANA name of a negotiated suite, from OpenSSL's name."""
    if not openssl_name or openssl_name.startswith("TLS_"):
        return openssl_name
    code = _suite_codes().get(openssl_name)
    return _IANA.get(code, openssl_name) if code is not None else openssl_name


def _chain_of(ssl_object: ssl.SSLObject | None, where: str) -> tuple[bytes, ...]:
    if ssl_object is None:
        raise CheckFailed(CheckErrorCode.TLS_HANDSHAKE_FAILED, f"{where} did not complete a TLS handshake.")
    chain = served_chain(ssl_object)  # type: ignore[arg-type] - reads the same private API on SSLObject
    if not chain:
        raise CheckFailed(CheckErrorCode.TLS_HANDSHAKE_FAILED, f"{where} sent no certificate.")
    if len(chain) > MAX_CHAIN:
        raise CheckFailed(CheckErrorCode.TOO_LARGE, f"{where} sent {len(chain)} certificates; at most {MAX_CHAIN} are read.")
    for der in chain:
        if len(der) > x509.MAX_CERTIFICATE_BYTES:
            raise CheckFailed(CheckErrorCode.TOO_LARGE, f"{where} sent a certificate larger than 64 KiB.")
    return tuple(chain)


async def fetch(
    endpoint: Endpoint,
    *,
    policy: outbound.Policy,
    timeout: float,
    resolver: outbound.Resolver | None = None,
) -> Fetched:
    """Connect to ``endpoint``, start TLS (directly or by STARTTLS) and read the served chain."""
    context = client_context()
    where = f"{endpoint.host}:{endpoint.port}"
    sni = endpoint.tls_name
    connection: outbound.Connection | None = None
    try:
        async with asyncio.timeout(timeout):
            if endpoint.starttls is None:
                connection = await outbound.connect(
                    endpoint.host, endpoint.port, policy=policy, timeout=timeout, tls=context, server_name=sni, resolver=resolver
                )
            else:
                connection = await outbound.connect(
                    endpoint.host, endpoint.port, policy=policy, timeout=timeout, resolver=resolver
                )
                await starttls.negotiate(endpoint.starttls, connection.reader, connection.writer)
                await connection.writer.start_tls(context, server_hostname=sni)
            ssl_object = connection.ssl_object
            chain = _chain_of(ssl_object, where)
            assert ssl_object is not None
            cipher = ssl_object.cipher()
            return Fetched(
                chain=chain,
                tls_version=ssl_object.version(),
                cipher=iana_cipher_name(cipher[0] if cipher else None),
                address=connection.address,
                fetched_at=clock.now(),
            )
    except CheckFailed:
        raise
    except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - every network failure is typed
        raise outbound.failure(exc, endpoint.host, endpoint.port, tls=True) from None
    finally:
        if connection is not None:
            connection.abort()
