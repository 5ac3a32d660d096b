"""Test certificate factory, shared by every test in the project.

Quick tour::

    from tests.certs import make_ca, make_cert, pem_bundle

    root = make_ca()                                   # self-signed root, EC P-256
    leaf = make_cert("shop.test", issuer=root)         # leaf signed by the root
    leaf.der, leaf.pem, leaf.fingerprint, leaf.cert    # DER bytes, PEM text, sha256 hex, x509 object
    bundle = pem_bundle(leaf, root)

    make_cert("old.test", not_before=..., days=30)     # explicit validity (aware datetimes)
    make_cert(None, sans=())                           # no CN, no SAN
    make_cert("rsa.test", key_kind="rsa")              # key kinds: ec rsa ed25519 ed448 dsa secp256k1
    make_cert("x", sans=("a.test", x509.OtherName(...)), ip_sans=("10.0.0.1",))
    negative_serial_der(-1)                            # what cryptography refuses to build

Keys are generated once per ``(kind, size, slot)`` and cached for the whole
test session (RSA generation is slow). Each CA gets its own key slot (named
after the CA), leaves share slot 0 unless given ``key=``; use
``make_key(kind, slot="something")`` for another distinct key.

Validity defaults to the real clock: ``not_before = now - 1 day`` (whole
seconds, since certificates cannot hold microseconds), ``not_after =
not_before + days``.

This module also holds a tiny DER encoder/decoder (``der_*``) for building
certificates cryptography will not build: it is deliberately independent of
``backend.x509`` so tests never check the parser against itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
]
ExtensionSpec = Union[x509.ExtensionType, tuple[x509.ExtensionType, bool]]

UTC = dt.timezone.utc
KEY_KINDS = ("ec", "rsa", "ed25519", "ed448", "dsa", "secp256k1")
_EC_CURVES: dict[int, type[ec.EllipticCurve]] = {256: ec.SECP256R1, 384: ec.SECP384R1, 521: ec.SECP521R1}


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------


_DEFAULT_SIZES = {"ec": 256, "rsa": 2048, "dsa": 2048}
_keys: dict[tuple[str, int | None, int | str], PrivateKey] = {}


def make_key(kind: str = "ec", size: int | None = None, *, slot: int | str = 0) -> PrivateKey:
    """A private key, generated once per ``(kind, size, slot)`` and cached.

    kinds: ``"ec"`` (P-256; ``size`` 384 or 521 picks P-384/P-521), ``"rsa"``
    (2048 bits unless ``size``), ``"ed25519"``, ``"ed448"``, ``"dsa"`` (2048
    unless ``size``), ``"secp256k1"``. Different ``slot`` values give different
    keys of the same kind.
    """
    cache_key = (kind, size or _DEFAULT_SIZES.get(kind), slot)
    if cache_key not in _keys:
        _keys[cache_key] = _generate_key(kind, cache_key[1])
    return _keys[cache_key]


def _generate_key(kind: str, size: int | None) -> PrivateKey:
    if kind == "ec":
        curve = _EC_CURVES.get(size or 256)
        if curve is None:
            raise ValueError(f"no EC curve of size {size}; use 256, 384 or 521")
        return ec.generate_private_key(curve())
    if kind == "secp256k1":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size or 2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ed448":
        return ed448.Ed448PrivateKey.generate()
    if kind == "dsa":
        return dsa.generate_private_key(key_size=size or 2048)
    raise ValueError(f"unknown key kind {kind!r}; expected one of {KEY_KINDS}")


def _signature_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()


# --------------------------------------------------------------------------
# Certificates
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """A certificate together with its private key and encodings."""

    cert: x509.Certificate
    key: PrivateKey
    der: bytes
    pem: str
    issuer: Issued | None = None
    """The issuing certificate; None when self-signed."""

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the DER, lower-case hex (the product's certificate identity)."""
        return hashlib.sha256(self.der).hexdigest()

    @property
    def signing_key(self) -> PrivateKey:
        """The key that signed this certificate (the issuer's, or its own)."""
        return self.issuer.key if self.issuer is not None else self.key

    @property
    def pem_bytes(self) -> bytes:
        return self.pem.encode("ascii")


def _whole_seconds(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("use aware datetimes (e.g. datetime.now(timezone.utc))")
    return value.astimezone(UTC).replace(microsecond=0)


def _validity(
    not_before: dt.datetime | None, not_after: dt.datetime | None, days: float
) -> tuple[dt.datetime, dt.datetime]:
    start = _whole_seconds(not_before) if not_before else _whole_seconds(dt.datetime.now(UTC) - dt.timedelta(days=1))
    end = _whole_seconds(not_after) if not_after else start + dt.timedelta(days=days)
    return start, end


def _name(common_name: str | None) -> x509.Name:
    if common_name is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _build(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: Issued | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None,
    extensions: dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]],
) -> Issued:
    signing_key = issuer.key if issuer is not None else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer is not None else subject)
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for value, critical in extensions.values():
        builder = builder.add_extension(value, critical=critical)
    cert = builder.sign(signing_key, _signature_hash(signing_key))
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return Issued(cert=cert, key=key, der=der, pem=pem, issuer=issuer)


