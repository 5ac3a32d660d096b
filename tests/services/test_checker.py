"""Inspections: chains served by real TLS servers on loopback, judged at the clock's
time against the test CA (CTOPS_CA_BUNDLE); uploaded data in every format."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography.hazmat.primitives import hashes

from backend import clock
from backend.chain import InspectionWarningCode as W
from backend.errors import BadUserInput, CheckErrorCode, CheckFailed
from backend.services import checker
from tests.certs import (
    _sign,
    der_content,
    der_oid,
    der_sequence,
    der_split,
    der_tlv,
    make_ca,
    make_cert,
    make_key,
    pem_text,
    pkcs7_bundle,
    pkcs12_bundle,
)
from tests.support.checker import checker_settings, make_pki
from tests.support.tls_servers import TLSServer

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def settings(pki):
    return checker_settings(pki)


def codes(inspection: checker.Inspection) -> list[W]:
    return [w.code for w in inspection.warnings]


async def inspect_served(chain, settings, server_name="shop.test"):
    with TLSServer(chain) as server:
        return await checker.inspect_url(f"https://127.0.0.1:{server.port}", server_name, settings=settings)


async def test_a_valid_chain_from_the_trusted_test_ca(pki, settings):
    chain = pki.chain("shop.test")
    result = await inspect_served(chain, settings)
    assert result.verdict.trusted is True
    assert result.verdict.complete is True
    assert result.verdict.hostname_matches is True
    assert codes(result) == []
    assert [d.fingerprint_sha256 for d in result.chain] == [c.fingerprint for c in chain]
    assert result.leaf.common_name == "shop.test"
    assert result.tls_version == "TLSv1.3" and result.cipher.startswith("TLS_")
    assert result.fetched_at is not None and abs((result.fetched_at - clock.now()).total_seconds()) < 5


async def test_the_same_chain_is_untrusted_without_the_ca_bundle(pki):
    result = await inspect_served(pki.chain("shop.test"), checker_settings(None))  # the system store
    assert result.verdict.trusted is False
    assert result.verdict.complete is False  # the test root is nobody's anchor, and not served
    assert W.INCOMPLETE_CHAIN in codes(result)


async def test_an_expired_certificate(pki, settings):
    past = dt.datetime.now(UTC) - dt.timedelta(days=400)
    result = await inspect_served([pki.leaf("shop.test", not_before=past, days=30), pki.intermediate], settings)
    assert codes(result) == [W.EXPIRED]
    assert result.verdict.trusted is False  # verified at the clock's time
    assert result.verdict.complete is True


async def test_not_yet_valid_and_expiring_soon(pki, settings):
    future = dt.datetime.now(UTC) + dt.timedelta(days=3)
    result = await inspect_served([pki.leaf("shop.test", not_before=future, days=90), pki.intermediate], settings)
    assert codes(result) == [W.NOT_YET_VALID]
    soon = await inspect_served([pki.leaf("shop.test", days=10), pki.intermediate], settings)
    assert codes(soon) == [W.EXPIRES_SOON]
    assert soon.verdict.trusted is True
    assert "expires in 8 days" in soon.warnings[0].message


async def test_a_hostname_mismatch(pki, settings):
    result = await inspect_served(pki.chain("other.test"), settings, server_name="shop.test")
    assert result.verdict.hostname_matches is False
    assert result.verdict.trusted is True  # the chain itself is fine
    assert codes(result) == [W.HOSTNAME_MISMATCH]
    assert "other.test" in result.warnings[0].message


async def test_a_wildcard_matches_one_label(pki, settings):
    chain = [pki.leaf("*.shop.test", sans=("*.shop.test",)), pki.intermediate]
    assert (await inspect_served(chain, settings, server_name="www.shop.test")).verdict.hostname_matches is True
    deeper = await inspect_served(chain, settings, server_name="a.b.shop.test")
    assert deeper.verdict.hostname_matches is False


async def test_a_missing_intermediate(pki, settings):
    result = await inspect_served([pki.leaf("shop.test")], settings)
    assert result.verdict.complete is False
    assert result.verdict.trusted is False
    assert codes(result) == [W.INCOMPLETE_CHAIN]
    assert "Checker Test Intermediate CA" in result.warnings[0].message


async def test_a_self_signed_certificate(settings):
    result = await inspect_served([make_cert("shop.test", sans=("shop.test",))], settings)
    assert result.verdict.trusted is False
    assert result.verdict.complete is True
    assert codes(result) == [W.SELF_SIGNED]


async def test_an_untrusted_root(settings, tmp_path):
    other = make_pki(tmp_path, "Elsewhere")
    result = await inspect_served([other.leaf("shop.test"), other.intermediate, other.root], settings)
    assert result.verdict.trusted is False
    assert result.verdict.complete is True
    assert codes(result) == [W.UNTRUSTED_ROOT]


async def test_a_chain_out_of_order(pki, settings):
    result = await inspect_served([pki.leaf("shop.test"), pki.root, pki.intermediate], settings)
    assert W.CHAIN_OUT_OF_ORDER in codes(result)
    assert result.verdict.trusted is True  # clients that build paths still get there


async def test_the_hostname_checked_is_the_url_host_without_server_name(pki, settings):
    with TLSServer([pki.leaf("127.0.0.1", sans=(), ip_sans=("127.0.0.1",)), pki.intermediate]) as server:
        result = await checker.inspect_url(f"https://127.0.0.1:{server.port}", settings=settings)
    assert result.verdict.hostname_matches is True
    assert result.verdict.trusted is True


# --- uploads ----------------------------------------------------------------------------


def test_pem_bundle_der_pkcs7_and_pkcs12(pki, settings):
    leaf = pki.leaf("upload.test")
    pem = checker.inspect_data(pki.intermediate.pem + leaf.pem, settings=settings)  # the leaf need not come first
    assert pem.leaf.fingerprint_sha256 == leaf.fingerprint
    assert [d.fingerprint_sha256 for d in pem.chain] == [leaf.fingerprint, pki.intermediate.fingerprint]
    assert pem.verdict.trusted is True and pem.verdict.hostname_matches is None
    assert pem.tls_version is None and pem.fetched_at is None

    der = checker.inspect_data(base64.b64encode(leaf.der).decode(), settings=settings)
    assert der.leaf.fingerprint_sha256 == leaf.fingerprint
    assert codes(der) == [W.INCOMPLETE_CHAIN]

    for p7 in (base64.b64encode(pkcs7_bundle(leaf, pki.intermediate)).decode(), pkcs7_bundle(leaf, pki.intermediate, pem=True).decode()):
        assert checker.inspect_data(p7, settings=settings).leaf.fingerprint_sha256 == leaf.fingerprint

    p12 = base64.b64encode(pkcs12_bundle(leaf, pki.intermediate, password=b"s3cret")).decode()
    assert checker.inspect_data(p12, "s3cret", settings=settings).verdict.trusted is True
    for wrong in (None, "wrong"):
        with pytest.raises(CheckFailed) as caught:
            checker.inspect_data(p12, wrong, settings=settings)
        assert caught.value.check_code is CheckErrorCode.BAD_PASSWORD


def test_two_leaves_are_bad_user_input(pki, settings):
    with pytest.raises(BadUserInput, match="2 leaf"):
        checker.inspect_data(pki.leaf("a.test").pem + pki.leaf("b.test").pem, settings=settings)


def test_only_ca_certificates_take_the_lowest_one_as_leaf(pki, settings):
    result = checker.inspect_data(pki.root.pem + pki.intermediate.pem, settings=settings)
    assert result.leaf.fingerprint_sha256 == pki.intermediate.fingerprint


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("", CheckErrorCode.INVALID_CERTIFICATE),
        ("not base64 at all!", CheckErrorCode.INVALID_CERTIFICATE),
        (base64.b64encode(b"hello world").decode(), CheckErrorCode.INVALID_CERTIFICATE),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", CheckErrorCode.INVALID_CERTIFICATE),
        (base64.b64encode(b"\x00" * (1024 * 1024 + 1)).decode(), CheckErrorCode.TOO_LARGE),
    ],
)
def test_bad_input(data, code, settings):
    with pytest.raises(CheckFailed) as caught:
        checker.inspect_data(data, settings=settings)
    assert caught.value.check_code is code


def test_more_than_ten_certificates_is_too_large(pki, settings):
    many = "".join(make_ca(f"Bundle CA {i}").pem for i in range(11))
    with pytest.raises(CheckFailed) as caught:
        checker.inspect_data(many, settings=settings)
    assert caught.value.check_code is CheckErrorCode.TOO_LARGE


def test_a_certificate_over_64_kib_is_too_large(settings):
    with pytest.raises(CheckFailed) as caught:
        checker.inspect_data(pem_text("CERTIFICATE", b"\x30\x83\x01\x00\x10" + b"\x00" * (65 * 1024)), settings=settings)
    assert caught.value.check_code in (CheckErrorCode.TOO_LARGE, CheckErrorCode.INVALID_CERTIFICATE)


def _sha1_signed(issuer, leaf) -> bytes:
    """``leaf`` re-signed by ``issuer``'s RSA key with SHA-1 (cryptography no longer builds those)."""
    tbs, _, _ = der_split(der_content(leaf.der))
    fields = der_split(der_content(tbs))
    index = 1 if fields[0][0] == 0xA0 else 0
    algorithm = der_sequence(der_oid("1.2.840.113549.1.1.5"), b"\x05\x00")
    fields[index + 1] = algorithm
    new_tbs = der_sequence(*fields)
    return der_sequence(new_tbs, algorithm, der_tlv(0x03, b"\x00" + _sign(issuer.key, new_tbs, hashes.SHA1())))


