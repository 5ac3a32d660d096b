"""The certificate event timeline."""

from __future__ import annotations

import datetime as dt

import strawberry
from strawberry.scalars import JSON

from backend.models import CertificateEvent as EventModel
from backend.models import EventType
from backend.schema.certificates import Certificate, CertificateLocation
from backend.schema.core.access import READ, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, decode_id, to_global_id
from backend.schema.hosts import Host
from backend.schema.tracked_sources import TrackedSource
from backend.services import inventory

CertificateEventType = strawberry.enum(EventType, name="CertificateEventType")


@access(READ)
@strawberry.type
class CertificateEvent(Node):
    type: CertificateEventType
    occurred_at: dt.datetime
    actor: str = strawberry.field(description="The token name that caused it, or `system`.")
    details: JSON = strawberry.field(description="Keys fixed per type: see docs/events.md.")
    _certificate_id: strawberry.Private[int]
    _host_id: strawberry.Private[int | None]
    _location_id: strawberry.Private[int | None]
    _tracked_source_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: EventModel | None) -> CertificateEvent | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("CertificateEvent", m.id),
            type=EventType(m.type),
            occurred_at=m.occurred_at,
            actor=m.actor,
            details=m.details or {},
            _certificate_id=m.certificate_id,
            _host_id=m.host_id,
            _location_id=m.location_id,
            _tracked_source_id=m.tracked_source_id,
        )

    @strawberry.field
    async def certificate(self, info: Info) -> Certificate:
        return Certificate.from_model(await info.context.loaders.certificate.load(self._certificate_id))

    @strawberry.field
    async def host(self, info: Info) -> Host | None:
        if self._host_id is None:
            return None
        return Host.from_model(await info.context.loaders.host.load(self._host_id))

    @strawberry.field(description="The place it happened at, for host events.")
    async def location(self, info: Info) -> CertificateLocation | None:
        if self._location_id is None:
            return None
        row = await info.context.loaders.location.load(self._location_id)
        return None if row is None else CertificateLocation.from_model(row)

    @strawberry.field
    async def tracked_source(self, info: Info) -> TrackedSource | None:
        if self._tracked_source_id is None:
            return None
        return TrackedSource.from_model(await info.context.loaders.tracked_source.load(self._tracked_source_id))


async def event_connection(query: inventory.EventQuery, first: int | None, after: str | None) -> Connection[CertificateEvent]:
    page = await inventory.list_events(query, first, after)
    return Connection[CertificateEvent].from_page(
        page, CertificateEvent.from_model, lambda: inventory.events_queryset(query).count()
    )


@strawberry.input
class CertificateEventFilter:
    types: list[CertificateEventType] | None = None
    certificate_id: strawberry.ID | None = None
    host_id: strawberry.ID | None = None
    tracked_source_id: strawberry.ID | None = None
    since: dt.datetime | None = None


@access(READ)
@strawberry.type
class EventQueries:
    @strawberry.field(description="Events, newest first.")
    async def certificate_events(
        self, first: int | None = None, after: str | None = None, filter: CertificateEventFilter | None = None
    ) -> Connection[CertificateEvent]:
        f = filter or CertificateEventFilter()
        query = inventory.EventQuery(
            types=tuple(EventType(t) for t in f.types) if f.types else None,
            certificate_id=decode_id(f.certificate_id, "Certificate"),
            host_id=decode_id(f.host_id, "Host"),
            tracked_source_id=decode_id(f.tracked_source_id, "TrackedSource"),
            since=f.since,
        )
        return await event_connection(query, first, after)
