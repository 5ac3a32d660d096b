"""Tests for backend.x509, the one certificate parser."""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from backend.x509 import (
    INVALID_PEM_LABEL,
    MAX_CERTIFICATE_BYTES,
    CertificateParseError,
    PasswordRequired,
    SubjectAltName,
    decode_certificates,
    der_length,
    describe,
    fingerprint,
    is_der_certificate,
    pem_blocks,
    to_pem,
)
from tests.certs import (
    der_content,
    der_oid,
    der_sequence,
    der_split,
    der_tlv,
    der_with_serial,
    make_ca,
    make_cert,
    make_chain,
    make_key,
    negative_serial_der,
    pem_bundle,
    pem_text,
    pkcs7_bundle,
    pkcs12_bundle,
    trusted_certificate_pem,
)

UTC = dt.timezone.utc


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment "
        "key_agreement key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{name: flags.get(name, False) for name in names})


# --------------------------------------------------------------------------
# Keys, curves, signature algorithms
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "size", "algorithm", "key_size", "curve", "signature"),
    [
        ("rsa", 2048, "RSA", 2048, None, "sha256WithRSAEncryption"),
        ("rsa", 1024, "RSA", 1024, None, "sha256WithRSAEncryption"),
        ("ec", 256, "EC", 256, "P-256", "ecdsa-with-SHA256"),
        ("ec", 384, "EC", 384, "P-384", "ecdsa-with-SHA256"),
        ("ec", 521, "EC", 521, "P-521", "ecdsa-with-SHA256"),
        ("secp256k1", None, "EC", 256, "1.3.132.0.10", "ecdsa-with-SHA256"),
        ("ed25519", None, "ED25519", 256, None, "ed25519"),
        ("ed448", None, "ED448", 456, None, "ed448"),
        ("dsa", 2048, "DSA", 2048, None, "dsa-with-sha256"),
    ],
)
def test_key_types(kind: str, size: int | None, algorithm: str, key_size: int, curve: str | None, signature: str) -> None:
    issued = make_cert("keys.test", key=make_key(kind, size))
    info = describe(issued.der)
    assert info.key_algorithm == algorithm
    assert info.key_size == key_size
    assert info.curve == curve
    assert info.signature_algorithm == signature
    assert info.self_signed is True


def test_leaf_signed_by_other_key_type() -> None:
    root = make_ca("RSA Root", key_kind="rsa")
    info = describe(make_cert("mixed.test", issuer=root).der)
    assert (info.key_algorithm, info.curve) == ("EC", "P-256")
    assert info.signature_algorithm == "sha256WithRSAEncryption"
    assert info.self_signed is False


def test_unsupported_key_type_is_other() -> None:
    issued = make_cert("x25519.test", key=x25519.X25519PrivateKey.generate(), issuer=make_ca())  # type: ignore[arg-type]
    info = describe(issued.der)
    assert (info.key_algorithm, info.key_size, info.curve) == ("OTHER", None, None)


def test_spki_hash_is_hash_of_the_encoded_public_key() -> None:
    key = make_key("ec", 384)
    info = describe(make_cert(key=key).der)
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert info.spki_sha256 == hashlib.sha256(spki).hexdigest()
    # same key, different certificate -> same SPKI hash, different fingerprint
    other = describe(make_cert("other.test", key=key).der)
    assert other.spki_sha256 == info.spki_sha256
    assert other.fingerprint_sha256 != info.fingerprint_sha256


# --------------------------------------------------------------------------
# Identity: fingerprints and serials
# --------------------------------------------------------------------------


def test_fingerprints_are_lower_hex_of_der() -> None:
    issued = make_cert()
    info = describe(issued.der)
    assert fingerprint(issued.der) == hashlib.sha256(issued.der).hexdigest() == issued.fingerprint
    assert info.fingerprint_sha256 == issued.fingerprint
    assert info.fingerprint_sha1 == hashlib.sha1(issued.der).hexdigest()
    assert info.fingerprint_sha256 == info.fingerprint_sha256.lower()
    assert ":" not in info.fingerprint_sha256 and len(info.fingerprint_sha256) == 64
    assert info.der == issued.der


