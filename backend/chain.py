"""Judging a certificate chain as served: order, completeness, trust, host name, weaknesses.

Trust is verified with ``cryptography.x509.verification`` (web PKI rules) at
the clock's time, with the chain exactly as served, against the system store
or the PEM file ``CTOPS_CA_BUNDLE``. A failure is a result with warnings, never
an error. The description of each certificate comes from :mod:`backend.x509`;
this module only loads the DER into cryptography's objects to verify them.

Host names are matched as browsers do (RFC 6125): DNS subjectAltNames only (no
fallback to the CN), case-insensitive, a wildcard only as the whole left-most
label; an IP address matches IP subjectAltNames.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import ipaddress
import logging
import os
import ssl
import warnings
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509 as cx509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from backend import x509
from backend.services import status as st

log = logging.getLogger("ctops.chain")

WEAK_HASHES = ("md2", "md4", "md5", "sha1")
MIN_RSA_BITS = 2048


class InspectionWarningCode(str, enum.Enum):
    EXPIRED = "EXPIRED"
    NOT_YET_VALID = "NOT_YET_VALID"
    EXPIRES_SOON = "EXPIRES_SOON"
    HOSTNAME_MISMATCH = "HOSTNAME_MISMATCH"
    SELF_SIGNED = "SELF_SIGNED"
    UNTRUSTED_ROOT = "UNTRUSTED_ROOT"
    INCOMPLETE_CHAIN = "INCOMPLETE_CHAIN"
    WEAK_KEY = "WEAK_KEY"
    WEAK_SIGNATURE = "WEAK_SIGNATURE"
    CHAIN_OUT_OF_ORDER = "CHAIN_OUT_OF_ORDER"


W = InspectionWarningCode

#: Warnings that depend only on the leaf's dates and the clock: recomputed
#: whenever they are read, never stored.
TIME_CODES = frozenset({InspectionWarningCode.EXPIRED, InspectionWarningCode.NOT_YET_VALID, InspectionWarningCode.EXPIRES_SOON})


@dataclasses.dataclass(frozen=True)
class Warning:
    code: InspectionWarningCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict) -> Warning:
        return cls(InspectionWarningCode(data["code"]), data.get("message", ""))


@dataclasses.dataclass(frozen=True)
class Verdict:
    trusted: bool
    complete: bool
    hostname_matches: bool | None
    """None when no name was to be checked (an uploaded certificate)."""
    warnings: tuple[Warning, ...]
    lasting: tuple[Warning, ...] = ()
    """The warnings except the leaf's own expiry ones (EXPIRED, NOT_YET_VALID,
    EXPIRES_SOON), which depend on when they are read: what a source stores."""


# --- the trust store -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrustStore:
    store: Store
    anchors: tuple[cx509.Certificate, ...]
    fingerprints: frozenset[str]


def _system_bundle() -> bytes:
    paths = ssl.get_default_verify_paths()
    candidates = (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_bytes()
    chunks = []
    for directory in (paths.capath, paths.openssl_capath):
        if directory and os.path.isdir(directory):
            for entry in sorted(Path(directory).glob("*.pem")) + sorted(Path(directory).glob("*.crt")):
                chunks.append(entry.read_bytes())
    return b"\n".join(chunks)


@functools.lru_cache(maxsize=4)
def trust_store(ca_bundle: str | None) -> TrustStore:
    """The anchors: ``ca_bundle`` (a PEM file) or the system store; loaded once."""
    data = Path(ca_bundle).read_bytes() if ca_bundle else _system_bundle()
    anchors: list[cx509.Certificate] = []
    fingerprints: set[str] = set()
    try:
        ders = x509.decode_certificates(data) if data.strip() else []
    except x509.CertificateParseError:
        ders = []
    for der in ders:
        try:
            with warnings.catch_warnings():  # stores hold a few roots with non-positive serials
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                anchors.append(cx509.load_der_x509_certificate(der))
            fingerprints.add(x509.fingerprint(der))
        except ValueError:
            continue
    if not anchors:
        log.warning("No trust anchors found in %s: every chain is untrusted", ca_bundle or "the system store")
    return TrustStore(Store(anchors) if anchors else Store([]), tuple(anchors), frozenset(fingerprints))


# --- host names --------------------------------------------------------------------------


def hostname_matches(desc: x509.CertificateDescription, name: str) -> bool:
    try:
        wanted_ip = ipaddress.ip_address(name)
    except ValueError:
        wanted_ip = None
    if wanted_ip is not None:
        for san in desc.sans:
            if san.type == "IP":
                try:
                    if ipaddress.ip_address(san.value.split("/", 1)[0]) == wanted_ip:
                        return True
                except ValueError:
                    continue
        return False
    name = name.lower().rstrip(".")
    for san in desc.sans:
        if san.type != "DNS":
            continue
        pattern = san.value.lower().rstrip(".")
        if pattern == name:
            return True
        if pattern.startswith("*.") and "*" not in pattern[2:]:
            head, _, rest = name.partition(".")
            if head and rest == pattern[2:]:
                return True
    return False


def _verify_subject(desc: x509.CertificateDescription, name: str | None, matches: bool | None):
    """The name to verify trust for: the checked name when it matches, else one the
    leaf carries (so a host-name mismatch is reported as such, not as distrust)."""
    if name and matches:
        try:
            return IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return DNSName(name)
    for san in desc.sans:
        if san.type == "DNS" and "*" not in san.value:
            return DNSName(san.value)
        if san.type == "DNS":
            return DNSName("x" + san.value[1:])  # a name the wildcard covers
    for san in desc.sans:
        if san.type == "IP":
            try:
                return IPAddress(ipaddress.ip_address(san.value.split("/", 1)[0]))
            except ValueError:
                continue
    return None


# --- the verdict ---------------------------------------------------------------------------


def _label(desc: x509.CertificateDescription) -> str:
    return desc.common_name or desc.subject or desc.fingerprint_sha256[:16]


def _issued(child: cx509.Certificate, parent: cx509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except Exception:  # noqa: BLE001 - InvalidSignature, unsupported algorithms, ...
        return False
    return True


def time_warnings(desc: x509.CertificateDescription, now: dt.datetime, *, what: str = "The certificate") -> list[Warning]:
    """EXPIRED / NOT_YET_VALID / EXPIRES_SOON for one certificate at ``now``."""
    if desc.not_after <= now:
        return [Warning(W.EXPIRED, f"{what} expired on {desc.not_after.isoformat()}.")]
    if desc.not_before > now:
        return [Warning(W.NOT_YET_VALID, f"{what} is valid only from {desc.not_before.isoformat()}.")]
    if st.status_of(desc.not_after, now) in (st.CertificateStatus.WARNING, st.CertificateStatus.CRITICAL):
        days = st.days_remaining(desc.not_after, now)
        plural = "s" if days != 1 else ""
        return [Warning(W.EXPIRES_SOON, f"{what} expires in {days} day{plural} ({desc.not_after.isoformat()}).")]
    return []


def _verify(
    trust: TrustStore, leaf: cx509.Certificate, rest: list[cx509.Certificate], subject, when: dt.datetime
) -> tuple[list[cx509.Certificate], str | None]:
    """(the verified path, None) when the chain verifies at ``when``, else ([], the reason)."""
    if subject is None:
        return [], "the leaf has no subjectAltName to verify"
    try:
        verifier = PolicyBuilder().store(trust.store).time(when).build_server_verifier(subject)
        return list(verifier.verify(leaf, rest)), None
    except VerificationError as exc:
        return [], str(exc).removeprefix("validation failed: ").split(" (encountered", 1)[0]
    except Exception as exc:  # noqa: BLE001 - unsupported algorithms and the like: not trusted
        return [], f"cannot be verified ({exc.__class__.__name__})"


def judge(
    descriptions: Sequence[x509.CertificateDescription],
    *,
    name: str | None,
    now: dt.datetime,
    trust: TrustStore,
) -> Verdict:
    """Judge a chain (leaf first, as served) for ``name`` (None: no name to check) at ``now``."""
    leaf_desc = descriptions[0]
    certs = [cx509.load_der_x509_certificate(d.der) for d in descriptions]
    leaf = certs[0]
    leaf_time = time_warnings(leaf_desc, now)
    warnings: list[Warning] = []
    for desc in descriptions[1:]:
        if not desc.self_signed and desc.not_after <= now:
            expired = f"The intermediate {_label(desc)!r} expired on {desc.not_after.isoformat()}."
            warnings.append(Warning(W.EXPIRED, expired))

    matches = hostname_matches(leaf_desc, name) if name else None
    if matches is False:
        names = ", ".join(s.value for s in leaf_desc.sans if s.type in ("DNS", "IP")) or "no names"
        warnings.append(Warning(W.HOSTNAME_MISMATCH, f"The certificate is not valid for {name} (it names {names})."))

    leaf_is_anchor = leaf_desc.fingerprint_sha256 in trust.fingerprints
    subject = _verify_subject(leaf_desc, name, matches)
    verified, reason = ([leaf], None) if leaf_is_anchor else _verify(trust, leaf, certs[1:], subject, now)
    trusted = reason is None
    top = 0
    if trusted:
        # The verifier built the path from what was served: nothing is missing.
        complete = True
        served_path = [cert for cert in verified[1:] if cert in certs[1:]]
        in_order = certs[1 : 1 + len(served_path)] == served_path
    else:
        # The path the served certificates form, from the leaf up.
        path = [0]
        while not descriptions[path[-1]].self_signed and len(path) < len(certs):
            parent = next((i for i in range(len(certs)) if i not in path and _issued(certs[path[-1]], certs[i])), None)
            if parent is None:
                break
            path.append(parent)
        in_order = path == list(range(len(path)))
        top = path[-1]
        top_is_anchor = descriptions[top].fingerprint_sha256 in trust.fingerprints
        issued_by_anchor = any(_issued(certs[top], a) for a in trust.anchors if a.subject == certs[top].issuer)
        complete = descriptions[top].self_signed or issued_by_anchor
        if any(w.code in TIME_CODES - {InspectionWarningCode.EXPIRES_SOON} for w in leaf_time + warnings):
            # Would it verify inside the validity windows? Then time is the only problem.
            start = max(d.not_before for d in descriptions)
            end = min(d.not_after for d in descriptions)
            if start < end:
                if _verify(trust, leaf, certs[1:], subject, start + (end - start) / 2)[1] is None:
                    reason = None
            elif top_is_anchor or issued_by_anchor:
                reason = None  # no instant where all are valid, but the path reaches an anchor
    if not in_order:
        warnings.append(Warning(W.CHAIN_OUT_OF_ORDER, "The certificates are not served in order (each followed by its issuer)."))
    if not trusted and reason is not None:
        if leaf_desc.self_signed:
            warnings.append(Warning(W.SELF_SIGNED, "The certificate is self-signed and not a trusted anchor."))
        elif not complete:
            missing = descriptions[top].issuer_common_name or descriptions[top].issuer
            issued = _label(descriptions[top])
            warnings.append(Warning(
                W.INCOMPLETE_CHAIN,
                f"The chain is incomplete: the certificate of {missing!r}, which issued {issued!r}, is not included.",
            ))  # fmt: skip
        else:
            warnings.append(Warning(W.UNTRUSTED_ROOT, f"The chain is not trusted: {reason}."))

    for index, desc in enumerate(descriptions):
        what = "The certificate" if index == 0 else f"The chain certificate {_label(desc)!r}"
        if desc.fingerprint_sha256 in trust.fingerprints and index > 0:
            continue  # a trust anchor's own key and signature are not what the endpoint chose
        if desc.key_algorithm in ("RSA", "DSA") and desc.key_size is not None and desc.key_size < MIN_RSA_BITS:
            weak = f"{what} has a {desc.key_size}-bit {desc.key_algorithm} key (at least {MIN_RSA_BITS} bits are expected)."
            warnings.append(Warning(W.WEAK_KEY, weak))
        if not desc.self_signed and any(h in desc.signature_algorithm.lower().replace("-", "") for h in WEAK_HASHES):
            warnings.append(Warning(W.WEAK_SIGNATURE, f"{what} is signed with {desc.signature_algorithm}."))

    return Verdict(
        trusted=trusted, complete=complete, hostname_matches=matches,
        warnings=tuple(leaf_time + warnings), lasting=tuple(warnings),
    )  # fmt: skip
