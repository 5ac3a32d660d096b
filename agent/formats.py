"""What certificates a file holds, recognised by its content (never its name).

PEM (bundles, text around the blocks, CRLF, TRUSTED CERTIFICATE, PKCS#7
blocks), DER certificates, DER PKCS#7 (.p7b), PKCS#12 (tried with each
password) and Java keystores (JKS, JCEKS; see :mod:`agent.keystore`).

Everything that reads certificate bytes goes through :mod:`backend.x509`, the
product's one parser; this module only decides which container a file is and
what counts as an error:

* a file that cannot hold a certificate (text, binaries, a private key alone)
  gives nothing and no error;
* a certificate-shaped thing that does not parse (a broken PEM block, a
  keystore entry that is not a certificate), a PKCS#12 file none of the
  passwords opens, a damaged keystore: an error with a short reason.

Private keys are skipped by PEM label or by length and never decoded here;
opening a PKCS#12 file makes ``cryptography`` decrypt its key too, which is
dropped at once. No key ever reaches a report.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from backend import x509

from agent import keystore

_PEM_MARKER = b"-----BEGIN "
_DER_SEQUENCE = 0x30
_CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
_PKCS7_LABELS = frozenset({"PKCS7", "PKCS #7 SIGNED DATA", "CMS"})

#: Passwords tried after the configured ones, for PKCS#12 files and keystores.
DEFAULT_PASSWORDS = ("changeit", "")


@dataclass(frozen=True, slots=True)
class Found:
    """One certificate in a file.

    ``index`` counts the certificates found, from 0, in file order; in a
    keystore it counts within the entry named ``alias`` (0 is a trusted
    certificate, or the leaf of a private key's chain). Java writes keystore
    entries in hash-table order, which changes as entries come and go, so a
    position across the whole file would not name the same thing twice.
    """

    der: bytes
    index: int = 0
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    certificates: tuple[Found, ...] = ()
    errors: tuple[str, ...] = ()


class _Collected:
    __slots__ = ("certificates", "errors", "_counts")

    def __init__(self) -> None:
        self.certificates: list[Found] = []
        self.errors: list[str] = []
        self._counts: dict[str | None, int] = {}

    def add(self, der: bytes, alias: str | None) -> None:
        index = self._counts.get(alias, 0)
        self._counts[alias] = index + 1
        self.certificates.append(Found(der, index, alias))

    def result(self) -> Decoded:
        return Decoded(tuple(self.certificates), tuple(self.errors))


NOTHING = Decoded()


@functools.lru_cache(maxsize=65536)
def describe(der: bytes) -> x509.CertificateDescription:
    """:func:`backend.x509.describe`, once per distinct DER in this process."""
    return x509.describe(der)


def passwords_to_try(configured: Sequence[str]) -> list[str]:
    """The configured passwords in order, then "changeit" and "", each once."""
    return list(dict.fromkeys([*configured, *DEFAULT_PASSWORDS]))


def may_hold_certificates(data: bytes) -> bool:
    """Cheap test on the content: could this be any format we read?"""
    return bool(data) and (data[0] == _DER_SEQUENCE or keystore.is_keystore(data) or _PEM_MARKER in data)


# Results by content, kept for the files of this scan and the previous one:
# identical copies of a file are common, and every scan meets the same files
# again (opening a PKCS#12 costs milliseconds of key derivation). Small
# contents are their own key (cheaper to hash than to digest); larger ones
# are keyed by their SHA-256.
_SMALL = 64 * 1024
_this_scan: dict[tuple[object, tuple[str, ...]], Decoded] = {}
_last_scan: dict[tuple[object, tuple[str, ...]], Decoded] = {}


def start_scan() -> None:
    """Forget the results of files not seen since the scan before this one."""
    global _this_scan, _last_scan
    _last_scan, _this_scan = _this_scan, {}


def decode(data: bytes, passwords: Sequence[str] = DEFAULT_PASSWORDS) -> Decoded:
    """The certificates in ``data`` (in file order) and the problems found.

    ``passwords`` are tried in order on PKCS#12 files and keystores (see
    :func:`passwords_to_try`).
    """
    if not may_hold_certificates(data):
        return NOTHING
    passwords = passwords if isinstance(passwords, tuple) else tuple(passwords)
    content = data if len(data) <= _SMALL else ("sha256", hashlib.sha256(data).digest())
    key = (content, passwords)
    result = _this_scan.get(key)
    if result is None:
        result = _last_scan.get(key) or _decode(data, passwords)
        _this_scan[key] = result
    return result


def _decode(data: bytes, passwords: tuple[str, ...]) -> Decoded:
    if keystore.is_keystore(data):
        return _keystore(data, passwords)
    if _PEM_MARKER in data:
        return _pem(data)
    return _der(data, passwords)


def _checked(der: bytes, alias: str | None, where: str, out: _Collected) -> None:
    try:
        describe(der)
    except x509.CertificateParseError as exc:
        out.errors.append(f"{where}: {exc}")
        return
    out.add(der, alias)


def _pem(data: bytes) -> Decoded:
    out = _Collected()
    for number, (label, der) in enumerate(x509.pem_blocks(data), start=1):
        if label == x509.INVALID_PEM_LABEL:
            out.errors.append(f"PEM block {number}: not valid PEM (bad base64 or missing END line)")
            continue
        if label not in _CERTIFICATE_LABELS and label not in _PKCS7_LABELS:
            continue  # keys, requests, CRLs, parameters: not ours
        where = f"PEM block {number} ({label})"
        try:
            certificates = x509.decode_certificates(der)
        except x509.CertificateParseError as exc:
            out.errors.append(f"{where}: {exc}")
            continue
        for certificate in certificates:
            _checked(certificate, None, where, out)
    return out.result()


def _der(data: bytes, passwords: tuple[str, ...]) -> Decoded:
    out = _Collected()
    if x509.is_der_certificate(data):
        try:
            certificates = x509.decode_certificates(data)
        except x509.CertificateParseError as exc:
            out.errors.append(f"DER certificate: {exc}")
            return out.result()
    else:
        certificates, error = _open_container(data, passwords)
        if error:
            out.errors.append(error)
    for certificate in certificates:
        _checked(certificate, None, "DER certificate", out)
    return out.result()


def _open_container(data: bytes, passwords: tuple[str, ...]) -> tuple[tuple[bytes, ...], str | None]:
    # decode_certificates tries b"" and no password itself after the one given.
    for password in [p for p in passwords if p] or [""]:
        try:
            return tuple(x509.decode_certificates(data, password.encode("utf-8") or None)), None
        except x509.PasswordRequired:
            continue
        except x509.CertificateParseError:
            return (), None  # some other DER structure (a private key, ...): not ours
    return (), "PKCS#12: none of the configured passwords opens this file"


def _keystore(data: bytes, passwords: tuple[str, ...]) -> Decoded:
    out = _Collected()
    try:
        store = keystore.read(data, passwords)
    except keystore.KeystoreFormatError as exc:
        out.errors.append(str(exc))
        return out.result()
    for entry in store.certificates:
        _checked(entry.der, entry.alias, f"{store.kind} entry {entry.alias!r}", out)
    if store.problem:
        out.errors.append(store.problem)
    return out.result()