def test_fingerprint_same_from_pem_and_der() -> None:
    issued = make_cert()
    from_pem = decode_certificates(issued.pem_bytes)
    from_der = decode_certificates(issued.der)
    assert from_pem == from_der == [issued.der]
    assert describe(from_pem[0]).fingerprint_sha256 == describe(from_der[0]).fingerprint_sha256 == issued.fingerprint


@pytest.mark.parametrize(
    ("serial", "expected"),
    [(1, "01"), (127, "7f"), (128, "0080"), (255, "00ff"), (256, "0100"), (0x1234567890ABCDEF, "1234567890abcdef")],
)
def test_positive_serial_hex(serial: int, expected: str) -> None:
    assert describe(make_cert(serial=serial).der).serial_number == expected


@pytest.mark.parametrize(
    ("serial", "expected"),
    [(-1, "ff"), (-128, "80"), (-129, "ff7f"), (-256, "ff00"), (-(2**63), "8000000000000000")],
)
def test_negative_serial_is_exact_and_quiet(serial: int, expected: str) -> None:
    der = negative_serial_der(serial)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked CryptographyDeprecationWarning would fail here
        info = describe(der)
    assert info.serial_number == expected
    assert info.fingerprint_sha256 == hashlib.sha256(der).hexdigest()


def test_describe_leaves_warning_filters_alone() -> None:
    der = negative_serial_der(-7)
    before = list(warnings.filters)
    describe(der)
    describe(make_cert().der)
    assert warnings.filters == before


def test_negative_serial_certificate_is_really_negative() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x509.load_der_x509_certificate(negative_serial_der(-129)).serial_number == -129


def test_zero_serial() -> None:
    der = der_with_serial(make_cert(), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert describe(der).serial_number == "00"


@pytest.mark.parametrize("serial", [2**158 + 12345, 2**160 + 1, 2**255 - 19])
def test_huge_serial(serial: int) -> None:
    info = describe(der_with_serial(make_cert(), serial))
    assert int(info.serial_number, 16) == serial
    assert len(info.serial_number) % 2 == 0
    assert int(info.serial_number[:2], 16) < 0x80  # positive: no leading 1 bit


# --------------------------------------------------------------------------
# Names, validity
# --------------------------------------------------------------------------


def test_names_and_validity() -> None:
    root = make_ca("Names Root")
    not_before = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    leaf = make_cert("www.names.test", issuer=root, not_before=not_before, days=10)
    info = describe(leaf.der)
    assert info.common_name == "www.names.test"
    assert info.subject == "CN=www.names.test"
    assert info.issuer == "CN=Names Root"
    assert info.issuer_common_name == "Names Root"
    assert info.not_before == not_before
    assert info.not_after == dt.datetime(2024, 1, 12, 3, 4, 5, tzinfo=UTC)
    assert info.not_before.tzinfo is not None and info.not_before.utcoffset() == dt.timedelta(0)


def test_validity_after_2050_uses_generalized_time() -> None:
    not_after = dt.datetime(2101, 6, 1, tzinfo=UTC)
    info = describe(make_cert(not_after=not_after).der)
    assert info.not_after == not_after


def test_explicit_non_utc_datetimes_are_converted() -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    info = describe(make_cert(not_before=dt.datetime(2025, 3, 1, 12, 0, tzinfo=plus_two), days=1).der)
    assert info.not_before == dt.datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def test_no_common_name_and_empty_subject() -> None:
    info = describe(make_cert(None, sans=("nocn.test",), issuer=make_ca()).der)
    assert info.common_name is None
    assert info.subject == ""
    assert info.sans == (SubjectAltName("DNS", "nocn.test"),)


def test_three_letter_country_is_read_quietly() -> None:
    # cryptography refuses to build it unless told not to validate (it exists in the wild)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        country = x509.NameAttribute(x509.NameOID.COUNTRY_NAME, "USA", _validate=False)
    root = make_ca("Odd Country Root")
    key = make_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([country, x509.NameAttribute(x509.NameOID.COMMON_NAME, "usa.test")]))
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(42)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(dt.datetime(2026, 1, 1, tzinfo=UTC))
        .sign(root.key, hashes.SHA256())
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        info = describe(cert.public_bytes(serialization.Encoding.DER))
    assert info.subject == "CN=usa.test,C=USA"
    assert info.common_name == "usa.test"


