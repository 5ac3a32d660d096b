"""The one X.509 certificate parser.

Every certificate that enters CT-Ops Certificates -- uploaded by a user, found by
the agent on a host, fetched from a TLS endpoint -- is read by this module and
by nothing else. Other modules never call ``cryptography.x509`` themselves; they
call :func:`decode_certificates` to turn a file into DER certificates and
:func:`describe` to turn one DER certificate into a :class:`CertificateDescription`.

Identity
    A certificate *is* its DER encoding. :func:`fingerprint` (SHA-256 of the DER,
    lower-case hex, no colons) is the single identity used everywhere: database
    keys, de-duplication, API output, agent reports. Never fingerprint PEM text,
    a re-encoded certificate or anything else: comparing two different encodings
    of the same certificate is exactly how false "renewals" appear in an
    inventory. Inputs are therefore never re-encoded here; the DER returned by
    :func:`decode_certificates` is the certificate's own bytes, cut out of its
    container.

Errors
    :class:`CertificateParseError` (a ``ValueError``) is the only exception that
    :func:`describe` and :func:`decode_certificates` raise for bad input, whatever
    the bytes. Its message is a short reason meant for people (no stack, no
    data dump). :class:`PasswordRequired` is the subclass raised for a PKCS#12
    file whose password is missing or wrong.

Dependencies
    ``cryptography`` and the standard library only: the lightweight agent ships
    this module without the server dependencies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7, pkcs12
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtensionOID, NameOID

__all__ = [
    "INVALID_PEM_LABEL",
    "MAX_CERTIFICATE_BYTES",
    "CertificateDescription",
    "CertificateParseError",
    "PasswordRequired",
    "SubjectAltName",
    "decode_certificates",
    "der_length",
    "describe",
    "fingerprint",
    "is_der_certificate",
    "pem_blocks",
    "to_pem",
]

#: Largest DER certificate :func:`describe` accepts. Real certificates are a few
#: KiB; anything bigger is almost certainly not a certificate (or an attack).
MAX_CERTIFICATE_BYTES = 64 * 1024


class CertificateParseError(ValueError):
    """Input is not a certificate we can read.

    ``str(e)`` is a short human reason, no stack, no data dump. The underlying
    library error, when there is one, is kept as ``__cause__`` for debugging.
    """


class PasswordRequired(CertificateParseError):
    """The input is a PKCS#12 file and the password is missing or wrong."""


@dataclass(frozen=True, slots=True)
class SubjectAltName:
    """One subjectAltName entry.

    ``type`` is ``"DNS"``, ``"IP"``, ``"EMAIL"``, ``"URI"`` or ``"OTHER"``. For
    ``OTHER`` the value is readable text: ``"<dotted oid>:<hex of value>"`` for
    an otherName, the RFC 4514 string for a directoryName and the dotted OID for
    a registeredID.
    """

    type: str
    value: str


@dataclass(frozen=True, slots=True)
class CertificateDescription:
    """Everything the product knows about one certificate, read from its DER."""

    der: bytes = field(repr=False)
    fingerprint_sha256: str
    """Lower-case hex SHA-256 of :attr:`der`, no colons (see :func:`fingerprint`)."""
    fingerprint_sha1: str
    """Lower-case hex SHA-1 of :attr:`der` (display only, never an identity)."""
    serial_number: str
    """Lower-case hex of the serial INTEGER's content bytes (two's complement,
    minimal): ``-1 -> "ff"``, ``128 -> "0080"``. Exact for negative serials."""
    spki_sha256: str
    """Lower-case hex SHA-256 of the certificate's own SubjectPublicKeyInfo DER."""
    common_name: str | None
    subject: str
    """RFC 4514 string of the subject (``""`` for an empty subject)."""
    issuer: str
    issuer_common_name: str | None
    not_before: dt.datetime
    """Aware UTC."""
    not_after: dt.datetime
    """Aware UTC."""
    sans: tuple[SubjectAltName, ...]
    key_algorithm: str
    """``RSA``, ``EC``, ``ED25519``, ``ED448``, ``DSA`` or ``OTHER``."""
    key_size: int | None
    """Bits: RSA modulus, EC curve size, DSA p size, 256 (Ed25519), 456 (Ed448)."""
    curve: str | None
    """``P-256``, ``P-384``, ``P-521``; other curves as dotted OID; None for non-EC."""
    signature_algorithm: str
    is_ca: bool
    path_length: int | None
    key_usage: tuple[str, ...]
    extended_key_usage: tuple[str, ...]
    subject_key_identifier: str | None
    authority_key_identifier: str | None
    self_signed: bool
    """Subject equals issuer and the signature verifies with the certificate's own key."""