def _key_identifiers(
    key: PrivateKey, issuer: Issued | None
) -> dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]]:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    issuer_key = issuer.key if issuer is not None else key
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())
    return {ski.oid: (ski, False), aki.oid: (aki, False)}


def _merge(
    defaults: dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]], extra: Iterable[ExtensionSpec]
) -> dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]]:
    """Defaults overridden by caller-given extensions of the same OID."""
    merged = dict(defaults)
    for spec in extra:
        value, critical = spec if isinstance(spec, tuple) else (spec, False)
        merged[value.oid] = (value, critical)
    return merged


def make_ca(
    name: str = "Test Root CA",
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    issuer: Issued | None = None,
    path_length: int | None = None,
    *,
    key_kind: str = "ec",
    days: float = 3650,
    extensions: Iterable[ExtensionSpec] = (),
) -> Issued:
    """A CA certificate: a self-signed root, or an intermediate when ``issuer`` is given.

    ``CN=name``, BasicConstraints(ca, path_length) critical, KeyUsage
    keyCertSign+cRLSign+digitalSignature critical, SKI and AKI. The key
    defaults to a cached key of its own (slot ``"ca:<name>"``).
    """
    key = key if key is not None else make_key(key_kind, slot=f"ca:{name}")
    start, end = _validity(not_before, not_after, days)
    defaults = {
        x509.BasicConstraints.oid: (x509.BasicConstraints(ca=True, path_length=path_length), True),
        x509.KeyUsage.oid: (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        **_key_identifiers(key, issuer),
    }
    return _build(
        subject=_name(name),
        key=key,
        issuer=issuer,
        not_before=start,
        not_after=end,
        serial=None,
        extensions=_merge(defaults, extensions),
    )


def _general_names(
    sans: Iterable[str | x509.GeneralName], ip_sans: Iterable[str], email_sans: Iterable[str]
) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(s) if isinstance(s, str) else s for s in sans]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_sans]
    names += [x509.RFC822Name(email) for email in email_sans]
    return names


def make_cert(
    common_name: str | None = "example.test",
    sans: Sequence[str | x509.GeneralName] = ("example.test",),
    issuer: Issued | None = None,
    key: PrivateKey | None = None,
    key_kind: str = "ec",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: float = 90,
    serial: int | None = None,
    is_ca: bool = False,
    extensions: Iterable[ExtensionSpec] = (),
    ip_sans: Iterable[str] = (),
    email_sans: Iterable[str] = (),
) -> Issued:
    """A TLS server certificate, self-signed unless ``issuer`` is given.

    ``sans`` are DNS names (strings) or any ``x509.GeneralName``; ``ip_sans``
    and ``email_sans`` add IP and e-mail entries. ``common_name=None`` leaves
    the subject empty. Default extensions: SAN (when any), BasicConstraints
    (critical), KeyUsage digitalSignature (+keyEncipherment for RSA), EKU
    serverAuth, SKI, AKI. ``extensions`` items (``ExtensionType`` or
    ``(ExtensionType, critical)``) replace defaults with the same OID and add
    the others.
    """
    key = key if key is not None else make_key(key_kind)
    start, end = _validity(not_before, not_after, days)
    defaults: dict[x509.ObjectIdentifier, tuple[x509.ExtensionType, bool]] = {}
    general_names = _general_names(sans, ip_sans, email_sans)
    if general_names:
        san = x509.SubjectAlternativeName(general_names)
        defaults[san.oid] = (san, False)
    defaults[x509.BasicConstraints.oid] = (x509.BasicConstraints(ca=is_ca, path_length=None), True)
    defaults[x509.KeyUsage.oid] = (
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=isinstance(key, rsa.RSAPrivateKey),
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=is_ca,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        True,
    )
    defaults[x509.ExtendedKeyUsage.oid] = (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    defaults.update(_key_identifiers(key, issuer))
    return _build(
        subject=_name(common_name),
        key=key,
        issuer=issuer,
        not_before=start,
        not_after=end,
        serial=serial,
        extensions=_merge(defaults, extensions),
    )


def make_chain(common_name: str = "example.test", **leaf_options: object) -> tuple[Issued, Issued, Issued]:
    """``(leaf, intermediate, root)``: a leaf issued by an intermediate of a root."""
    root = make_ca("Test Root CA")
    intermediate = make_ca("Test Intermediate CA", issuer=root, path_length=0)
    leaf = make_cert(common_name, issuer=intermediate, **leaf_options)  # type: ignore[arg-type]
    return leaf, intermediate, root


# --------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------


def pem_bundle(*issued: Issued) -> str:
    """The PEM texts of ``issued``, concatenated in order."""
    return "".join(item.pem for item in issued)


def pkcs7_bundle(*issued: Issued, pem: bool = False) -> bytes:
    """A certs-only PKCS#7 (.p7b), DER or PEM. Note: DER SET OF sorts the certificates."""
    encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
    return pkcs7.serialize_certificates([item.cert for item in issued], encoding)


def pkcs12_bundle(leaf: Issued, *chain: Issued, password: bytes | None = b"secret", name: bytes = b"test") -> bytes:
    """A PKCS#12 (.pfx) with ``leaf``'s key and certificate plus ``chain``.

    ``password=None`` writes it unencrypted.
    """
    encryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        name, leaf.key, leaf.cert, [item.cert for item in chain] or None, encryption
    )


