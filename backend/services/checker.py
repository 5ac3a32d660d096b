"""The Certificate Checker: inspect a URL or an uploaded certificate. No database writes.

:func:`inspect_url` fetches the chain an endpoint serves (through the outbound
policy) and judges it; :func:`inspect_data` reads PEM (bundles), base64 DER,
PKCS#7 and PKCS#12. Both return an :class:`Inspection`: the leaf, the chain as
served (or as given, leaf first), the verdict (trust at the clock's time,
completeness, host name, warnings) and, for URLs, the TLS version and cipher.
Tracking (:mod:`backend.services.tracked_sources`) and refreshing
(:mod:`backend.services.refresh`) reuse :func:`fetch_endpoint` and
:func:`read_upload`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence

from backend import chain, clock, outbound, tls, x509
from backend.endpoints import Endpoint, parse
from backend.errors import BadUserInput, CheckErrorCode, CheckFailed

MAX_INPUT_BYTES = 1024 * 1024
MAX_CERTIFICATES = tls.MAX_CHAIN


@dataclasses.dataclass(frozen=True)
class Inspection:
    leaf: x509.CertificateDescription
    chain: tuple[x509.CertificateDescription, ...]
    """As served (or as given), the leaf first."""
    verdict: chain.Verdict
    endpoint: Endpoint | None = None
    tls_version: str | None = None
    cipher: str | None = None
    fetched_at: dt.datetime | None = None
    address: str | None = None

    @property
    def warnings(self) -> tuple[chain.Warning, ...]:
        return self.verdict.warnings


#: Served chains repeat (every endpoint behind one CA sends the same
#: intermediates; a refresh mostly finds what it found before): a certificate
#: is parsed once per process while it stays in this cache.
_describe = functools.lru_cache(maxsize=4096)(x509.describe)


def describe_all(ders: Sequence[bytes], *, origin: str) -> list[x509.CertificateDescription]:
    """Describe each certificate (INVALID_CERTIFICATE / TOO_LARGE when one cannot be read)."""
    if len(ders) > MAX_CERTIFICATES:
        message = f"{origin} holds {len(ders)} certificates; at most {MAX_CERTIFICATES} are read."
        raise CheckFailed(CheckErrorCode.TOO_LARGE, message)
    out = []
    for index, der in enumerate(ders):
        if len(der) > x509.MAX_CERTIFICATE_BYTES:
            raise CheckFailed(CheckErrorCode.TOO_LARGE, f"Certificate {index} of {origin} is larger than 64 KiB.")
        try:
            out.append(_describe(bytes(der)))
        except x509.CertificateParseError as exc:
            message = f"Certificate {index} of {origin} cannot be read: {exc}."
            raise CheckFailed(CheckErrorCode.INVALID_CERTIFICATE, message) from None
    return out


def _judge(descriptions: Sequence[x509.CertificateDescription], name: str | None, settings: object) -> chain.Verdict:
    return chain.judge(descriptions, name=name, now=clock.now(), trust=chain.trust_store(getattr(settings, "ca_bundle", None)))


async def fetch_endpoint(endpoint: Endpoint, *, settings: object, resolver: outbound.Resolver | None = None) -> Inspection:
    """Fetch and judge what ``endpoint`` serves (a typed CheckFailed when it cannot be fetched)."""
    fetched = await tls.fetch(
        endpoint,
        policy=outbound.Policy.from_settings(settings),
        timeout=float(getattr(settings, "tls_timeout_seconds", 10.0)),
        resolver=resolver,
    )
    descriptions = describe_all(fetched.chain, origin=f"the chain served by {endpoint.host}:{endpoint.port}")
    return Inspection(
        leaf=descriptions[0],
        chain=tuple(descriptions),
        verdict=_judge(descriptions, endpoint.check_name, settings),
        endpoint=endpoint,
        tls_version=fetched.tls_version,
        cipher=fetched.cipher,
        fetched_at=fetched.fetched_at,
        address=fetched.address,
    )


async def inspect_url(url: str, server_name: str | None = None, *, settings: object) -> Inspection:
    return await fetch_endpoint(parse(url, server_name), settings=settings)


# --- uploads ----------------------------------------------------------------------------


def decode_input(data: str) -> bytes:
    """PEM text as it is; anything else is base64 (of DER, PKCS#7 or PKCS#12)."""
    text = data or ""
    if "-----BEGIN" in text:
        raw = text.encode("utf-8", "replace")
        if len(raw) > MAX_INPUT_BYTES:
            raise CheckFailed(CheckErrorCode.TOO_LARGE, f"The input is larger than {MAX_INPUT_BYTES // 1024} KiB.")
        return raw
    compact = "".join(text.split())
    if not compact:
        raise CheckFailed(CheckErrorCode.INVALID_CERTIFICATE, "The input is empty.")
    if len(compact) > (MAX_INPUT_BYTES * 4) // 3 + 4:
        raise CheckFailed(CheckErrorCode.TOO_LARGE, f"The input is larger than {MAX_INPUT_BYTES // 1024} KiB.")
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        except (binascii.Error, ValueError):
            raise CheckFailed(CheckErrorCode.INVALID_CERTIFICATE, "The input is neither PEM text nor base64.") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise CheckFailed(CheckErrorCode.TOO_LARGE, f"The input is larger than {MAX_INPUT_BYTES // 1024} KiB.")
    return raw


def _leaf_index(descriptions: Sequence[x509.CertificateDescription]) -> int:
    leaves = [i for i, d in enumerate(descriptions) if not d.is_ca]
    if len(leaves) > 1:
        names = ", ".join(repr(descriptions[i].common_name or descriptions[i].subject) for i in leaves[:5])
        raise BadUserInput(f"The input holds {len(leaves)} leaf (non-CA) certificates ({names}); give one leaf and its chain.")
    if leaves:
        return leaves[0]
    # Only CA certificates (a CA tracked for its own expiry): the one that issued none of the others.
    issuers = {(d.issuer, d.authority_key_identifier) for d in descriptions if not d.self_signed}
    for i, d in enumerate(descriptions):
        if (d.subject, d.subject_key_identifier) not in issuers:
            return i
    return 0


def read_upload(data: str, password: str | None = None) -> list[x509.CertificateDescription]:
    """The uploaded certificates, leaf first, then the others in input order (duplicates dropped)."""
    raw = decode_input(data)
    try:
        ders = x509.decode_certificates(raw, password.encode("utf-8") if password else None)
    except x509.PasswordRequired as exc:
        raise CheckFailed(CheckErrorCode.BAD_PASSWORD, f"{str(exc).capitalize()}.") from None
    except x509.CertificateParseError as exc:
        raise CheckFailed(CheckErrorCode.INVALID_CERTIFICATE, f"No certificate could be read: {exc}.") from None
    unique = list(dict.fromkeys(ders))
    descriptions = describe_all(unique, origin="the input")
    leaf = _leaf_index(descriptions)
    return [descriptions[leaf], *(d for i, d in enumerate(descriptions) if i != leaf)]


def inspect_data(data: str, password: str | None = None, *, settings: object) -> Inspection:
    descriptions = read_upload(data, password)
    return Inspection(leaf=descriptions[0], chain=tuple(descriptions), verdict=_judge(descriptions, None, settings))


def validate_settings(settings: object) -> None:
    """Refuse to start on a malformed CTOPS_OUTBOUND_ALLOW / _DENY / CTOPS_INSPECT_RATE / CTOPS_CA_BUNDLE."""
    from pathlib import Path

    from backend.services.rate_limits import Rate

    try:
        outbound.Policy.from_settings(settings)
        Rate.parse(str(getattr(settings, "inspect_rate", "60/min")))
    except ValueError as exc:
        raise SystemExit(f"Invalid setting: {exc}") from None
    bundle = getattr(settings, "ca_bundle", None)
    if bundle and not Path(bundle).is_file():
        raise SystemExit(f"Invalid setting: CTOPS_CA_BUNDLE={bundle} is not a file")