# --------------------------------------------------------------------------
# cryptography's warnings about legal-but-odd input
# --------------------------------------------------------------------------

#: Warnings cryptography emits while still reading the input. They describe
#: certificates in the wild (negative or zero serials, ``C=USA``, BER-encoded
#: PKCS#7/PKCS#12 from Java and Windows tools), are not actionable for an
#: operator, and would turn into errors under ``-W error``.
_CRYPTOGRAPHY_NOTES: tuple[tuple[type[Warning], str], ...] = (
    (CryptographyDeprecationWarning, r"Parsed a serial number which wasn't positive"),
    (UserWarning, r"Attribute's length must be"),
    (UserWarning, r"PKCS#7 certificates could not be parsed as DER"),
    (UserWarning, r"PKCS#12 bundle could not be parsed as DER"),
)


@contextlib.contextmanager
def _cryptography_notes_silenced() -> Iterator[None]:
    """Ignore exactly the :data:`_CRYPTOGRAPHY_NOTES` for the duration.

    ``warnings.catch_warnings`` is process-global state (about 3 µs per use);
    the filters are narrow (category + message), so even if two threads
    interleave and one restores the other's filter list, nothing else is
    silenced.
    """
    with warnings.catch_warnings():
        for category, message in _CRYPTOGRAPHY_NOTES:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


# --------------------------------------------------------------------------
# Fingerprints and PEM output
# --------------------------------------------------------------------------


def fingerprint(der: bytes) -> str:
    """THE fingerprint: SHA-256 of the DER certificate, lower-case hex, no colons."""
    return hashlib.sha256(der).hexdigest()


def to_pem(der: bytes) -> str:
    """Standard ``CERTIFICATE`` PEM text (64-column base64) with a trailing newline."""
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "".join(line + "\n" for line in lines) + "-----END CERTIFICATE-----\n"


# --------------------------------------------------------------------------
# Minimal DER reading (headers only; cryptography does the real parsing)
# --------------------------------------------------------------------------

_SEQUENCE = 0x30
_INTEGER = 0x02
_OBJECT_IDENTIFIER = 0x06
_CONTEXT_0_CONSTRUCTED = 0xA0


