"""Expiry: status changes as they are recorded, and running the sweep on demand."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator, AsyncIterator

import strawberry

from backend.models import CertificateEvent as EventModel
from backend.models import EventType
from backend.schema.certificates import Certificate, CertificateStatus
from backend.schema.core import live
from backend.schema.core.access import ADMIN, READ, access
from backend.schema.core.context import Info
from backend.schema.core.execution import Delivery
from backend.schema.core.relay import decode_id
from backend.services import status as st
from backend.services import sweep as expiry_sweep


@access(READ)
@strawberry.type(description="A current certificate crossed into another status (recorded by the expiry sweep).")
class ExpiryStatusChange:
    previous_status: CertificateStatus | None = strawberry.field(
        description="Null only for a certificate stored before statuses were recorded."
    )
    status: CertificateStatus
    occurred_at: dt.datetime
    _certificate_id: strawberry.Private[int]

    @strawberry.field
    async def certificate(self, info: Info) -> Certificate:
        return Certificate.from_model(await info.context.loaders.certificate.load(self._certificate_id))

    @classmethod
    def from_event(cls, event: EventModel) -> ExpiryStatusChange:
        details = event.details or {}
        previous = details.get("from")
        return cls(
            previous_status=st.CertificateStatus(previous) if previous else None,
            status=st.CertificateStatus(details["to"]),
            occurred_at=event.occurred_at,
            _certificate_id=event.certificate_id,
        )


@strawberry.input
class ExpiryStatusChangeFilter:
    statuses: list[CertificateStatus] | None = strawberry.field(default=None, description="The new status is one of these.")
    host_id: strawberry.ID | None = strawberry.field(default=None, description="The certificate is on this host now.")


@access(READ)
@strawberry.type
class ExpirySubscriptions:
    @strawberry.subscription(
        description="Current certificates crossing into another status (OK, WARNING, CRITICAL, EXPIRED) as the "
        "expiry sweep records them, within one sweep interval of the crossing."
    )
    async def expiry_status_changed(
        self, info: Info, filter: ExpiryStatusChangeFilter | None = None
    ) -> AsyncGenerator[ExpiryStatusChange, None]:
        feed, connection = live.for_subscription(info.context)
        f = filter or ExpiryStatusChangeFilter()
        statuses = {st.CertificateStatus(s).value for s in f.statuses} if f.statuses else None
        host_id = decode_id(f.host_id, "Host")
        return _status_stream(feed, connection, statuses, host_id)


async def _status_stream(
    feed: live.LiveFeed, connection: live.LiveConnection, statuses: set[str] | None, host_id: int | None
) -> AsyncIterator[Delivery]:
    def accepts(event: EventModel, batch: live.Batch) -> bool:
        if EventType(event.type) is not EventType.STATUS_CHANGED:
            return False
        if statuses is not None and (event.details or {}).get("to") not in statuses:
            return False
        return host_id is None or host_id in batch.live_hosts.get(event.certificate_id, ())

    subscription = feed.subscribe(connection, accepts, needs_hosts=host_id is not None)
    try:
        async for event, batch in feed.stream(subscription):
            yield batch.delivery(ExpiryStatusChange.from_event(event), event)
    finally:
        feed.unsubscribe(subscription)


@access(ADMIN)
@strawberry.type
class SweepResult:
    status_changes: int = strawberry.field(description="STATUS_CHANGED events recorded.")
    expired: int = strawberry.field(description="Of those, certificates that reached EXPIRED (an EXPIRED event each).")
    started_at: dt.datetime
    finished_at: dt.datetime


@access(ADMIN)
@strawberry.type
class SweepMutations:
    @strawberry.mutation(
        description="Run the expiry sweep now, in this server: status changes since the last sweep are "
        "recorded and pushed to subscribers (on this server's bus, so in embedded mode too)."
    )
    async def run_sweep(self) -> SweepResult:
        result = await expiry_sweep.sweep()
        return SweepResult(
            status_changes=result.status_changes,
            expired=result.expired,
            started_at=result.started_at,
            finished_at=result.finished_at,
        )