def test_weak_keys_and_weak_signatures(settings):
    weak = make_cert("weak.test", sans=("weak.test",), key=make_key("rsa", 1024))
    result = checker.inspect_data(weak.pem, settings=settings)
    assert W.WEAK_KEY in codes(result)
    assert "1024-bit RSA" in next(w.message for w in result.warnings if w.code is W.WEAK_KEY)

    ca = make_ca("SHA1 Test CA", key_kind="rsa")
    leaf = make_cert("sha1.test", issuer=ca)
    sha1 = base64.b64encode(_sha1_signed(ca, leaf)).decode()
    result = checker.inspect_data(sha1, settings=settings)
    assert W.WEAK_SIGNATURE in codes(result)
    assert "sha1WithRSAEncryption" in next(w.message for w in result.warnings if w.code is W.WEAK_SIGNATURE)


def test_malformed_settings_refuse_to_start(tmp_path):
    checker.validate_settings(checker_settings(None))
    with pytest.raises(SystemExit, match="neither a CIDR nor a host name"):
        checker.validate_settings(checker_settings(None, outbound_deny=("10.0.0.0/8", "not a rule!")))
    with pytest.raises(SystemExit, match="N/s, N/min or N/h"):
        checker.validate_settings(checker_settings(None, inspect_rate="lots"))
    with pytest.raises(SystemExit, match="CTOPS_CA_BUNDLE"):
        checker.validate_settings(checker_settings(None, ca_bundle=str(tmp_path / "missing.pem")))
