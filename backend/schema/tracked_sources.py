"""Tracked sources: certificates followed through the checker (a URL re-fetched
on a schedule, or an uploaded file as an expiry reminder)."""

from __future__ import annotations

import datetime as dt

import strawberry

from backend.models import RefreshInterval as RefreshIntervalEnum
from backend.models import SourceKind as SourceKindEnum
from backend.models import TrackedSource as SourceModel
from backend.schema.certificates import Certificate
from backend.schema.core.access import READ, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Node, to_global_id

SourceKind = strawberry.enum(SourceKindEnum)
RefreshInterval = strawberry.enum(RefreshIntervalEnum)


@access(READ)
@strawberry.type
class TrackedSource(Node):
    kind: SourceKind
    url: str | None
    server_name: str | None
    name: str | None
    note: str | None
    refresh_interval: RefreshInterval | None
    last_refreshed_at: dt.datetime | None
    last_attempt_at: dt.datetime | None
    next_refresh_at: dt.datetime | None
    last_error: str | None
    consecutive_failures: int
    created_at: dt.datetime
    untracked_at: dt.datetime | None
    _certificate_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, m: SourceModel | None) -> TrackedSource | None:
        if m is None:
            return None
        return cls(
            id=to_global_id("TrackedSource", m.id),
            kind=SourceKindEnum(m.kind),
            url=m.url,
            server_name=m.server_name,
            name=m.name,
            note=m.note,
            refresh_interval=RefreshIntervalEnum(m.refresh_interval) if m.refresh_interval else None,
            last_refreshed_at=m.last_refreshed_at,
            last_attempt_at=m.last_attempt_at,
            next_refresh_at=m.next_refresh_at,
            last_error=m.last_error,
            consecutive_failures=m.consecutive_failures,
            created_at=m.created_at,
            untracked_at=m.untracked_at,
            _certificate_id=m.certificate_id,
        )

    @strawberry.field(description="The certificate it serves now (the last one known when fetches fail).")
    async def certificate(self, info: Info) -> Certificate | None:
        if self._certificate_id is None:
            return None
        return Certificate.from_model(await info.context.loaders.certificate.load(self._certificate_id))