def _read_header(data: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """Read the DER identifier and length at ``data[pos:end]``.

    Returns ``(first identifier byte, header length, content length)`` or None
    when the header is malformed, truncated, indefinite-length or not minimally
    encoded. The content itself may extend past ``end``; callers check.
    """
    if pos >= end:
        return None
    tag = data[pos]
    p = pos + 1
    if tag & 0x1F == 0x1F:  # high tag number form: base-128 continuation bytes
        for _ in range(4):
            if p >= end:
                return None
            more = data[p] & 0x80
            p += 1
            if not more:
                break
        else:
            return None
    if p >= end:
        return None
    first = data[p]
    p += 1
    if first < 0x80:
        return tag, p - pos, first
    count = first & 0x7F
    if count == 0 or count > 8 or p + count > end:  # indefinite length / absurd / truncated
        return None
    length = int.from_bytes(data[p : p + count], "big")
    if data[p] == 0 or length < 0x80:  # DER requires the minimal length encoding
        return None
    return tag, p + count - pos, length


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(tag, tlv start, tlv end)`` for each element in ``data[start:end]``.

    Stops silently at the first malformed element.
    """
    pos = start
    while pos < end:
        header = _read_header(data, pos, end)
        if header is None:
            return
        tag, header_len, content_len = header
        tlv_end = pos + header_len + content_len
        if tlv_end > end:
            return
        yield tag, pos, tlv_end
        pos = tlv_end


def _content(data: bytes, start: int, end: int) -> tuple[int, int]:
    """Content bounds of the (already validated) TLV at ``data[start:end]``."""
    header = _read_header(data, start, end)
    assert header is not None
    return start + header[1], end


def der_length(data: bytes) -> int | None:
    """Total length (header + content) declared by the first DER TLV in ``data``.

    Used to cut trailing bytes off a certificate. Returns None when ``data`` does
    not start with a valid DER header. The declared length may exceed
    ``len(data)`` when the input is truncated; callers compare.
    """
    header = _read_header(data, 0, len(data))
    if header is None:
        return None
    return header[1] + header[2]


def is_der_certificate(data: bytes) -> bool:
    """Cheap sniff: does ``data`` look like ``SEQUENCE { SEQUENCE { [0] | INTEGER ...``?

    That is the shape of a Certificate (and distinguishes it from PKCS#7, whose
    outer SEQUENCE starts with an OID, and PKCS#12, which starts with an
    INTEGER). Trailing bytes after the certificate are allowed. It does not
    prove the data parses; :func:`describe` does that.
    """
    end = len(data)
    outer = _read_header(data, 0, end)
    if outer is None or outer[0] != _SEQUENCE or outer[1] + outer[2] > end:
        return False
    tbs_pos = outer[1]
    outer_end = outer[1] + outer[2]
    tbs = _read_header(data, tbs_pos, outer_end)
    if tbs is None or tbs[0] != _SEQUENCE or tbs_pos + tbs[1] + tbs[2] > outer_end:
        return False
    first_pos = tbs_pos + tbs[1]
    return first_pos < outer_end and data[first_pos] in (_CONTEXT_0_CONSTRUCTED, _INTEGER)


def _raw_serial_and_spki(der: bytes) -> tuple[bytes, bytes] | None:
    """The serial INTEGER content bytes and the SubjectPublicKeyInfo TLV, as encoded.

    Reading them from the DER (instead of from cryptography's objects) keeps
    the serial exact even when negative and hashes the SPKI exactly as the CA
    encoded it (re-encoding a key could change compressed EC points, NULL
    parameters, ...). None when the structure is not a Certificate.
    """
    outer = next(_children(der, 0, len(der)), None)
    if outer is None or outer[0] != _SEQUENCE:
        return None
    start, end = _content(der, outer[1], outer[2])
    tbs = next(_children(der, start, end), None)
    if tbs is None or tbs[0] != _SEQUENCE:
        return None
    fields = list(_children(der, *_content(der, tbs[1], tbs[2])))
    if fields and fields[0][0] == _CONTEXT_0_CONSTRUCTED:  # explicit version
        fields = fields[1:]
    # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6 or fields[0][0] != _INTEGER or fields[5][0] != _SEQUENCE:
        return None
    serial_start, serial_end = _content(der, fields[0][1], fields[0][2])
    return der[serial_start:serial_end], der[fields[5][1] : fields[5][2]]


def _decode_oid(content: bytes) -> str | None:
    """Dotted string of an OBJECT IDENTIFIER's content bytes (None if malformed)."""
    if not content or content[-1] & 0x80:
        return None
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _spki_parameters_oid(spki: bytes) -> str | None:
    """The AlgorithmIdentifier parameters of an SPKI when they are an OID (EC namedCurve)."""
    outer = next(_children(spki, 0, len(spki)), None)
    if outer is None:
        return None
    algorithm = next(_children(spki, *_content(spki, outer[1], outer[2])), None)
    if algorithm is None or algorithm[0] != _SEQUENCE:
        return None
    parts = list(_children(spki, *_content(spki, algorithm[1], algorithm[2])))
    if len(parts) < 2 or parts[1][0] != _OBJECT_IDENTIFIER:
        return None
    start, end = _content(spki, parts[1][1], parts[1][2])
    return _decode_oid(spki[start:end])


# --------------------------------------------------------------------------
# describe()
# --------------------------------------------------------------------------

_KEY_ALGORITHMS = {
    "1.2.840.113549.1.1.1": "RSA",  # rsaEncryption
    "1.2.840.113549.1.1.10": "RSA",  # id-RSASSA-PSS key
    "1.2.840.10045.2.1": "EC",  # id-ecPublicKey
    "1.3.101.112": "ED25519",
    "1.3.101.113": "ED448",
    "1.2.840.10040.4.1": "DSA",
}

_NIST_CURVES = {
    "1.2.840.10045.3.1.7": "P-256",
    "1.3.132.0.34": "P-384",
    "1.3.132.0.35": "P-521",
}
_NIST_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}

_KEY_USAGE_FLAGS = (
    ("digital_signature", "DIGITAL_SIGNATURE"),
    ("content_commitment", "CONTENT_COMMITMENT"),
    ("key_encipherment", "KEY_ENCIPHERMENT"),
    ("data_encipherment", "DATA_ENCIPHERMENT"),
    ("key_agreement", "KEY_AGREEMENT"),
    ("key_cert_sign", "KEY_CERT_SIGN"),
    ("crl_sign", "CRL_SIGN"),
)

#: RFC 5280 short names, kept here so output does not depend on cryptography's
#: private name table; other OIDs fall back to cryptography's name, then dotted.
_EKU_NAMES = {
    "1.3.6.1.5.5.7.3.1": "serverAuth",
    "1.3.6.1.5.5.7.3.2": "clientAuth",
    "1.3.6.1.5.5.7.3.3": "codeSigning",
    "1.3.6.1.5.5.7.3.4": "emailProtection",
    "1.3.6.1.5.5.7.3.8": "timeStamping",
    "1.3.6.1.5.5.7.3.9": "OCSPSigning",
    "2.5.29.37.0": "anyExtendedKeyUsage",
}

_UNKNOWN_OID_NAME = "Unknown OID"  # cryptography's ObjectIdentifier._name for unnamed OIDs


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    """cryptography's readable name for ``oid``, or its dotted string."""
    name = getattr(oid, "_name", _UNKNOWN_OID_NAME)
    return name if isinstance(name, str) and name and name != _UNKNOWN_OID_NAME else oid.dotted_string


def _first_common_name(name: x509.Name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _general_name(name: x509.GeneralName) -> SubjectAltName:
    if isinstance(name, x509.DNSName):
        return SubjectAltName("DNS", name.value)
    if isinstance(name, x509.IPAddress):
        return SubjectAltName("IP", str(name.value))
    if isinstance(name, x509.RFC822Name):
        return SubjectAltName("EMAIL", name.value)
    if isinstance(name, x509.UniformResourceIdentifier):
        return SubjectAltName("URI", name.value)
    if isinstance(name, x509.OtherName):
        return SubjectAltName("OTHER", f"{name.type_id.dotted_string}:{name.value.hex()}")
    if isinstance(name, x509.DirectoryName):
        return SubjectAltName("OTHER", name.value.rfc4514_string())
    if isinstance(name, x509.RegisteredID):
        return SubjectAltName("OTHER", name.value.dotted_string)
    return SubjectAltName("OTHER", repr(name))


def _key_usage(usage: x509.KeyUsage) -> tuple[str, ...]:
    names = [label for attribute, label in _KEY_USAGE_FLAGS if getattr(usage, attribute)]
    if usage.key_agreement:  # cryptography refuses to read these two otherwise
        if usage.encipher_only:
            names.append("ENCIPHER_ONLY")
        if usage.decipher_only:
            names.append("DECIPHER_ONLY")
    return tuple(names)


def _extended_key_usage(usage: x509.ExtendedKeyUsage) -> tuple[str, ...]:
    return tuple(_EKU_NAMES.get(oid.dotted_string) or _oid_name(oid) for oid in usage)


def _key_details(cert: x509.Certificate, spki: bytes) -> tuple[str, int | None, str | None]:
    """``(key_algorithm, key_size, curve)``.

    The algorithm and curve come from the SPKI's OIDs, so they are known even
    for keys cryptography cannot load. Sizes come from cryptography's curve
    table (EC, without loading the point) or the loaded key (RSA, DSA).
    """
    algorithm = _KEY_ALGORITHMS.get(cert.public_key_algorithm_oid.dotted_string, "OTHER")
    if algorithm == "ED25519":
        return algorithm, 256, None
    if algorithm == "ED448":
        return algorithm, 456, None
    curve: str | None = None
    if algorithm == "EC":
        curve_oid = _spki_parameters_oid(spki)
        if curve_oid is not None:
            curve = _NIST_CURVES.get(curve_oid, curve_oid)
            try:
                return algorithm, ec.get_curve_for_oid(x509.ObjectIdentifier(curve_oid)).key_size, curve
            except (LookupError, ValueError):
                pass  # curve unknown to cryptography: let the key loader decide
    if algorithm == "OTHER":
        return algorithm, None, None
    try:
        key = cert.public_key()
    except (UnsupportedAlgorithm, ValueError, TypeError):
        return algorithm, None, curve
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        return algorithm, key.key_size, None
    if isinstance(key, ec.EllipticCurvePublicKey):  # curve OID absent or unknown to cryptography
        return "EC", key.curve.key_size, curve or _NIST_CURVE_NAMES.get(key.curve.name, key.curve.name)
    return algorithm, None, curve


def _serial_hex(value: int) -> str:
    """Minimal two's complement hex of a serial: ``-1 -> "ff"``, ``128 -> "0080"``."""
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return value.to_bytes(size, "big", signed=True).hex()


def _is_self_signed(cert: x509.Certificate, ski: str | None, aki: str | None) -> bool:
    """Self-issued (subject == issuer) and signed by its own key.

    The signature is only checked for self-issued certificates, so ordinary
    leaves cost nothing. When the signature cannot be checked (unsupported
    algorithm), a self-issued certificate whose AKI is absent or equals its SKI
    counts as self-signed.
    """
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except InvalidSignature:
        return False
    except (UnsupportedAlgorithm, TypeError, ValueError):
        return aki is None or aki == ski
    return True


def _check_size(der: bytes) -> None:
    if not der:
        raise CertificateParseError("empty input")
    if len(der) > MAX_CERTIFICATE_BYTES:
        raise CertificateParseError(f"larger than {MAX_CERTIFICATE_BYTES // 1024} KiB, not a certificate")
    if der.lstrip()[:10] == b"-----BEGIN":
        raise CertificateParseError("PEM text, not DER (decode it with decode_certificates first)")
    total = der_length(der)
    if total is None:
        raise CertificateParseError("not DER-encoded data")
    if total > len(der):
        raise CertificateParseError("truncated DER data")
    if total < len(der):
        raise CertificateParseError("trailing bytes after the certificate")


def describe(der: bytes) -> CertificateDescription:
    """Read one DER certificate (exactly one, no trailing bytes).

    Raises :class:`CertificateParseError`, and nothing else, for any input that
    is not a readable certificate: garbage, truncated or oversize data, PEM
    text, malformed extensions.
    """
    if isinstance(der, (bytearray, memoryview)):
        der = bytes(der)
    if not isinstance(der, bytes):
        raise CertificateParseError(f"expected DER bytes, got {type(der).__name__}")
    _check_size(der)
    raw = _raw_serial_and_spki(der)
    if raw is None:
        raise CertificateParseError("not an X.509 certificate")
    serial, spki = raw
    if not serial:
        raise CertificateParseError("malformed serial number")
    serial_value = int.from_bytes(serial, "big", signed=True)
    with _cryptography_notes_silenced():
        try:
            cert = x509.load_der_x509_certificate(der)
        except x509.InvalidVersion as exc:
            raise CertificateParseError("unsupported X.509 version") from exc
        except Exception as exc:  # noqa: BLE001 - ValueError and friends from the DER parser
            raise CertificateParseError("malformed X.509 certificate") from exc
        try:
            return _describe(cert, der, serial_value, spki)
        except CertificateParseError:
            raise
        except Exception as exc:  # noqa: BLE001 - the contract: only CertificateParseError escapes
            raise CertificateParseError(f"unreadable certificate field ({type(exc).__name__})") from exc


def _describe(cert: x509.Certificate, der: bytes, serial_value: int, spki: bytes) -> CertificateDescription:
    try:
        extensions = cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateParseError("malformed certificate extension") from exc

    sans: tuple[SubjectAltName, ...] = ()
    is_ca = False
    path_length: int | None = None
    key_usage: tuple[str, ...] = ()
    extended_key_usage: tuple[str, ...] = ()
    ski: str | None = None
    aki: str | None = None
    for extension in extensions:
        oid = extension.oid
        value = extension.value
        if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            sans = tuple(_general_name(name) for name in value)
        elif oid == ExtensionOID.BASIC_CONSTRAINTS:
            is_ca = value.ca
            path_length = value.path_length
        elif oid == ExtensionOID.KEY_USAGE:
            key_usage = _key_usage(value)
        elif oid == ExtensionOID.EXTENDED_KEY_USAGE:
            extended_key_usage = _extended_key_usage(value)
        elif oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            ski = value.digest.hex()
        elif oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            aki = value.key_identifier.hex() if value.key_identifier is not None else None

    try:
        subject = cert.subject
        issuer = cert.issuer
    except (ValueError, TypeError) as exc:
        raise CertificateParseError("malformed subject or issuer name") from exc
    key_algorithm, key_size, curve = _key_details(cert, spki)
    return CertificateDescription(
        der=der,
        fingerprint_sha256=fingerprint(der),
        fingerprint_sha1=hashlib.sha1(der, usedforsecurity=False).hexdigest(),
        serial_number=_serial_hex(serial_value),
        spki_sha256=hashlib.sha256(spki).hexdigest(),
        common_name=_first_common_name(subject),
        subject=subject.rfc4514_string(),
        issuer=issuer.rfc4514_string(),
        issuer_common_name=_first_common_name(issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sans=sans,
        key_algorithm=key_algorithm,
        key_size=key_size,
        curve=curve,
        signature_algorithm=_oid_name(cert.signature_algorithm_oid),
        is_ca=is_ca,
        path_length=path_length,
        key_usage=key_usage,
        extended_key_usage=extended_key_usage,
        subject_key_identifier=ski,
        authority_key_identifier=aki,
        self_signed=_is_self_signed(cert, ski, aki),
    )


# --------------------------------------------------------------------------
# Containers: PEM, PKCS#7, PKCS#12
# --------------------------------------------------------------------------

_PEM_MARKER = re.compile(rb"-----(BEGIN|END) ([^\r\n]*?)-----")
_WHITESPACE = re.compile(rb"\s+")

#: PEM labels whose content is one DER certificate.
_CERTIFICATE_LABELS = frozenset({"CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"})
#: PEM labels whose content is a PKCS#7 / CMS SignedData (certs-only .p7b).
_PKCS7_LABELS = frozenset({"PKCS7", "PKCS #7 SIGNED DATA", "CMS"})

INVALID_PEM_LABEL = "INVALID"


def _pem_body(body: bytes) -> bytes | None:
    """Base64-decode a PEM body, skipping RFC 1421 headers; None if it is not base64."""
    if b":" in body:  # "Proc-Type: ..." style headers end at the first blank line
        head, separator, rest = body.replace(b"\r\n", b"\n").partition(b"\n\n")
        if separator and b":" in head:
            body = rest
    encoded = _WHITESPACE.sub(b"", body)
    if not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def pem_blocks(data: bytes | str) -> list[tuple[str, bytes]]:
    """Every PEM block in ``data`` as ``(label, der)``, in order.

    Text before, between and after blocks is ignored; CRLF and stray
    whitespace are fine. A block that cannot be decoded (bad base64, empty,
    missing or mismatched END line) is returned as ``("INVALID", b"")`` so the
    caller can report it, and does not stop the blocks after it. A ``TRUSTED
    CERTIFICATE`` block (OpenSSL's format: the certificate followed by trust
    settings) yields only the certificate's own DER, cut at the length in its
    outer SEQUENCE header.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    blocks: list[tuple[str, bytes]] = []
    open_label: str | None = None
    body_start = 0
    for marker in _PEM_MARKER.finditer(data):
        kind = marker.group(1)
        label = marker.group(2).decode("ascii", "replace").strip()
        if kind == b"BEGIN":
            if open_label is not None:  # previous block never ended
                blocks.append((INVALID_PEM_LABEL, b""))
            open_label, body_start = label, marker.end()
            continue
        if open_label is None:  # stray END
            continue
        der = _pem_body(data[body_start : marker.start()]) if label == open_label else None
        if der is not None and open_label == "TRUSTED CERTIFICATE":
            total = der_length(der)
            der = der[:total] if total is not None and total <= len(der) else None
        blocks.append((open_label, der) if der is not None else (INVALID_PEM_LABEL, b""))
        open_label = None
    if open_label is not None:
        blocks.append((INVALID_PEM_LABEL, b""))
    return blocks


def _certificate_der(data: bytes) -> bytes | None:
    """``data`` cut to its first DER TLV, if that looks like a certificate."""
    if not is_der_certificate(data):
        return None
    total = der_length(data)
    assert total is not None  # is_der_certificate checked the header
    return data[:total]


def _pkcs7_certificates(der: bytes) -> list[bytes] | None:
    """The certificates of a DER/BER PKCS#7 SignedData, None when it is not one.

    ``public_bytes(DER)`` of a loaded certificate gives back its own encoding.
    """
    try:
        with _cryptography_notes_silenced():
            certificates = pkcs7.load_der_pkcs7_certificates(der)
            return [certificate.public_bytes(Encoding.DER) for certificate in certificates]
    except Exception:  # noqa: BLE001 - ValueError, InvalidVersion, UnsupportedAlgorithm, ...
        return None


def _looks_like_pkcs12(data: bytes) -> bool:
    """``PFX ::= SEQUENCE { version INTEGER (3), authSafe ContentInfo, ... }``.

    The outer length may be BER's indefinite form (Java keystores write that).
    """
    if len(data) < 5 or data[0] != _SEQUENCE:
        return False
    first = data[1]
    header = 2 if first <= 0x80 else 2 + (first & 0x7F)
    return data[header : header + 3] == b"\x02\x01\x03"


def _pkcs12_certificates(data: bytes, password: bytes | None) -> list[bytes]:
    candidates: list[bytes | None] = []
    for candidate in (password, b"", None):
        if candidate not in candidates:
            candidates.append(candidate)
    for candidate in candidates:
        try:
            with _cryptography_notes_silenced():
                bundle = pkcs12.load_pkcs12(data, candidate)
                certificates = ([bundle.cert] if bundle.cert is not None else []) + list(bundle.additional_certs)
                found = [item.certificate.public_bytes(Encoding.DER) for item in certificates]
        except Exception:  # noqa: BLE001 - "Invalid password or PKCS12 data" and friends
            continue
        if not found:
            raise CertificateParseError("PKCS#12 file contains no certificate")
        return found
    if password:
        raise PasswordRequired("wrong password for the PKCS#12 file")
    raise PasswordRequired("the PKCS#12 file needs a password")


def _from_pem(data: bytes) -> list[bytes]:
    found: list[bytes] = []
    labels: list[str] = []
    for label, der in pem_blocks(data):
        labels.append(label)
        if label in _CERTIFICATE_LABELS:
            certificate = _certificate_der(der)
            if certificate is not None:
                found.append(certificate)
            else:  # some tools put a .p7b inside a CERTIFICATE block
                found.extend(_pkcs7_certificates(der) or [])
        elif label in _PKCS7_LABELS:
            found.extend(_pkcs7_certificates(der) or [])
    if not found:
        seen = ", ".join(dict.fromkeys(labels)) or "no complete block"
        raise CertificateParseError(f"no certificate in PEM data ({seen})")
    return found


def decode_certificates(data: bytes | str, password: bytes | None = None) -> list[bytes]:
    """All certificates in ``data``, as DER, in input order.

    The format is sniffed from the content, never from a file name: PEM
    (``CERTIFICATE``, ``TRUSTED CERTIFICATE``, ``X509 CERTIFICATE`` and PKCS#7
    blocks; other blocks such as keys are ignored), a raw DER certificate
    (trailing bytes are cut off), a DER PKCS#7 certs-only bundle (.p7b) or a
    PKCS#12 file (tried with ``password``, then ``b""`` and no password).

    Each returned item is a certificate-shaped DER blob exactly as it appears
    in the input (PEM blocks that do not decode are skipped; use
    :func:`pem_blocks` to report them one by one). Pass each to
    :func:`describe` for the full parse.

    Raises :class:`PasswordRequired` for a PKCS#12 file whose password is
    missing or wrong (a damaged PKCS#12 file looks the same: its integrity
    check fails) and :class:`CertificateParseError` when nothing in the
    input is a certificate.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise CertificateParseError(f"expected bytes, got {type(data).__name__}")
    if not data.strip():
        raise CertificateParseError("empty input")
    if b"-----BEGIN " in data:
        return _from_pem(data)
    certificate = _certificate_der(data)
    if certificate is not None:
        return [certificate]
    if data[0] == _SEQUENCE:
        found = _pkcs7_certificates(data)
        if found:
            return found
        if _looks_like_pkcs12(data):
            return _pkcs12_certificates(data, password)
    raise CertificateParseError("not a certificate (expected PEM, DER, PKCS#7 or PKCS#12)")
