"""agent.keystore: JKS and JCEKS certificates, with and without the password."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from agent import keystore
from tests.agent.keystores import PrivateKey, SecretKey, Trusted
from tests.agent.keystores import keystore as write_keystore
from tests.certs import make_ca, make_chain, make_cert


@pytest.fixture(scope="module")
def chain():
    return make_chain("app.test")


@pytest.mark.parametrize("kind", ["JKS", "JCEKS"])
def test_reads_trusted_and_private_key_chains_in_file_order(kind, chain):
    leaf, intermediate, root = chain
    data = write_keystore(
        [Trusted("root", root.der), PrivateKey("server", [leaf, intermediate]), Trusted("other", intermediate.der)],
        "s3cret",
        kind=kind,
    )
    store = keystore.read(data, ["wrong", "s3cret"])
    assert store.kind == kind
    assert [(c.alias, c.der) for c in store.certificates] == [
        ("root", root.der),
        ("server", leaf.der),
        ("server", intermediate.der),
        ("other", intermediate.der),
    ]
    assert store.verified is True
    assert store.problem is None


@pytest.mark.parametrize("kind", ["JKS", "JCEKS"])
def test_wrong_or_no_password_still_reads_certificates_unverified(kind, chain):
    leaf, _, root = chain
    data = write_keystore([PrivateKey("server", [leaf]), Trusted("root", root.der)], "s3cret", kind=kind)
    for passwords in (["wrong"], []):
        store = keystore.read(data, passwords)
        assert [c.der for c in store.certificates] == [leaf.der, root.der]
        assert store.verified is False
        assert store.problem is None


def test_tampered_body_fails_the_integrity_check(chain):
    leaf, _, root = chain
    data = bytearray(write_keystore([Trusted("root", root.der)], "s3cret"))
    data[25] ^= 0x01  # inside the entry's date: certificates untouched
    assert keystore.read(bytes(data), ["s3cret"]).verified is False


def test_integrity_digest_is_sha1_over_utf16_password_whitener_and_body(chain):
    _, _, root = chain
    data = write_keystore([Trusted("root", root.der)], "pässwörd")
    assert keystore.integrity_digest("pässwörd", data[:-20]) == data[-20:]


def test_version_1_keystores_have_no_certificate_types(chain):
    leaf, intermediate, root = chain
    data = write_keystore([PrivateKey("old", [leaf, intermediate]), Trusted("root", root.der)], "pw", version=1)
    store = keystore.read(data, ["pw"])
    found = [(c.alias, c.der) for c in store.certificates]
    assert found == [("old", leaf.der), ("old", intermediate.der), ("root", root.der)]
    assert store.verified


def test_jceks_secret_key_entries_are_skipped(chain):
    leaf, _, root = chain
    data = write_keystore(
        [SecretKey("aes"), Trusted("root", root.der), SecretKey("hmac", b"\x00" * 200), PrivateKey("srv", [leaf])],
        "pw",
        kind="JCEKS",
    )
    store = keystore.read(data, ["pw"])
    assert [(c.alias, c.der) for c in store.certificates] == [("root", root.der), ("srv", leaf.der)]
    assert store.verified is True


def test_aliases_in_java_modified_utf8():
    root = make_ca("Alias Root")
    alias = "ünï\x00\U0001f512"  # NUL and a non-BMP character have special encodings
    store = keystore.read(write_keystore([Trusted(alias, root.der)], "pw"), ["pw"])
    assert store.certificates[0].alias == alias


def test_truncated_keystore_keeps_the_certificates_before_the_damage(chain):
    leaf, _, root = chain
    data = write_keystore([Trusted("root", root.der), Trusted("leaf", leaf.der)], "pw")
    cut = data[: len(data) - 20 - len(leaf.der) // 2]
    store = keystore.read(cut, ["pw"])
    assert [c.alias for c in store.certificates] == ["root"]
    assert store.problem and "damaged in entry 2 of 2" in store.problem
    missing_digest = keystore.read(data[:-20], ["pw"])
    assert len(missing_digest.certificates) == 2
    assert missing_digest.problem == "keystore truncated: integrity digest missing"


def test_damaged_keystores_never_raise(chain):
    leaf, intermediate, root = chain
    data = write_keystore(
        [SecretKey("aes"), PrivateKey("srv", [leaf, intermediate]), Trusted("root", root.der)], "pw", kind="JCEKS"
    )
    rng = random.Random(7)
    for _ in range(2000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            damaged[rng.randrange(12, len(damaged))] = rng.randrange(256)
        cut = bytes(damaged[: rng.randrange(12, len(damaged) + 1)])
        store = keystore.read(cut, ["pw"])  # must not raise
        assert all(isinstance(c.der, bytes) for c in store.certificates)


def test_not_a_keystore():
    with pytest.raises(keystore.KeystoreFormatError):
        keystore.read(b"\xfe\xed\xfe\xed\x00\x00\x00\x07\x00\x00\x00\x00")
    with pytest.raises(keystore.KeystoreFormatError):
        keystore.read(b"-----BEGIN CERTIFICATE-----")
    assert not keystore.is_keystore(b"\x30\x82")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs a JDK's keytool")
@pytest.mark.parametrize("kind", ["JKS", "JCEKS"])
def test_reads_keystores_written_by_keytool(kind, tmp_path: Path):
    path = tmp_path / "store"
    common = ["-keystore", str(path), "-storetype", kind, "-storepass", "changeit"]

    def keytool(*args: str) -> None:
        subprocess.run(["keytool", *args, *common], check=True, capture_output=True, timeout=120)

    keytool("-genkeypair", "-alias", "web", "-keyalg", "EC", "-dname", "CN=web.test", "-keypass", "changeit")
    if kind == "JCEKS":
        keytool("-genseckey", "-alias", "aes", "-keyalg", "AES", "-keysize", "128", "-keypass", "changeit")
    extra = make_cert("imported.test")
    (tmp_path / "extra.pem").write_text(extra.pem)
    keytool("-importcert", "-noprompt", "-alias", "extra", "-file", str(tmp_path / "extra.pem"))

    store = keystore.read(path.read_bytes(), ["nope", "changeit"])
    assert store.verified and store.problem is None
    by_alias = {c.alias: c.der for c in store.certificates}
    assert set(by_alias) == {"web", "extra"}
    assert by_alias["extra"] == extra.der


@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs a JDK's keytool")
def test_fixture_writer_output_is_accepted_by_keytool(chain, tmp_path: Path):
    """Keeps tests/agent/keystores.py honest: keytool loads, verifies and lists its stores."""
    leaf, _, root = chain
    path = tmp_path / "store.jceks"
    entries = [SecretKey("aes"), PrivateKey("srv", [leaf]), Trusted("root", root.der)]
    path.write_bytes(write_keystore(entries, "pw", kind="JCEKS"))
    listing = subprocess.run(
        ["keytool", "-list", "-keystore", str(path), "-storetype", "JCEKS", "-storepass", "pw"],
        capture_output=True, text=True, timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    assert "3 entries" in listing.stdout
    assert "SecretKeyEntry" in listing.stdout and "PrivateKeyEntry" in listing.stdout
