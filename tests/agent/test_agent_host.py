"""agent.host: one scan of this host, files then ports."""

from __future__ import annotations

from pathlib import Path

from agent import host
from agent.config import Config
from tests.certs import make_chain, make_cert


def settings(**values) -> Config:
    return Config(**{"hostname": "host.test", "default_paths": False, **values})


def test_scan_host_uses_configured_paths_plus_defaults_unless_paths_are_given(tmp_path: Path):
    (tmp_path / "c.pem").write_text(make_cert("runner.test").pem)
    configured = host.scan_host(settings(paths=[str(tmp_path)], default_paths=True))
    mine = [i["path"] for i in configured.document["items"] if i["path"].startswith(str(tmp_path))]
    assert mine == [str(tmp_path / "c.pem")]
    explicit = host.scan_host(settings(paths=["/nonexistent-configured"]), paths=[str(tmp_path)])
    assert [i["path"] for i in explicit.document["items"]] == [str(tmp_path / "c.pem")]
    assert explicit.document["complete"] is True  # the configured path was replaced, not scanned


def test_ports_join_the_same_document(tmp_path: Path, tls_server):
    leaf, intermediate, _ = make_chain("host-port.test")
    scanned = tmp_path / "scanned"  # the TLS server keeps its own files in tmp_path
    scanned.mkdir()
    (scanned / "c.pem").write_text(leaf.pem)
    server = tls_server([leaf, intermediate])
    result = host.scan_host(settings(ports=[server.port]), paths=[str(scanned)])
    document = result.document
    assert [(i["kind"], i["index"]) for i in document["items"]] == [("FILE", 0), ("PORT", 0), ("PORT", 1)]
    assert document["items"][1]["serverName"] == "host.test"
    assert document["complete"] is True and result.files_read == 1


def test_a_listed_port_that_cannot_be_read_makes_the_scan_incomplete(tmp_path: Path, plain_server):
    plain = plain_server()
    result = host.scan_host(settings(), paths=[str(tmp_path)], ports=[plain.port])
    assert result.document["complete"] is False
    assert [e["path"] for e in result.document["errors"]] == [f"127.0.0.1:{plain.port}"]