def test_first_of_several_common_names() -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "Example, Inc."),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "first.test"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, "second.test"),
        ]
    )
    key = make_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(dt.datetime(2026, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    info = describe(cert.public_bytes(serialization.Encoding.DER))
    assert info.common_name == "first.test"
    assert info.subject == subject.rfc4514_string()
    assert info.sans == ()


# --------------------------------------------------------------------------
# Extensions
# --------------------------------------------------------------------------


def test_san_types() -> None:
    upn = x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), der_tlv(0x0C, b"user@corp"))
    directory = x509.DirectoryName(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "dir")]))
    registered = x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4.5"))
    issued = make_cert(
        "san.test",
        sans=("san.test", "*.san.test", x509.UniformResourceIdentifier("https://san.test/x"), upn, directory, registered),
        ip_sans=("192.0.2.7", "2001:db8::1"),
        email_sans=("ops@san.test",),
    )
    assert describe(issued.der).sans == (
        SubjectAltName("DNS", "san.test"),
        SubjectAltName("DNS", "*.san.test"),
        SubjectAltName("URI", "https://san.test/x"),
        SubjectAltName("OTHER", "1.3.6.1.4.1.311.20.2.3:0c09757365724063" + "6f7270"),
        SubjectAltName("OTHER", "CN=dir"),
        SubjectAltName("OTHER", "1.2.3.4.5"),
        SubjectAltName("IP", "192.0.2.7"),
        SubjectAltName("IP", "2001:db8::1"),
        SubjectAltName("EMAIL", "ops@san.test"),
    )


def test_no_san_extension() -> None:
    assert describe(make_cert("bare.test", sans=()).der).sans == ()


def test_key_usage_names_in_order() -> None:
    usage = _key_usage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=True,
        data_encipherment=True,
        key_agreement=True,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=True,
        decipher_only=True,
    )
    info = describe(make_cert(extensions=[(usage, True)]).der)
    assert info.key_usage == (
        "DIGITAL_SIGNATURE",
        "CONTENT_COMMITMENT",
        "KEY_ENCIPHERMENT",
        "DATA_ENCIPHERMENT",
        "KEY_AGREEMENT",
        "KEY_CERT_SIGN",
        "CRL_SIGN",
        "ENCIPHER_ONLY",
        "DECIPHER_ONLY",
    )


def test_key_usage_subset_and_absent() -> None:
    info = describe(make_cert(extensions=[_key_usage(key_agreement=True, crl_sign=True)]).der)
    assert info.key_usage == ("KEY_AGREEMENT", "CRL_SIGN")
    root = make_ca("No KU Root")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(root.cert.subject)
        .public_key(make_key().public_key())
        .serial_number(99)
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=UTC))
        .not_valid_after(dt.datetime(2026, 1, 1, tzinfo=UTC))
        .sign(root.key, hashes.SHA256())
    )
    bare = describe(cert.public_bytes(serialization.Encoding.DER))
    assert bare.key_usage == () and bare.extended_key_usage == ()
    assert bare.is_ca is False and bare.path_length is None
    assert bare.subject_key_identifier is None and bare.authority_key_identifier is None
    assert bare.sans == ()


def test_extended_key_usage_names() -> None:
    usage = x509.ExtendedKeyUsage(
        [
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.CODE_SIGNING,
            ExtendedKeyUsageOID.EMAIL_PROTECTION,
            ExtendedKeyUsageOID.TIME_STAMPING,
            ExtendedKeyUsageOID.OCSP_SIGNING,
            ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
            x509.ObjectIdentifier("1.3.6.1.4.1.55555.7.1"),
        ]
    )
    info = describe(make_cert(extensions=[usage]).der)
    assert info.extended_key_usage == (
        "serverAuth",
        "clientAuth",
        "codeSigning",
        "emailProtection",
        "timeStamping",
        "OCSPSigning",
        "anyExtendedKeyUsage",
        "1.3.6.1.4.1.55555.7.1",
    )


def test_key_identifiers_are_lower_hex() -> None:
    leaf, intermediate, _root = make_chain("kid.test")
    info = describe(leaf.der)
    ski = x509.SubjectKeyIdentifier.from_public_key(leaf.key.public_key()).digest.hex()
    aki = x509.SubjectKeyIdentifier.from_public_key(intermediate.key.public_key()).digest.hex()
    assert info.subject_key_identifier == ski
    assert info.authority_key_identifier == aki
    assert info.authority_key_identifier == describe(intermediate.der).subject_key_identifier
    assert ski == ski.lower() and ski != aki