def trusted_certificate_pem(issued: Issued, trust: Sequence[str] = ("1.3.6.1.5.5.7.3.1",), alias: str = "test") -> str:
    """OpenSSL's ``TRUSTED CERTIFICATE`` PEM: the DER certificate followed by an X509_AUX trailer.

    ``X509_AUX ::= SEQUENCE { trust SEQUENCE OF OID OPTIONAL, ..., alias UTF8String OPTIONAL }``
    """
    trust_oids = der_sequence(*(der_oid(oid) for oid in trust))
    trailer = der_sequence(trust_oids, der_tlv(0x0C, alias.encode("utf-8")))
    return pem_text("TRUSTED CERTIFICATE", issued.der + trailer)


def pem_text(label: str, data: bytes) -> str:
    """Arbitrary PEM armour (64-column base64) around ``data``."""
    body = base64.b64encode(data).decode("ascii")
    lines = "".join(body[i : i + 64] + "\n" for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n{lines}-----END {label}-----\n"


# --------------------------------------------------------------------------
# Tiny DER encoder / decoder, for certificates cryptography will not build
# --------------------------------------------------------------------------


def der_tlv(tag: int, content: bytes) -> bytes:
    """One DER element with a single-byte tag."""
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def der_sequence(*elements: bytes) -> bytes:
    return der_tlv(0x30, b"".join(elements))


def der_integer(value: int) -> bytes:
    """INTEGER in minimal two's complement (works for negative and huge values)."""
    size = (value if value >= 0 else ~value).bit_length() // 8 + 1
    return der_tlv(0x02, value.to_bytes(size, "big", signed=True))


def der_oid(dotted: str) -> bytes:
    arcs = [int(part) for part in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        body.extend(reversed(chunk))
    return der_tlv(0x06, bytes(body))


def der_split(data: bytes) -> list[bytes]:
    """Split concatenated DER elements into their complete TLV encodings."""
    elements: list[bytes] = []
    pos = 0
    while pos < len(data):
        first = data[pos + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            count = first & 0x7F
            header, length = 2 + count, int.from_bytes(data[pos + 2 : pos + 2 + count], "big")
        elements.append(data[pos : pos + header + length])
        pos += header + length
    return elements


def der_content(element: bytes) -> bytes:
    """The content octets of one complete TLV."""
    first = element[1]
    return element[2:] if first < 0x80 else element[2 + (first & 0x7F) :]


def _sign(key: PrivateKey, data: bytes, hash_algorithm: hashes.HashAlgorithm | None) -> bytes:
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hash_algorithm or hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hash_algorithm or hashes.SHA256()))
    if isinstance(key, dsa.DSAPrivateKey):
        return key.sign(data, hash_algorithm or hashes.SHA256())
    return key.sign(data)


def der_with_serial(issued: Issued, serial: int) -> bytes:
    """``issued``'s certificate re-encoded with any INTEGER serial and re-signed.

    The tbsCertificate keeps everything else; the signature is made again with
    the original signing key and algorithm, so the result verifies.
    """
    tbs, signature_algorithm, _signature = der_split(der_content(issued.der))
    fields = der_split(der_content(tbs))
    index = 1 if fields[0][0] == 0xA0 else 0  # skip the explicit [0] version
    fields[index] = der_integer(serial)
    new_tbs = der_sequence(*fields)
    signature = _sign(issued.signing_key, new_tbs, issued.cert.signature_hash_algorithm)
    return der_sequence(new_tbs, signature_algorithm, der_tlv(0x03, b"\x00" + signature))


def negative_serial_der(serial: int = -1, **make_cert_options: object) -> bytes:
    """DER of a certificate whose serial is the negative INTEGER ``serial``.

    cryptography refuses to build such certificates (they exist in the wild),
    so a normal certificate from :func:`make_cert` is re-encoded by hand.
    """
    if serial >= 0:
        raise ValueError("serial must be negative")
    return der_with_serial(make_cert(**make_cert_options), serial)  # type: ignore[arg-type]
