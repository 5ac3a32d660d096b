"""Hosts: where agents run."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import strawberry

from backend.models import Host as HostModel
from backend.schema.certificates import (
    Certificate,
    CertificateFilter,
    CertificateOrder,
    CertificateStatus,
    certificate_connection,
    certificate_query,
)
from backend.schema.core.access import ADMIN, ANYONE, READ, access, allow
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, decode_id, from_global_id, to_global_id
from backend.services import hosts as host_service
from backend.services import inventory
from backend.services import status as st

HostStatus = strawberry.enum(
    host_service.HostStatus,
    description="ACTIVE; STALE when no report arrived for 3 x its interval (1 h if unknown); RETIRED.",
)


@access(READ)
@strawberry.type
class ScanError:
    path: str
    reason: str


@access(READ)
@strawberry.type
class Host(Node):
    hostname: str = strawberry.field(metadata=allow(ANYONE))
    os: str | None
    agent_version: str | None
    last_report_at: dt.datetime | None
    interval_seconds: int | None
    created_at: dt.datetime
    retired_at: dt.datetime | None
    scan_errors: list[ScanError]
    status: HostStatus
    _pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, m: HostModel | None) -> Host | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("Host", m.id),
            hostname=m.hostname,
            os=m.os,
            agent_version=m.agent_version,
            last_report_at=m.last_report_at,
            interval_seconds=m.interval_seconds,
            created_at=m.created_at,
            retired_at=m.retired_at,
            status=host_service.host_status(m),
            scan_errors=[ScanError(path=e.get("path", ""), reason=e.get("reason", "")) for e in (m.scan_errors or [])],
            _pk=m.id,
        )

    @strawberry.field(description="The worst status over its present non-CA certificates; null when it has none.")
    async def worst_status(self, info: Info) -> CertificateStatus | None:
        soonest = await info.context.loaders.host_soonest_expiry.load(self._pk)
        return None if soonest is None else st.status_of(soonest)

    @strawberry.field(description="Certificates present on this host.")
    async def certificates(
        self,
        first: int | None = None,
        after: str | None = None,
        filter: CertificateFilter | None = None,
        order_by: CertificateOrder = inventory.CertificateOrder.NOT_AFTER_ASC,
    ) -> Connection[Certificate]:
        query = certificate_query(filter)
        query = inventory.CertificateQuery(**{**vars(query), "host_id": self._pk})
        return await certificate_connection(query, inventory.CertificateOrder(order_by), first, after)


@strawberry.input
class HostFilter:
    search: str | None = None
    certificate_id: strawberry.ID | None = None


@access(READ)
@strawberry.type
class HostQueries:
    @strawberry.field
    async def hosts(
        self, first: int | None = None, after: str | None = None, filter: HostFilter | None = None
    ) -> Connection[Host]:
        query = inventory.HostQuery(
            search=filter.search if filter else None,
            certificate_id=decode_id(filter.certificate_id, "Certificate") if filter else None,
        )
        page = await inventory.list_hosts(query, first, after)
        return Connection[Host].from_page(page, Host.from_model, lambda: inventory.hosts_queryset(query).count())

    @strawberry.field(description="One host by id or hostname (exactly one).")
    async def host(self, id: strawberry.ID | None = None, hostname: str | None = None) -> Host | None:
        from backend.errors import BadUserInput

        if (id is None) == (hostname is None):
            raise BadUserInput("Give exactly one of id and hostname.")
        if id is not None:
            type_name, pk = from_global_id(id)
            return Host.from_model(await inventory.get_host(id=pk)) if type_name == "Host" else None
        return Host.from_model(await inventory.get_host(hostname=hostname))


HostRef = Annotated[Host, strawberry.lazy("backend.schema.hosts")]


@access(ADMIN)
@strawberry.type
class HostMutations:
    @strawberry.mutation(
        description="Remove all its places (REMOVED_FROM_HOST) and revoke its tokens; enrolling it again brings it back."
    )
    async def retire_host(self, info: Info, id: strawberry.ID) -> Host:
        viewer = info.context.require_viewer()
        return Host.from_model(await host_service.retire_host(from_global_id(id, "Host")[1], viewer.actor))