def test_authority_key_identifier_without_key_id() -> None:
    root = make_ca("Issuer Serial Root")
    aki = x509.AuthorityKeyIdentifier(
        key_identifier=None,
        authority_cert_issuer=[x509.DirectoryName(root.cert.subject)],
        authority_cert_serial_number=root.cert.serial_number,
    )
    assert describe(make_cert(issuer=root, extensions=[aki]).der).authority_key_identifier is None


def test_ca_and_path_length() -> None:
    leaf, intermediate, root = make_chain()
    root_info, intermediate_info, leaf_info = (describe(item.der) for item in (root, intermediate, leaf))
    assert (root_info.is_ca, root_info.path_length) == (True, None)
    assert (intermediate_info.is_ca, intermediate_info.path_length) == (True, 0)
    assert (leaf_info.is_ca, leaf_info.path_length) == (False, None)
    assert describe(make_ca("Deep", path_length=3).der).path_length == 3
    assert "KEY_CERT_SIGN" in root_info.key_usage


def test_unknown_extensions_are_ignored() -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.99"), b"\x04\x03abc")
    critical_unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.100"), b"\x05\x00")
    policies = x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)])
    info = describe(make_cert("ext.test", sans=("ext.test",), extensions=[unknown, (critical_unknown, True), policies]).der)
    assert info.common_name == "ext.test"
    assert info.sans == (SubjectAltName("DNS", "ext.test"),)


def test_malformed_known_extension_is_a_parse_error() -> None:
    broken_san = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x05\x82\x09abc")
    with pytest.raises(CertificateParseError, match="extension"):
        describe(make_cert(sans=(), extensions=[broken_san]).der)


# --------------------------------------------------------------------------
# self_signed
# --------------------------------------------------------------------------


def test_self_signed_root_and_issued_leaf() -> None:
    root = make_ca("Self Root")
    assert describe(root.der).self_signed is True
    assert describe(make_cert(issuer=root).der).self_signed is False
    assert describe(make_cert("self.test").der).self_signed is True


def test_same_subject_and_issuer_but_other_key_is_not_self_signed() -> None:
    ca = make_ca("Same Name")
    leaf = make_cert("Same Name", sans=(), issuer=ca)  # subject == issuer == CN=Same Name
    info = describe(leaf.der)
    assert info.subject == info.issuer == "CN=Same Name"
    assert info.self_signed is False


def test_self_issued_with_forged_signature_is_not_self_signed() -> None:
    issued = make_cert("forged.test")
    tbs, algorithm, signature = der_split(der_content(issued.der))
    bits = bytearray(der_content(signature))
    bits[-5] ^= 0x01
    forged = der_sequence(tbs, algorithm, der_tlv(0x03, bytes(bits)))
    assert describe(forged).self_signed is False


def _with_signature_algorithm(der: bytes, oid: str) -> bytes:
    """Replace both signature AlgorithmIdentifiers with an unknown OID (unverifiable)."""
    tbs, _algorithm, signature = der_split(der_content(der))
    fields = der_split(der_content(tbs))
    index = 2 if fields[0][0] == 0xA0 else 1
    fields[index] = der_sequence(der_oid(oid))
    return der_sequence(der_sequence(*fields), der_sequence(der_oid(oid)), signature)


def test_unknown_signature_algorithm_falls_back_to_key_identifiers() -> None:
    info = describe(_with_signature_algorithm(make_cert("unknown-sig.test").der, "1.3.6.1.4.1.55555.1.2"))
    assert info.signature_algorithm == "1.3.6.1.4.1.55555.1.2"
    assert info.subject_key_identifier == info.authority_key_identifier
    assert info.self_signed is True
    # self-issued, unverifiable, AKI points elsewhere: not self-signed
    other = make_ca("Elsewhere")
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(other.key.public_key())
    odd = make_cert("odd.test", extensions=[aki])
    assert describe(_with_signature_algorithm(odd.der, "1.3.6.1.4.1.55555.1.2")).self_signed is False


# --------------------------------------------------------------------------
# describe() input checking and robustness
# --------------------------------------------------------------------------


