"""reportCertificates: an agent's report of what its host holds (AGENT tokens only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, cast

import strawberry

from backend import metrics
from backend.schema.certificates import LocationKind
from backend.schema.core.access import AGENT, access
from backend.schema.core.context import Info
from backend.services import ingest


@strawberry.input(description="One certificate at one place. Plain scalars only: reports carry thousands of these.")
class ReportItem:
    kind: LocationKind
    path: str | None = strawberry.field(default=None, description="FILE: the file's resolved real path.")
    link_paths: list[str] | None = strawberry.field(default=None, description="FILE: the scanned paths (symlinks) that led to it.")
    index: int | None = strawberry.field(default=0, description="Position in the file or in the served chain (0 = leaf).")
    alias: str | None = strawberry.field(default=None, description="FILE: keystore alias (then the place ignores index).")
    address: str | None = strawberry.field(default=None, description="PORT: the address probed.")
    port: int | None = None
    server_name: str | None = strawberry.field(default=None, description="PORT: the SNI name sent.")
    der: str = strawberry.field(description="The DER certificate, base64.")


@strawberry.input
class ScanErrorInput:
    path: str
    reason: str


@strawberry.input(description="One part of one scan. Parts of a scan share its scanId and scannedAt.")
class ReportCertificatesInput:
    scan_id: strawberry.ID
    scanned_at: dt.datetime
    complete: bool = strawberry.field(description="Every configured path and port was scanned: missing places are removed.")
    part: int | None = 0
    last_part: bool | None = True
    hostname: str
    agent_version: str | None = None
    os: str | None = None
    interval_seconds: int | None = None
    items: list[ReportItem] = strawberry.field(description=f"At most {ingest.MAX_ITEMS_PER_PART} per part.")
    errors: list[ScanErrorInput] | None = None


def _report(cls: type, value: Mapping[str, Any], context: object) -> ingest.Report:
    """Build the service's report straight from graphql-core's coerced input.

    graphql-core has already checked every value against the types above.
    Strawberry's generic conversion would then walk every item again,
    resolving each field's annotation (tens of microseconds per item: most of
    a large report's cost); the items are plain scalars, so they are read
    directly. The service checks the values themselves.
    """
    part, last_part = value.get("part"), value.get("lastPart")
    return ingest.Report(
        scan_id=str(value["scanId"]),
        scanned_at=value["scannedAt"],
        complete=value["complete"],
        hostname=value["hostname"],
        part=0 if part is None else part,
        last_part=True if last_part is None else last_part,
        agent_version=value.get("agentVersion"),
        os=value.get("os"),
        interval_seconds=value.get("intervalSeconds"),
        items=[
            ingest.ReportItem(
                kind=item["kind"],
                der=item["der"],
                path=item.get("path"),
                link_paths=item.get("linkPaths"),
                index=item.get("index"),
                alias=item.get("alias"),
                address=item.get("address"),
                port=item.get("port"),
                server_name=item.get("serverName"),
            )
            for item in value["items"]
        ],
        errors=[ingest.ScanError(path=e["path"], reason=e["reason"]) for e in value.get("errors") or ()],
    )


ReportCertificatesInput.__strawberry_definition__.from_input = _report


@access(AGENT)
@strawberry.type
class RejectedItem:
    index: int = strawberry.field(description="Position in `items`.")
    reason: str


@access(AGENT)
@strawberry.type
class ReportCertificatesPayload:
    accepted: int
    new_certificates: int
    events_recorded: int
    stale: bool = strawberry.field(description="Older than the host's last applied scan: nothing was changed.")
    rejected: list[RejectedItem]


@access(AGENT)
@strawberry.type
class IngestMutations:
    @strawberry.mutation(description="Record a scan part for the token's own host (idempotent per scanId and part).")
    async def report_certificates(self, info: Info, input: ReportCertificatesInput) -> ReportCertificatesPayload:
        host_id = info.context.require_host()
        report = cast(ingest.Report, input)  # built by _report
        result = await ingest.report_certificates(host_id, info.context.require_viewer().actor, report)
        metrics.INGEST_REPORTS.inc()
        return ReportCertificatesPayload(
            accepted=result.accepted,
            new_certificates=result.new_certificates,
            events_recorded=result.events_recorded,
            stale=result.stale,
            rejected=[RejectedItem(index=r.index, reason=r.reason) for r in result.rejected],
        )
