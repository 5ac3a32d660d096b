"""agent.scan: the file walk, on real trees built in each test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from agent import config, scan
from agent.findings import ScanError
from tests.agent.processes import run_cli
from tests.agent.keystores import PrivateKey, Trusted
from tests.agent.keystores import keystore as write_keystore
from tests.certs import make_chain, pem_bundle, pkcs12_bundle


@pytest.fixture(scope="module")
def chain():
    return make_chain("scan.test")


def found(result: scan.FileScan) -> list[tuple[str, int, str | None]]:
    return sorted((c.path, c.index, c.alias) for c in result.certificates)


def test_walks_a_tree_of_every_format(tmp_path: Path, chain):
    leaf, intermediate, root = chain
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "leaf.pem").write_text(leaf.pem)
    (tmp_path / "a" / "b" / "bundle.crt").write_text(pem_bundle(leaf, intermediate))
    (tmp_path / "a" / "b" / "root.der").write_bytes(root.der)
    (tmp_path / "store.p12").write_bytes(pkcs12_bundle(leaf, password=b"pw"))
    (tmp_path / "store.jks").write_bytes(
        write_keystore([Trusted("root", root.der), PrivateKey("web", [leaf, intermediate])], "pw")
    )
    (tmp_path / "notes.txt").write_text("nothing here\n")
    result = scan.scan_files([str(tmp_path)], passwords=["pw", "changeit", ""])
    t = str(tmp_path)
    assert found(result) == [
        (f"{t}/a/b/bundle.crt", 0, None),
        (f"{t}/a/b/bundle.crt", 1, None),
        (f"{t}/a/b/root.der", 0, None),
        (f"{t}/a/leaf.pem", 0, None),
        (f"{t}/store.jks", 0, "root"),
        (f"{t}/store.jks", 0, "web"),
        (f"{t}/store.jks", 1, "web"),
        (f"{t}/store.p12", 0, None),
    ]
    assert result.errors == []
    assert result.complete is True
    assert result.files_read == 6


def test_symlinked_file_is_reported_once_with_its_link_paths(tmp_path: Path, chain):
    leaf, _, _ = chain
    archive = tmp_path / "archive"
    live = tmp_path / "live"
    archive.mkdir()
    live.mkdir()
    (archive / "cert1.pem").write_text(leaf.pem)
    (live / "cert.pem").symlink_to("../archive/cert1.pem")
    (live / "fullchain.pem").symlink_to(archive / "cert1.pem")
    (tmp_path / "linked-dir").symlink_to(archive)  # a third way to the same file
    result = scan.scan_files([str(tmp_path)])
    assert len(result.certificates) == 1
    item = result.certificates[0]
    assert item.path == str(archive / "cert1.pem")
    links = [str(live / "cert.pem"), str(live / "fullchain.pem"), str(tmp_path / "linked-dir" / "cert1.pem")]
    assert item.link_paths == tuple(sorted(links))
    assert result.files_read == 1


def test_file_reached_only_through_a_link_has_its_real_path(tmp_path: Path, chain):
    leaf, _, _ = chain
    elsewhere = tmp_path / "elsewhere"
    scanned = tmp_path / "scanned"
    elsewhere.mkdir()
    scanned.mkdir()
    (elsewhere / "real.pem").write_text(leaf.pem)
    (scanned / "link.pem").symlink_to(elsewhere / "real.pem")
    item = scan.scan_files([str(scanned)]).certificates[0]
    assert (item.path, item.link_paths) == (str(elsewhere / "real.pem"), (str(scanned / "link.pem"),))


def test_symlink_loops_end(tmp_path: Path, chain):
    leaf, _, _ = chain
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "c.pem").write_text(leaf.pem)
    (tmp_path / "d" / "e" / "up").symlink_to(tmp_path / "d")  # directory loop
    (tmp_path / "d" / "self").symlink_to(".")
    (tmp_path / "x").symlink_to("y")  # file link loop
    (tmp_path / "y").symlink_to("x")
    result = scan.scan_files([str(tmp_path)])
    assert [c.path for c in result.certificates] == [str(tmp_path / "d" / "e" / "c.pem")]
    assert sorted(result.errors) == [
        ScanError(str(tmp_path / "x"), "symbolic link loop"),
        ScanError(str(tmp_path / "y"), "symbolic link loop"),
    ]
    assert result.complete is True


def test_follow_symlinks_false_ignores_links_met_while_walking(tmp_path: Path, chain):
    leaf, _, _ = chain
    (tmp_path / "real.pem").write_text(leaf.pem)
    (tmp_path / "link.pem").symlink_to(tmp_path / "real.pem")
    item = scan.scan_files([str(tmp_path)], follow_symlinks=False).certificates
    assert [(c.path, c.link_paths) for c in item] == [(str(tmp_path / "real.pem"), ())]


def test_broken_symlink_is_an_error(tmp_path: Path):
    (tmp_path / "gone.pem").symlink_to(tmp_path / "deleted.pem")
    result = scan.scan_files([str(tmp_path)])
    assert result.errors == [ScanError(str(tmp_path / "gone.pem"), "broken symbolic link")]
    assert result.complete is True


def test_bundle_that_gains_an_entry_at_the_top_shifts_the_indexes(tmp_path: Path, chain):
    leaf, intermediate, root = chain
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(pem_bundle(intermediate, root))
    before = {c.der: c.index for c in scan.scan_files([str(bundle)]).certificates}
    bundle.write_text(pem_bundle(leaf, intermediate, root))
    after = {c.der: c.index for c in scan.scan_files([str(bundle)]).certificates}
    assert before == {intermediate.der: 0, root.der: 1}
    assert after == {leaf.der: 0, intermediate.der: 1, root.der: 2}


def test_key_only_file_is_skipped_silently(tmp_path: Path, chain):
    leaf, _, _ = chain
    (tmp_path / "server.key").write_bytes(
        leaf.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    result = scan.scan_files([str(tmp_path)])
    assert (result.certificates, result.errors, result.complete, result.files_read) == ([], [], True, 1)


def test_missing_root_makes_the_scan_incomplete(tmp_path: Path, chain):
    leaf, _, _ = chain
    (tmp_path / "c.pem").write_text(leaf.pem)
    result = scan.scan_files([str(tmp_path), str(tmp_path / "nope")])
    assert result.complete is False
    assert result.errors == [ScanError(str(tmp_path / "nope"), "no such file or directory")]
    assert len(result.certificates) == 1


def test_missing_optional_root_is_skipped_silently(tmp_path: Path):
    result = scan.scan_files([], optional_paths=[str(tmp_path / "etc-pki-not-on-debian")])
    assert (result.errors, result.complete) == ([], True)


def test_file_over_max_file_size_is_an_error(tmp_path: Path, chain):
    leaf, _, _ = chain
    big = tmp_path / "big.pem"
    big.write_bytes(leaf.pem_bytes + b"#" * (2 * 1024 * 1024))  # 2 MiB, a certificate at the top
    exact = tmp_path / "exact.pem"
    exact.write_bytes(leaf.pem_bytes.ljust(4096, b"\n"))
    result = scan.scan_files([str(tmp_path)], max_file_size=4096)
    assert [c.path for c in result.certificates] == [str(exact)]
    assert result.errors == [ScanError(str(big), "larger than max_file_size (4096 bytes)")]
    assert result.complete is True
    default = scan.scan_files([str(big)])
    assert default.errors == [ScanError(str(big), "larger than max_file_size (1048576 bytes)")]


@pytest.mark.parametrize("limit", [4096, 65536, 1024 * 1024])
def test_read_file_limits(tmp_path: Path, limit: int):
    for size in sorted({0, 1, limit - 1, limit, limit + 1, 65535, 65536, 65537, 3 * limit}):
        path = tmp_path / f"{size}.bin"
        path.write_bytes(bytes([size % 251]) * size)
        if size <= limit:
            assert scan.read_file(str(path), limit) == path.read_bytes()
        else:
            with pytest.raises(scan.FileTooLarge):
                scan.read_file(str(path), limit)


def test_fifos_and_sockets_are_never_opened(tmp_path: Path, chain):
    leaf, _, _ = chain
    os.mkfifo(tmp_path / "pipe.pem")  # opening it for reading would block
    (tmp_path / "c.pem").write_text(leaf.pem)
    result = scan.scan_files([str(tmp_path)])
    assert [c.path for c in result.certificates] == [str(tmp_path / "c.pem")]
    assert result.errors == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the agent as nobody")
def test_unreadable_file_and_directory_as_an_unprivileged_user(public_tmp: Path, chain):
    """Root reads anything, so the real CLI runs as nobody here."""
    leaf, _, root = chain
    (public_tmp / "ok.pem").write_text(leaf.pem)
    secret = public_tmp / "secret.pem"
    secret.write_text(root.pem)
    secret.chmod(0o600)
    closed = public_tmp / "closed"
    closed.mkdir(mode=0o700)
    (closed / "hidden.pem").write_text(root.pem)
    (public_tmp / "ok.pem").chmod(0o644)

    only_file = run_cli("scan", "--json", str(public_tmp / "ok.pem"), str(secret), user="nobody")
    assert only_file.returncode == 0, only_file.stderr
    document = json.loads(only_file.stdout)
    assert [i["path"] for i in document["items"]] == [str(public_tmp / "ok.pem")]
    assert document["errors"] == [{"path": str(secret), "reason": "permission denied"}]
    assert document["complete"] is True  # a file failing is an error, not a gap in the walk

    whole = run_cli("scan", "--json", str(public_tmp), user="nobody")
    assert whole.returncode == 0, whole.stderr
    document = json.loads(whole.stdout)
    assert [i["path"] for i in document["items"]] == [str(public_tmp / "ok.pem")]
    assert sorted((e["path"], e["reason"]) for e in document["errors"]) == [
        (str(closed), "permission denied"),
        (str(secret), "permission denied"),
    ]
    assert document["complete"] is False  # a directory we could not list may hide certificates


def test_excludes_by_name_and_by_path(tmp_path: Path, chain):
    leaf, _, root = chain
    (tmp_path / "java").mkdir()
    (tmp_path / "java" / "cacerts").write_bytes(write_keystore([Trusted("r", root.der)], "changeit"))
    (tmp_path / "java" / "app.jks").write_bytes(write_keystore([PrivateKey("app", [leaf])], "changeit"))
    (tmp_path / "skipme").mkdir()
    (tmp_path / "skipme" / "c.pem").write_text(leaf.pem)
    (tmp_path / "keep.pem").write_text(leaf.pem)
    excludes = scan.Excludes(["cacerts", f"{tmp_path}/skip*"])
    result = scan.scan_files([str(tmp_path)], excludes=excludes)
    assert sorted({c.path for c in result.certificates}) == [str(tmp_path / "java" / "app.jks"), str(tmp_path / "keep.pem")]
    named = scan.scan_files([str(tmp_path / "java" / "cacerts")], excludes=excludes)
    assert len(named.certificates) == 1  # a file named as a root is always read


def test_exclude_applies_to_the_real_path_of_a_link(tmp_path: Path, chain):
    leaf, _, _ = chain
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "bundle.pem").write_text(leaf.pem)
    (tmp_path / "scan").mkdir()
    (tmp_path / "scan" / "cert.pem").symlink_to(tmp_path / "store" / "bundle.pem")
    excludes = scan.Excludes([f"{tmp_path}/store/*"])
    assert scan.scan_files([str(tmp_path / "scan")], excludes=excludes).certificates == []


def test_exclude_patterns():
    excludes = scan.Excludes(["cacerts", "*.bak", "/srv/*/old/*", "ca-[0-9].pem"])
    assert excludes.match("/etc/ssl/certs/java/cacerts")
    assert excludes.match("/x/y.pem.bak")
    assert excludes.match("/srv/app/old/a.pem") and excludes.match("/srv/app/old/deeper/a.pem")
    assert excludes.match("/etc/ca-1.pem") and not excludes.match("/etc/ca-x.pem")
    assert not excludes.match("/etc/cacerts.d/mine.pem")  # a name pattern is the last component only
    assert not excludes.match("/etc/x.bak/cert.pem")
    assert not excludes.match("/etc/cacerts-not")
    assert not scan.Excludes([]).match("/anything")


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/etc/ssl/certs/ca-certificates.crt", True),
        ("/etc/ssl/certs/002c0b4f.0", True),
        ("/usr/share/ca-certificates/mozilla/GlobalSign_Root_CA.crt", True),
        ("/etc/ssl/certs/java/cacerts", True),
        ("/usr/lib/jvm/java-17/lib/security/cacerts", True),
        ("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", True),
        ("/etc/pki/tls/certs/ca-bundle.crt", True),
        ("/etc/pki/tls/certs/ca-bundle.trust.crt", True),
        ("/var/lib/ca-certificates/pem/ISRG_Root_X1.pem", True),
        ("/etc/ssl/ca-bundle.pem", True),
        # what operators put there themselves is found
        ("/etc/ssl/certs/ssl-cert-snakeoil.pem", False),
        ("/etc/ssl/certs/my-company-ca.pem", False),
        ("/usr/local/share/ca-certificates/my-company-ca.crt", False),
        ("/etc/pki/ca-trust/source/anchors/my-company-ca.pem", False),
        ("/etc/pki/tls/certs/localhost.crt", False),
        ("/etc/letsencrypt/live/shop.example/fullchain.pem", False),
    ],
)
def test_default_excludes_are_the_distribution_trust_stores(path, excluded):
    assert scan.Excludes(config.DEFAULT_EXCLUDES).match(path) is excluded


@pytest.mark.skipif(
    not os.path.exists("/etc/ssl/certs/ca-certificates.crt"), reason="host has no Debian-style trust store"
)
def test_default_excludes_leave_out_this_hosts_trust_store():
    excluded = scan.Excludes(config.DEFAULT_EXCLUDES)
    everything = scan.scan_files(["/etc/ssl"])
    kept = scan.scan_files(["/etc/ssl"], excludes=excluded)
    assert len(everything.certificates) > 50  # the distribution's roots really are there
    assert len(kept.certificates) < len(everything.certificates) / 10
    for item in kept.certificates:
        assert not excluded.match(item.path)
        assert not any(excluded.match(link) for link in item.link_paths)