def test_describe_rejects_trailing_bytes() -> None:
    with pytest.raises(CertificateParseError, match="trailing"):
        describe(make_cert().der + b"\x00\x00")


def test_describe_rejects_pem_text_with_a_hint() -> None:
    with pytest.raises(CertificateParseError, match="PEM"):
        describe(make_cert().pem_bytes)


@pytest.mark.parametrize("data", [b"", b"\x00", b"hello world", b"\x30", b"\x30\x80\x00\x00", b"\x30\x03\x02\x01\x01"])
def test_describe_garbage(data: bytes) -> None:
    with pytest.raises(CertificateParseError):
        describe(data)


def test_describe_rejects_non_bytes() -> None:
    with pytest.raises(CertificateParseError):
        describe("not bytes")  # type: ignore[arg-type]


def test_describe_accepts_bytearray() -> None:
    issued = make_cert()
    assert describe(bytearray(issued.der)).fingerprint_sha256 == issued.fingerprint


def test_describe_refuses_oversize_der() -> None:
    # a structurally plausible certificate that is too big: an extension carrying 70 KiB
    assert MAX_CERTIFICATE_BYTES == 64 * 1024
    big = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.3"), der_tlv(0x04, b"\x00" * 70_000))
    der = make_cert(extensions=[big]).der
    assert len(der) > MAX_CERTIFICATE_BYTES and is_der_certificate(der)
    with pytest.raises(CertificateParseError, match="KiB"):
        describe(der)


def test_parse_error_message_is_short() -> None:
    with pytest.raises(CertificateParseError) as caught:
        describe(make_cert().der[:-10])
    assert len(str(caught.value)) < 100
    assert "\n" not in str(caught.value)


def _only_parse_errors(data: bytes) -> None:
    try:
        describe(data)
    except CertificateParseError:
        pass


def test_describe_fuzz_truncations_and_bit_flips() -> None:
    rng = random.Random(5280)
    samples = [make_cert("fuzz.test", ip_sans=("10.0.0.1",), email_sans=("a@fuzz.test",)).der, make_ca().der]
    samples.append(negative_serial_der(-5))
    for der in samples:
        for cut in range(0, len(der), 3):
            _only_parse_errors(der[:cut])
        for _ in range(300):
            mutated = bytearray(der)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
            _only_parse_errors(bytes(mutated))
        for _ in range(50):
            start = rng.randrange(len(der))
            _only_parse_errors(der[:start] + rng.randbytes(rng.randint(1, 8)) + der[start + 1 :])
    for _ in range(200):
        _only_parse_errors(b"\x30" + rng.randbytes(rng.randint(0, 200)))


def test_fuzzed_bits_usually_still_parse() -> None:
    """The fuzz test must not pass merely because everything is rejected early."""
    der = make_cert("fuzz.test").der
    rng = random.Random(1)
    parsed = 0
    for _ in range(200):
        mutated = bytearray(der)
        position = rng.randrange(len(mutated) - 80, len(mutated))  # signature area
        mutated[position] ^= 0x01
        try:
            describe(bytes(mutated))
            parsed += 1
        except CertificateParseError:
            pass
    assert parsed > 50


# --------------------------------------------------------------------------
# DER helpers
# --------------------------------------------------------------------------


def test_der_length() -> None:
    der = make_cert().der
    assert der_length(der) == len(der)
    assert der_length(der + b"trailing") == len(der)
    assert der_length(b"\x30\x03abc") == 5
    assert der_length(b"\x30\x81\x80" + b"\x00" * 128) == 131
    assert der_length(b"\x30\x82\x01\x00") == 260  # declared, even though truncated
    assert der_length(b"") is None
    assert der_length(b"\x30") is None
    assert der_length(b"\x30\x80") is None  # indefinite length is not DER
    assert der_length(b"\x30\x81\x05abcde") is None  # non-minimal length
    assert der_length(b"\x30\x82\x01") is None  # truncated length octets


def test_is_der_certificate() -> None:
    leaf = make_cert()
    assert is_der_certificate(leaf.der)
    assert is_der_certificate(leaf.der + b"\x00trailer")
    assert not is_der_certificate(leaf.der[:50])
    assert not is_der_certificate(pkcs7_bundle(leaf))
    assert not is_der_certificate(pkcs12_bundle(leaf))
    assert not is_der_certificate(leaf.pem_bytes)
    assert not is_der_certificate(b"")
    assert not is_der_certificate(b"\x30\x02\x30\x00")


