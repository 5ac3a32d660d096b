"""agent.report: the ReportCertificatesInput document and its parts."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid

import pytest

from agent import __version__, report
from agent.findings import FileCertificate, PortCertificate, ScanError
from tests.certs import make_chain

UTC = dt.timezone.utc
SERVER_ITEM_FIELDS = {"kind", "path", "linkPaths", "index", "alias", "address", "port", "serverName", "der"}


@pytest.fixture(scope="module")
def chain():
    return make_chain("report.test")


def document(chain, **overrides):
    leaf, intermediate, root = chain
    arguments = dict(
        files=[
            FileCertificate("/etc/ssl/z.pem", 0, root.der),
            FileCertificate("/etc/ssl/a.pem", 1, intermediate.der, ("/etc/ssl/link.pem",)),
            FileCertificate("/etc/ssl/a.pem", 0, leaf.der, ("/etc/ssl/link.pem",)),
            FileCertificate("/opt/app/keystore.jks", 1, intermediate.der, alias="web"),
            FileCertificate("/opt/app/keystore.jks", 0, root.der, alias="root"),
            FileCertificate("/opt/app/keystore.jks", 0, leaf.der, alias="web"),
        ],
        ports=[PortCertificate("::1", 443, "web.test", 0, leaf.der)],
        errors=[ScanError("/etc/ssl/bad.pem", "PEM block 1: not valid PEM")],
        complete=True,
        hostname="web.test",
        scanned_at=dt.datetime(2025, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        interval_seconds=3600,
    )
    arguments.update(overrides)
    return report.build(**arguments)


def test_build_gives_the_schema_names_and_values(chain):
    leaf, intermediate, root = chain
    doc = document(chain)
    assert uuid.UUID(doc["scanId"]).version == 4
    assert doc["scannedAt"] == "2025-03-01T12:30:05+00:00"
    assert (doc["complete"], doc["part"], doc["lastPart"]) == (True, 0, True)
    assert (doc["hostname"], doc["agentVersion"], doc["intervalSeconds"]) == ("web.test", __version__, 3600)
    assert isinstance(doc["os"], str) and doc["os"]
    assert doc["errors"] == [{"path": "/etc/ssl/bad.pem", "reason": "PEM block 1: not valid PEM"}]
    items = doc["items"]
    assert [(i["kind"], i.get("path"), i.get("alias"), i["index"]) for i in items] == [
        ("FILE", "/etc/ssl/a.pem", None, 0),
        ("FILE", "/etc/ssl/a.pem", None, 1),
        ("FILE", "/etc/ssl/z.pem", None, 0),
        ("FILE", "/opt/app/keystore.jks", "root", 0),
        ("FILE", "/opt/app/keystore.jks", "web", 0),
        ("FILE", "/opt/app/keystore.jks", "web", 1),
        ("PORT", None, None, 0),
    ]
    assert items[0]["linkPaths"] == ["/etc/ssl/link.pem"] and "linkPaths" not in items[2]
    assert "alias" not in items[0]
    assert items[6] == {
        "kind": "PORT",
        "address": "::1",
        "port": 443,
        "serverName": "web.test",
        "index": 0,
        "der": base64.b64encode(leaf.der).decode(),
        "fingerprintSha256": leaf.fingerprint,
        "commonName": "report.test",
        "notAfter": leaf.cert.not_valid_after_utc.isoformat(),
    }
    assert base64.b64decode(items[2]["der"], validate=True) == root.der


def test_scan_ids_differ():
    assert report.new_scan_id() != report.new_scan_id()


def test_for_sending_strips_the_annotations_only(chain):
    doc = document(chain)
    (part,) = report.for_sending(doc)
    for item in part["items"]:
        assert set(item) <= SERVER_ITEM_FIELDS
        assert not set(item) & set(report.ANNOTATIONS)
    assert "fingerprintSha256" in doc["items"][0]  # the original is left alone
    assert {k: v for k, v in part.items() if k != "items"} == {k: v for k, v in doc.items() if k != "items"}


def test_split_into_parts(chain):
    leaf, _, _ = chain
    files = [FileCertificate(f"/certs/{n:03}.pem", 0, leaf.der) for n in range(7)]
    doc = document(chain, files=files, ports=[], complete=False)
    parts = report.split(doc, max_items=3)
    assert [len(p["items"]) for p in parts] == [3, 3, 1]
    assert [p["part"] for p in parts] == [0, 1, 2]
    assert [p["lastPart"] for p in parts] == [False, False, True]
    assert {p["scanId"] for p in parts} == {doc["scanId"]}
    assert {p["complete"] for p in parts} == {False}
    assert [p["errors"] for p in parts] == [[], [], doc["errors"]]
    assert [i["path"] for p in parts for i in p["items"]] == [i["path"] for i in doc["items"]]


def test_split_at_the_real_threshold(chain):
    assert report.MAX_ITEMS_PER_PART == 10_000
    fake_item = {"kind": "FILE", "path": "/x", "index": 0, "der": "AA=="}
    doc = {**document(chain), "items": [fake_item] * 10_000}
    assert len(report.split(doc)) == 1
    doc["items"] = [fake_item] * 10_001
    parts = report.split(doc)
    assert [len(p["items"]) for p in parts] == [10_000, 1]


def test_empty_scan_is_one_part(chain):
    parts = report.split(document(chain, files=[], ports=[], errors=[]))
    assert len(parts) == 1 and parts[0]["items"] == [] and parts[0]["lastPart"] is True


def test_split_keeps_parts_under_the_byte_budget(chain):
    leaf, _, _ = chain
    files = [FileCertificate(f"/certs/{n:03}.pem", 0, leaf.der) for n in range(10)]
    doc = report.without_annotations(document(chain, files=files, ports=[]))
    one_item = len(json.dumps(doc["items"][0]))
    parts = report.split(doc, max_items=100, max_bytes=int(one_item * 3.5))
    assert [len(p["items"]) for p in parts] == [3, 3, 3, 1]
    for part in parts:
        assert len(json.dumps(part["items"])) <= one_item * 3.5
    assert [p["lastPart"] for p in parts] == [False, False, False, True]
    assert report.MAX_PART_BYTES == 16 * 1024 * 1024
    huge = report.split(doc, max_items=100, max_bytes=1)  # one item over the budget still travels
    assert [len(p["items"]) for p in huge] == [1] * 10


def test_undecodable_file_names_become_valid_unicode(tmp_path, chain):
    from agent import scan

    leaf, _, _ = chain
    name = b"caf\xe9-latin1.pem"  # not UTF-8: Python keeps the byte as a lone surrogate
    (tmp_path / os.fsdecode(name)).write_text(leaf.pem)
    result = scan.scan_files([str(tmp_path)])
    doc = report.build(files=result.certificates, complete=True, hostname="h", scanned_at=dt.datetime.now(UTC))
    path = doc["items"][0]["path"]
    assert path == f"{tmp_path}/caf\ufffd-latin1.pem"
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # would raise on a lone surrogate
