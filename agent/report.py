"""The report document: ``ReportCertificatesInput``, exactly as the server's schema names it.

:func:`build` makes one document per scan, each item carrying three extra
fields for people (``fingerprintSha256``, ``commonName``, ``notAfter``:
``ctops-agent scan --json`` prints them); :func:`for_sending` removes them,
since the server's input type does not have them, and splits a large scan
into parts of at most :data:`MAX_ITEMS_PER_PART` items (same ``scanId``,
``part`` 0..n, ``lastPart`` on the last, ``complete`` the same on all).

Only certificates (DER, base64) and where they were found are ever sent:
never private keys, passwords or other file contents.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import platform
import uuid
from collections.abc import Iterable
from typing import Any

from agent import __version__, formats
from agent.findings import FileCertificate, PortCertificate, ScanError

MAX_ITEMS_PER_PART = 10_000
#: A part's approximate JSON size limit: half the server's default request
#: limit (32 MiB, ``CTOPS_AGENT_MAX_BODY_BYTES``), since 10,000 large
#: certificates can exceed it.
MAX_PART_BYTES = 16 * 1024 * 1024
_ITEM_OVERHEAD_BYTES = 160  # keys, punctuation, kind, index, port
ANNOTATIONS = ("fingerprintSha256", "commonName", "notAfter")


@functools.cache
def os_description() -> str:
    """``Debian GNU/Linux 12 (bookworm) (Linux 6.1.0-18-amd64 x86_64)``: the distribution and kernel.

    Cheaper than ``platform.platform()``, which reads the Python binary to
    find the C library version.
    """
    kernel = " ".join(part for part in (platform.system(), platform.release(), platform.machine()) if part)
    try:
        distribution = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        distribution = None
    return f"{distribution} ({kernel})" if distribution else kernel


def new_scan_id() -> str:
    return str(uuid.uuid4())


def timestamp(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with an explicit offset: ``2025-01-31T12:00:00+00:00``."""
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


@functools.lru_cache(maxsize=65536)
def _certificate_fields(der: bytes) -> tuple[str, str, str | None, str]:
    """(base64 DER, fingerprint, common name, notAfter) once per distinct certificate."""
    description = formats.describe(der)
    return (
        base64.b64encode(der).decode("ascii"),
        description.fingerprint_sha256,
        description.common_name,
        timestamp(description.not_after),
    )


def _annotated(item: dict[str, Any], der: bytes) -> dict[str, Any]:
    item["der"], item["fingerprintSha256"], item["commonName"], item["notAfter"] = _certificate_fields(der)
    return item


def text(value: str) -> str:
    """``value`` as valid Unicode: a file name's undecodable bytes (kept by Python
    as lone surrogates) become U+FFFD, which JSON and the server's database accept."""
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def file_item(found: FileCertificate) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "FILE", "path": text(found.path)}
    if found.link_paths:
        item["linkPaths"] = [text(p) for p in found.link_paths]
    item["index"] = found.index
    if found.alias is not None:
        item["alias"] = text(found.alias)
    return _annotated(item, found.der)


def port_item(found: PortCertificate) -> dict[str, Any]:
    item: dict[str, Any] = {"kind": "PORT", "address": found.address, "port": found.port}
    if found.server_name:
        item["serverName"] = found.server_name
    item["index"] = found.index
    return _annotated(item, found.der)


def build(
    *,
    files: Iterable[FileCertificate],
    ports: Iterable[PortCertificate] = (),
    errors: Iterable[ScanError] = (),
    complete: bool,
    hostname: str,
    scanned_at: dt.datetime,
    interval_seconds: int | None = None,
    scan_id: str | None = None,
) -> dict[str, Any]:
    """One annotated ``ReportCertificatesInput`` for a whole scan.

    Items are in a stable order: files by (path, alias, index), then ports by
    (address, port, index).
    """
    items = [file_item(f) for f in sorted(files, key=lambda f: (f.path, f.alias or "", f.index))]
    items += [port_item(p) for p in sorted(ports, key=lambda p: (p.address, p.port, p.index))]
    document: dict[str, Any] = {
        "scanId": scan_id or new_scan_id(),
        "scannedAt": timestamp(scanned_at),
        "complete": complete,
        "part": 0,
        "lastPart": True,
        "hostname": hostname,
        "agentVersion": __version__,
        "os": os_description(),
    }
    if interval_seconds is not None:
        document["intervalSeconds"] = interval_seconds
    document["items"] = items
    document["errors"] = [{"path": text(e.path), "reason": text(e.reason)} for e in errors]
    return document


def without_annotations(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` whose items hold only the server's ``ReportItem`` fields."""
    items = [{k: v for k, v in item.items() if k not in ANNOTATIONS} for item in document["items"]]
    return {**document, "items": items}


def _approximate_size(item: dict[str, Any]) -> int:
    size = _ITEM_OVERHEAD_BYTES + len(item["der"]) + len(item.get("path") or "") + len(item.get("alias") or "")
    return size + sum(len(p) + 3 for p in item.get("linkPaths") or ())


def split(
    document: dict[str, Any], max_items: int = MAX_ITEMS_PER_PART, max_bytes: int = MAX_PART_BYTES
) -> list[dict[str, Any]]:
    """``document`` in parts of at most ``max_items`` items and about ``max_bytes`` of JSON.

    The errors travel with the last part, the one that closes the scan.
    A scan with no items is still one part (it tells the server nothing is left).
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for item in document["items"]:
        item_size = _approximate_size(item)
        if chunks[-1] and (len(chunks[-1]) >= max_items or size + item_size > max_bytes):
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += item_size
    parts = []
    for number, chunk in enumerate(chunks):
        last = number == len(chunks) - 1
        errors = document["errors"] if last else []
        parts.append({**document, "part": number, "lastPart": last, "items": chunk, "errors": errors})
    return parts


def for_sending(document: dict[str, Any], max_items: int = MAX_ITEMS_PER_PART) -> list[dict[str, Any]]:
    """The parts ``run`` sends for an annotated document from :func:`build`."""
    return split(without_annotations(document), max_items)