def test_to_pem_round_trip() -> None:
    issued = make_cert()
    pem = to_pem(issued.der)
    assert pem.startswith("-----BEGIN CERTIFICATE-----\n")
    assert pem.endswith("-----END CERTIFICATE-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())
    assert pem == issued.pem  # same layout as OpenSSL / cryptography
    assert x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER) == issued.der


# --------------------------------------------------------------------------
# pem_blocks
# --------------------------------------------------------------------------


def test_pem_blocks_with_text_around_and_between() -> None:
    a, b = make_cert("a.test"), make_cert("b.test", key=make_key("rsa"))
    key_pem = make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    text = (
        b"subject=CN = a.test\nissuer=CN = a.test\n"
        + a.pem_bytes
        + b"\n  some notes between blocks -- with dashes\n\n"
        + key_pem
        + b"Bag Attributes: none\n"
        + b.pem_bytes
        + b"trailing text"
    )
    blocks = pem_blocks(text)
    assert [label for label, _ in blocks] == ["CERTIFICATE", "PRIVATE KEY", "CERTIFICATE"]
    assert blocks[0][1] == a.der and blocks[2][1] == b.der


def test_pem_blocks_crlf_and_whitespace() -> None:
    issued = make_cert()
    crlf = issued.pem.replace("\n", "\r\n").encode()
    indented = "\n".join("   " + line + "\t " for line in issued.pem.splitlines()).encode()
    assert pem_blocks(crlf) == [("CERTIFICATE", issued.der)]
    assert pem_blocks(indented) == [("CERTIFICATE", issued.der)]
    assert pem_blocks(issued.pem) == [("CERTIFICATE", issued.der)]  # str accepted too


def test_pem_blocks_trusted_certificate_cuts_trailer() -> None:
    issued = make_cert()
    text = trusted_certificate_pem(issued, alias="my root")
    (label, der), = pem_blocks(text.encode())
    assert label == "TRUSTED CERTIFICATE"
    assert der == issued.der


def test_pem_blocks_bad_base64_does_not_stop_others() -> None:
    a, b = make_cert("a.test"), make_cert("b.test")
    bad = "-----BEGIN CERTIFICATE-----\nnot*base64!!\n-----END CERTIFICATE-----\n"
    blocks = pem_blocks((a.pem + bad + b.pem).encode())
    assert blocks == [("CERTIFICATE", a.der), (INVALID_PEM_LABEL, b""), ("CERTIFICATE", b.der)]


def test_pem_blocks_unterminated_and_mismatched() -> None:
    a = make_cert("a.test")
    mismatched = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n"
    unterminated = "-----BEGIN CERTIFICATE-----\nAAAA\n"
    blocks = pem_blocks((mismatched + a.pem + unterminated).encode())
    assert blocks == [(INVALID_PEM_LABEL, b""), ("CERTIFICATE", a.der), (INVALID_PEM_LABEL, b"")]
    assert pem_blocks(b"no pem here") == []


# --------------------------------------------------------------------------
# decode_certificates
# --------------------------------------------------------------------------


def test_decode_pem_bundle_in_order() -> None:
    leaf, intermediate, root = make_chain()
    assert decode_certificates(pem_bundle(leaf, intermediate, root).encode()) == [leaf.der, intermediate.der, root.der]
    assert decode_certificates(pem_bundle(root, leaf)) == [root.der, leaf.der]


def test_decode_pem_with_key_and_junk() -> None:
    leaf = make_cert()
    key_pem = make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    bad = b"-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n"
    assert decode_certificates(key_pem + bad + leaf.pem_bytes) == [leaf.der]


def test_decode_pem_label_variants() -> None:
    leaf = make_cert()
    assert decode_certificates(pem_text("X509 CERTIFICATE", leaf.der).encode()) == [leaf.der]
    assert decode_certificates(trusted_certificate_pem(leaf).encode()) == [leaf.der]
    # some tools wrap a .p7b in CERTIFICATE armour
    assert decode_certificates(pem_text("CERTIFICATE", pkcs7_bundle(leaf)).encode()) == [leaf.der]


