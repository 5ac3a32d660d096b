"""agent.formats: what a file holds, by content."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization

from agent import formats
from tests.agent.keystores import PrivateKey, Trusted
from tests.agent.keystores import keystore as write_keystore
from tests.certs import make_chain, make_cert, pem_text, pkcs7_bundle, pkcs12_bundle, trusted_certificate_pem


@pytest.fixture(scope="module")
def chain():
    return make_chain("formats.test")


def ders(decoded: formats.Decoded) -> list[bytes]:
    return [c.der for c in decoded.certificates]


def key_pem(issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_single_pem(chain):
    leaf, _, _ = chain
    decoded = formats.decode(leaf.pem_bytes)
    assert ders(decoded) == [leaf.der]
    assert decoded.errors == ()


def test_indexes_count_certificates_in_file_order(chain):
    leaf, intermediate, root = chain
    text = leaf.pem + "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n" + intermediate.pem + root.pem
    decoded = formats.decode(text.encode())
    assert [(c.index, c.der, c.alias) for c in decoded.certificates] == [
        (0, leaf.der, None),
        (1, intermediate.der, None),  # the broken block is an error, not a certificate
        (2, root.der, None),
    ]


def test_pem_bundle_with_text_around_and_between_blocks_and_crlf(chain):
    leaf, intermediate, root = chain
    text = (
        "subject=CN = formats.test\nissuer=CN = Test Intermediate CA\n"
        + leaf.pem
        + "\n# the intermediate\n"
        + intermediate.pem
        + "Bag Attributes: nothing\n"
        + root.pem
        + "trailing words\n"
    ).replace("\n", "\r\n")
    decoded = formats.decode(text.encode())
    assert ders(decoded) == [leaf.der, intermediate.der, root.der]
    assert decoded.errors == ()


def test_trusted_certificate_pem_gives_the_certificate_without_trailer(chain):
    _, _, root = chain
    decoded = formats.decode(trusted_certificate_pem(root).encode())
    assert ders(decoded) == [root.der]


def test_der_certificate(chain):
    leaf, _, _ = chain
    assert ders(formats.decode(leaf.der)) == [leaf.der]


@pytest.mark.parametrize("pem", [False, True])
def test_pkcs7_bundles(chain, pem):
    leaf, intermediate, root = chain
    decoded = formats.decode(pkcs7_bundle(leaf, intermediate, root, pem=pem))
    assert sorted(ders(decoded)) == sorted([leaf.der, intermediate.der, root.der])  # SET OF: sorted by DER
    assert decoded.errors == ()


def test_pkcs12_opened_with_a_password_from_the_list(chain):
    leaf, intermediate, _ = chain
    data = pkcs12_bundle(leaf, intermediate, password=b"hunter2")
    decoded = formats.decode(data, formats.passwords_to_try(["first", "hunter2", "third"]))
    assert ders(decoded) == [leaf.der, intermediate.der]
    assert decoded.errors == ()


def test_pkcs12_with_changeit_or_no_password_needs_no_configuration(chain):
    leaf, _, _ = chain
    for password in (b"changeit", None):
        decoded = formats.decode(pkcs12_bundle(leaf, password=password), formats.passwords_to_try([]))
        assert ders(decoded) == [leaf.der]


def test_pkcs12_with_no_matching_password_is_an_error(chain):
    leaf, _, _ = chain
    decoded = formats.decode(pkcs12_bundle(leaf, password=b"right"), formats.passwords_to_try(["wrong"]))
    assert decoded.certificates == ()
    assert decoded.errors == ("PKCS#12: none of the configured passwords opens this file",)
    assert "wrong" not in decoded.errors[0]


@pytest.mark.parametrize("kind", ["JKS", "JCEKS"])
def test_keystores_give_aliases(chain, kind):
    leaf, intermediate, root = chain
    data = write_keystore(
        [Trusted("ca", intermediate.der), PrivateKey("web", [leaf, intermediate, root]), Trusted("root", root.der)],
        "x",
        kind=kind,
    )
    decoded = formats.decode(data, formats.passwords_to_try([]))  # password unknown: still read
    assert [(c.alias, c.index, c.der) for c in decoded.certificates] == [
        ("ca", 0, intermediate.der),
        ("web", 0, leaf.der),  # a private key's chain: indexes count within the entry
        ("web", 1, intermediate.der),
        ("web", 2, root.der),
        ("root", 0, root.der),
    ]
    assert decoded.errors == ()


def test_keystore_entry_that_is_not_a_certificate_is_an_error(chain):
    _, _, root = chain
    data = write_keystore([Trusted("junk", b"\x30\x03\x02\x01\x00"), Trusted("root", root.der)], "changeit")
    decoded = formats.decode(data)
    assert ders(decoded) == [root.der]
    assert len(decoded.errors) == 1 and decoded.errors[0].startswith("JKS entry 'junk':")


def test_private_key_only_files_are_skipped_silently(chain):
    leaf, _, _ = chain
    pem = key_pem(leaf)
    der = leaf.key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    rsa_key = make_cert("rsa.test", key_kind="rsa").key
    traditional = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    for data in (pem, der, traditional):
        assert formats.decode(data) == formats.Decoded()


def test_key_and_certificate_in_one_pem_gives_only_the_certificate(chain):
    leaf, _, _ = chain
    decoded = formats.decode(key_pem(leaf) + leaf.pem_bytes)
    assert ders(decoded) == [leaf.der]
    assert decoded.errors == ()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello world\n",
        b"#!/bin/sh\necho hi\n",
        b"\x00" + random.Random(1).randbytes(4096),
        b"\x30\x03\x02\x01\x05",  # some DER that is no certificate
        b"\x7fELF\x02\x01\x01" + bytes(100),
        pem_text("CERTIFICATE REQUEST", b"\x30\x00").encode() + pem_text("X509 CRL", b"\x30\x00").encode(),
    ],
)
def test_non_certificate_content_is_skipped_silently(data):
    assert formats.decode(data) == formats.Decoded()


def test_broken_pem_blocks_are_errors_and_the_other_blocks_still_count(chain):
    leaf, intermediate, root = chain
    garbage = pem_text("CERTIFICATE", b"\x30\x82\x01\x00" + b"\x00" * 20)  # base64 fine, not a certificate
    bad_base64 = "-----BEGIN CERTIFICATE-----\n@@@not base64@@@\n-----END CERTIFICATE-----\n"
    text = leaf.pem + garbage + intermediate.pem + bad_base64 + root.pem
    decoded = formats.decode(text.encode())
    assert ders(decoded) == [leaf.der, intermediate.der, root.der]
    assert len(decoded.errors) == 2
    assert decoded.errors[0].startswith("PEM block 2 (CERTIFICATE): ")
    assert decoded.errors[1].startswith("PEM block 4: not valid PEM")


def test_certificate_shaped_der_that_does_not_parse_is_an_error(chain):
    leaf, _, _ = chain
    broken = bytearray(leaf.der)
    # corrupt the validity's UTCTime digits: still certificate-shaped, cannot be parsed
    position = broken.find(b"\x17\x0d")
    broken[position + 2 : position + 4] = b"ZZ"
    decoded = formats.decode(bytes(broken))
    assert decoded.certificates == ()
    assert len(decoded.errors) == 1 and decoded.errors[0].startswith("DER certificate: ")


def test_passwords_to_try_keeps_order_and_adds_the_defaults_once():
    assert formats.passwords_to_try(["a", "changeit", "b"]) == ["a", "changeit", "b", ""]
    assert formats.passwords_to_try([]) == ["changeit", ""]


def test_may_hold_certificates_is_a_cheap_content_test(chain):
    leaf, _, _ = chain
    assert formats.may_hold_certificates(leaf.der)
    assert formats.may_hold_certificates(b"text\n" + leaf.pem_bytes)
    assert formats.may_hold_certificates(b"\xfe\xed\xfe\xed\x00")
    assert not formats.may_hold_certificates(b"just text")
    assert not formats.may_hold_certificates(b"")
