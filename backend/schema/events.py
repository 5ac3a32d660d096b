"""The certificate event timeline."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator

import strawberry
from strawberry.scalars import JSON

from backend.models import CertificateEvent as EventModel
from backend.models import EventType
from backend.schema.certificates import Certificate, CertificateLocation
from backend.schema.core.access import READ, access
from backend.errors import BadUserInput
from backend.schema.core import live
from backend.schema.core.context import Info
from backend.schema.core.execution import Delivery
from backend.schema.core.relay import Connection, Node, decode_id, from_global_id, to_global_id
from backend.schema.hosts import Host
from backend.schema.tracked_sources import TrackedSource
from backend.schema.loaders import Loaders
from backend.services import inventory
from backend.services.pagination import decode_cursor, encode_cursor

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
    _pk: strawberry.Private[int | None] = None

    @strawberry.field(
        description="This event's cursor in `certificateEvents`: give it as `after` to the "
        "`certificateEvents` subscription to resume after it."
    )
    def cursor(self) -> str:
        return event_cursor(self._pk)

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
            _pk=m.id,
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


# --- live ---------------------------------------------------------------------------

REPLAY_PAGE = 200


def event_cursor(pk: int | None) -> str:
    """The cursor ``certificateEvents`` gives the event (its keyset: the id)."""
    return encode_cursor([pk])


def event_id_after(after: str) -> int:
    """The event id an ``after`` names: a cursor from ``certificateEvents`` or a
    ``CertificateEvent`` id."""
    try:
        [pk] = decode_cursor(after, 1)
        if isinstance(pk, int) and not isinstance(pk, bool):
            return pk
    except BadUserInput:
        pass
    try:
        return from_global_id(after, "CertificateEvent")[1]
    except BadUserInput:
        raise BadUserInput("`after` must be an event cursor (or a CertificateEvent id).") from None


@strawberry.input
class CertificateEventSubscriptionFilter:
    types: list[CertificateEventType] | None = None
    certificate_id: strawberry.ID | None = None
    host_id: strawberry.ID | None = strawberry.field(default=None, description="Events that happened on this host.")


@access(READ)
@strawberry.type
class EventSubscriptions:
    @strawberry.subscription(
        description="Certificate events as they are recorded, by any replica, worker or command. "
        "With `after` (a cursor from `certificateEvents` or from an earlier push), the events recorded "
        "since then are sent first, oldest first, then the live ones."
    )
    async def certificate_events(
        self, info: Info, filter: CertificateEventSubscriptionFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[CertificateEvent, None]:
        feed, connection = live.for_subscription(info.context)
        f = filter or CertificateEventSubscriptionFilter()
        query = inventory.EventQuery(
            types=tuple(EventType(t) for t in f.types) if f.types else None,
            certificate_id=decode_id(f.certificate_id, "Certificate"),
            host_id=decode_id(f.host_id, "Host"),
        )
        after_id = None if after is None else event_id_after(after)
        if after_id is not None:
            limit = info.context.settings.subscription_replay_limit
            missed = await inventory.events_queryset(query).filter(id__gt=after_id).limit(limit + 1).values_list("id", flat=True)
            if len(missed) > limit:
                raise BadUserInput(
                    f"More than {limit} events were recorded since that cursor: "
                    "re-query `certificateEvents` and subscribe after its newest cursor."
                )
        return _event_stream(feed, connection, query, after_id)


async def _event_stream(
    feed: live.LiveFeed, connection: live.LiveConnection, query: inventory.EventQuery, after_id: int | None
) -> AsyncIterator[Delivery]:
    types = set(query.types) if query.types else None

    def accepts(event: EventModel, batch: live.Batch) -> bool:
        return (
            (types is None or EventType(event.type) in types)
            and (query.certificate_id is None or event.certificate_id == query.certificate_id)
            and (query.host_id is None or event.host_id == query.host_id)
        )

    # Subscribe first, then replay: nothing recorded in between is missed, and
    # what both paths bring is sent once.
    subscription = feed.subscribe(connection, accepts)
    replayed: set[int] = set()
    try:
        last = after_id
        while last is not None:
            rows = await inventory.events_queryset(query).filter(id__gt=last).order_by("id").limit(REPLAY_PAGE)
            loaders = Loaders()
            for row in rows:
                replayed.add(row.id)
                yield Delivery(CertificateEvent.from_model(row), loaders)
            last = rows[-1].id if len(rows) == REPLAY_PAGE else None
        async for event, batch in feed.stream(subscription):
            if event.id in replayed:
                continue
            yield batch.delivery(CertificateEvent.from_model(event), event)
    finally:
        feed.unsubscribe(subscription)