def test_decode_pem_without_certificates() -> None:
    key_pem = make_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(CertificateParseError, match="PRIVATE KEY"):
        decode_certificates(key_pem)


def test_decode_der_with_trailing_bytes() -> None:
    leaf = make_cert()
    assert decode_certificates(leaf.der + b"\x00\x00junk") == [leaf.der]
    assert decode_certificates(leaf.der) == [leaf.der]


def test_decode_der_negative_serial() -> None:
    der = negative_serial_der(-1)
    assert decode_certificates(der) == [der]
    assert describe(decode_certificates(to_pem(der).encode())[0]).serial_number == "ff"


def test_decode_pkcs7_der_and_pem() -> None:
    leaf, intermediate, root = make_chain()
    expected = {leaf.der, intermediate.der, root.der}
    from_der = decode_certificates(pkcs7_bundle(leaf, intermediate, root))
    from_pem = decode_certificates(pkcs7_bundle(leaf, intermediate, root, pem=True))
    assert len(from_der) == 3 and set(from_der) == expected
    assert from_pem == from_der  # order as stored in the (sorted) SET OF
    with_text = b"PKCS7 follows\n" + pkcs7_bundle(leaf, pem=True).replace(b"\n", b"\r\n")
    assert decode_certificates(with_text) == [leaf.der]


def test_decode_pkcs12_with_password() -> None:
    leaf, intermediate, root = make_chain()
    p12 = pkcs12_bundle(leaf, intermediate, root, password=b"s3cret")
    assert decode_certificates(p12, password=b"s3cret") == [leaf.der, intermediate.der, root.der]


def _indefinite_outer_length(der: bytes) -> bytes:
    """The same structure with BER's indefinite outer length (as Java/Windows tools write)."""
    header = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    return b"\x30\x80" + der[header:] + b"\x00\x00"


def test_decode_ber_containers_quietly() -> None:
    leaf, intermediate, _root = make_chain()
    ber_p12 = _indefinite_outer_length(pkcs12_bundle(leaf, intermediate, password=b"pw"))
    ber_p7 = _indefinite_outer_length(pkcs7_bundle(leaf))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cryptography's "falling back to BER" must not escape
        assert decode_certificates(ber_p12, password=b"pw") == [leaf.der, intermediate.der]
        assert decode_certificates(ber_p7) == [leaf.der]
        with pytest.raises(PasswordRequired):
            decode_certificates(ber_p12)


def test_decode_pkcs12_wrong_or_missing_password() -> None:
    leaf = make_cert()
    p12 = pkcs12_bundle(leaf, password=b"s3cret")
    with pytest.raises(PasswordRequired, match="wrong"):
        decode_certificates(p12, password=b"nope")
    with pytest.raises(PasswordRequired) as caught:
        decode_certificates(p12)
    assert isinstance(caught.value, CertificateParseError)


def test_decode_pkcs12_without_password() -> None:
    leaf = make_cert()
    p12 = pkcs12_bundle(leaf, password=None)
    assert decode_certificates(p12) == [leaf.der]
    assert decode_certificates(p12, password=b"ignored") == [leaf.der]  # falls back to no password


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   \n",
        b"garbage garbage",
        b"\x30\x03\x02\x01\x05",
        b"\x00\x01\x02",
        bytes(range(256)),
        b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    ],
)
def test_decode_garbage(data: bytes) -> None:
    with pytest.raises(CertificateParseError) as caught:
        decode_certificates(data)
    assert not isinstance(caught.value, PasswordRequired)


def test_decode_truncated_containers() -> None:
    leaf = make_cert()
    with pytest.raises(CertificateParseError):
        decode_certificates(pkcs7_bundle(leaf)[:-40])
    with pytest.raises(CertificateParseError):
        decode_certificates(leaf.der[:-40])


# --------------------------------------------------------------------------
# Speed (a generous bound: the benchmark floor is ~40 µs; this only catches
# an accidental order-of-magnitude regression such as verifying every leaf)
# --------------------------------------------------------------------------


def test_describe_is_fast_for_issued_leaf() -> None:
    import time

    der = make_cert(issuer=make_ca()).der
    describe(der)
    start = time.perf_counter()
    for _ in range(200):
        describe(der)
    per_call = (time.perf_counter() - start) / 200
    assert per_call < 0.002
