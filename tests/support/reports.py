"""Agent reports for tests: GraphQL-shaped documents and the service's dataclasses."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

from backend import clock
from backend.services import ingest

REPORT = (
    "mutation($input: ReportCertificatesInput!) { reportCertificates(input: $input) "
    "{ accepted newCertificates eventsRecorded stale rejected { index reason } } }"
)


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def file_item(der: bytes, path: str = "/etc/ssl/site.pem", index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"kind": "FILE", "path": path, "index": index, "der": b64(der), **extra}


def port_item(der: bytes, address: str = "10.0.0.1", port: int = 443, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"kind": "PORT", "address": address, "port": port, "index": index, "der": b64(der), **extra}


def document(
    hostname: str,
    items: list[dict[str, Any]],
    *,
    scan_id: str | None = None,
    scanned_at: dt.datetime | None = None,
    complete: bool = True,
    part: int = 0,
    last_part: bool = True,
    errors: list[dict[str, str]] | None = None,
    interval_seconds: int | None = None,
) -> dict[str, Any]:
    """A ``ReportCertificatesInput`` as an agent sends it."""
    doc: dict[str, Any] = {
        "scanId": scan_id or str(uuid.uuid4()),
        "scannedAt": (scanned_at or clock.now()).isoformat(),
        "complete": complete,
        "part": part,
        "lastPart": last_part,
        "hostname": hostname,
        "agentVersion": "test",
        "os": "TestOS",
        "items": items,
        "errors": errors or [],
    }
    if interval_seconds is not None:
        doc["intervalSeconds"] = interval_seconds
    return doc


_ITEM_FIELDS = {"kind": "kind", "der": "der", "path": "path", "linkPaths": "link_paths", "index": "index",
                "alias": "alias", "address": "address", "port": "port", "serverName": "server_name"}  # fmt: skip


def service_report(doc: dict[str, Any]) -> ingest.Report:
    """The same document as the service's :class:`ingest.Report`."""
    items = [ingest.ReportItem(**{_ITEM_FIELDS[k]: v for k, v in item.items()}) for item in doc["items"]]
    return ingest.Report(
        scan_id=doc["scanId"],
        scanned_at=clock.parse_instant(doc["scannedAt"]),
        complete=doc["complete"],
        hostname=doc["hostname"],
        items=items,
        part=doc.get("part", 0),
        last_part=doc.get("lastPart", True),
        agent_version=doc.get("agentVersion"),
        os=doc.get("os"),
        interval_seconds=doc.get("intervalSeconds"),
        errors=[ingest.ScanError(**e) for e in doc.get("errors") or []],
    )
