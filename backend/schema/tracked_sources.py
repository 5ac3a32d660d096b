"""Tracked sources: certificates followed through the checker (a URL re-fetched
on a schedule, or an uploaded file as an expiry reminder); track, import,
refresh and untrack them."""

from __future__ import annotations

import datetime as dt

import strawberry

from backend.errors import CheckErrorCode as CheckErrorCodeEnum
from backend.models import RefreshInterval as RefreshIntervalEnum
from backend.models import SourceKind as SourceKindEnum
from backend.models import TrackedSource as SourceModel
from backend.schema.certificates import Certificate
from backend.schema.checker import CheckErrorCode, InspectionWarning
from backend.schema.core.access import EDIT, READ, access
from backend.schema.core.context import Info
from backend.schema.core.relay import Connection, Node, from_global_id, to_global_id
from backend.services import refresh, tracked_sources

SourceKind = strawberry.enum(SourceKindEnum)
RefreshInterval = strawberry.enum(RefreshIntervalEnum)


@access(READ)
@strawberry.type
class TrackedSource(Node):
    kind: SourceKind
    url: str | None = strawberry.field(description="As displayed: normalised host, default port left out, path kept.")
    server_name: str | None
    name: str | None
    note: str | None
    refresh_interval: RefreshInterval | None
    last_refreshed_at: dt.datetime | None = strawberry.field(description="The last successful fetch (or upload).")
    last_attempt_at: dt.datetime | None
    next_refresh_at: dt.datetime | None
    last_error: str | None
    last_error_code: CheckErrorCode | None
    consecutive_failures: int
    created_at: dt.datetime
    untracked_at: dt.datetime | None
    _model: strawberry.Private[SourceModel]

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
            last_error_code=CheckErrorCodeEnum(m.last_error_code) if m.last_error_code else None,
            consecutive_failures=m.consecutive_failures,
            created_at=m.created_at,
            untracked_at=m.untracked_at,
            _model=m,
        )

    @strawberry.field(description="The certificate it serves now (the last one known while fetches fail).")
    async def certificate(self, info: Info) -> Certificate | None:
        if self._model.certificate_id is None:
            return None
        return Certificate.from_model(await info.context.loaders.certificate.load(self._model.certificate_id))

    @strawberry.field(description="Every certificate it has had, newest first (the current one included).")
    async def history(self, first: int | None = None, after: str | None = None) -> Connection[Certificate]:
        pk = self._model.id
        page = await tracked_sources.history(pk, first, after)
        return Connection[Certificate].from_page(page, Certificate.from_model, lambda: tracked_sources.count_history(pk))

    @strawberry.field(description="What the last successful fetch found, with the expiry warnings as of now.")
    async def warnings(self, info: Info) -> list[InspectionWarning]:
        certificate = None
        if self._model.certificate_id is not None:
            certificate = await info.context.loaders.certificate.load(self._model.certificate_id)
        return [InspectionWarning.of(w) for w in tracked_sources.current_warnings(self._model, certificate)]


@strawberry.input
class TrackedSourceFilter:
    kind: SourceKind | None = None
    failing: bool | None = strawberry.field(
        default=None, description="Only sources whose last fetch failed (or, false, only healthy ones)."
    )
    include_untracked: bool = False


@access(READ)
@strawberry.type
class TrackedSourceQueries:
    @strawberry.field(description="Tracked sources, oldest first; untracked ones only with includeUntracked.")
    async def tracked_sources(
        self, first: int | None = None, after: str | None = None, filter: TrackedSourceFilter | None = None
    ) -> Connection[TrackedSource]:
        f = filter or TrackedSourceFilter()
        query = tracked_sources.SourceQuery(
            kind=SourceKindEnum(f.kind) if f.kind else None, failing=f.failing, include_untracked=f.include_untracked
        )
        page = await tracked_sources.list_sources(query, first, after)
        return Connection[TrackedSource].from_page(
            page, TrackedSource.from_model, lambda: tracked_sources.sources_queryset(query).count()
        )

    @strawberry.field(description="One tracked source; null when nothing matches.")
    async def tracked_source(self, id: strawberry.ID) -> TrackedSource | None:
        type_name, pk = from_global_id(id)
        if type_name != "TrackedSource":
            return None
        return TrackedSource.from_model(await tracked_sources.get_source(pk))


@strawberry.input
class TrackUrlInput:
    url: str
    server_name: str | None = strawberry.field(default=None, description="SNI and the name checked, when not the URL's host.")
    refresh_interval: RefreshInterval | None = RefreshIntervalEnum.HOURS_1
    name: str | None = None
    note: str | None = None


@access(READ)
@strawberry.type
class TrackUrlPayload:
    tracked_source: TrackedSource
    certificate: Certificate | None
    already_tracked: bool


@strawberry.input
class ImportCertificateInput:
    data: str = strawberry.field(description="PEM text, or base64 of DER, PKCS#7 or PKCS#12.")
    password: str | None = None
    name: str | None = None
    note: str | None = None
    tracked_source_id: strawberry.ID | None = strawberry.field(
        default=None, description="Re-import into this UPLOAD source (the renewal rule applies)."
    )


@access(READ)
@strawberry.type
class ImportCertificatePayload:
    tracked_source: TrackedSource
    certificate: Certificate | None


@access(EDIT)
@strawberry.type
class TrackedSourceMutations:
    @strawberry.mutation(
        description="Track a URL: fetched once now (a failure stores nothing), then refreshed every refreshInterval."
    )
    async def track_url(self, info: Info, input: TrackUrlInput) -> TrackUrlPayload:
        tracked = await tracked_sources.track_url(
            input.url,
            server_name=input.server_name,
            interval=RefreshIntervalEnum(input.refresh_interval or RefreshIntervalEnum.HOURS_1),
            name=input.name,
            note=input.note,
            settings=info.context.settings,
            actor=info.context.require_viewer().actor,
        )
        return TrackUrlPayload(
            tracked_source=TrackedSource.from_model(tracked.source),
            certificate=Certificate.from_model(tracked.certificate),
            already_tracked=tracked.already_tracked,
        )

    @strawberry.mutation(description="Keep an uploaded certificate as an expiry reminder (or re-import into an UPLOAD source).")
    async def import_certificate(self, info: Info, input: ImportCertificateInput) -> ImportCertificatePayload:
        source_id = from_global_id(input.tracked_source_id, "TrackedSource")[1] if input.tracked_source_id else None
        tracked = await tracked_sources.import_certificate(
            input.data,
            password=input.password,
            name=input.name,
            note=input.note,
            tracked_source_id=source_id,
            settings=info.context.settings,
            actor=info.context.require_viewer().actor,
        )
        return ImportCertificatePayload(
            tracked_source=TrackedSource.from_model(tracked.source), certificate=Certificate.from_model(tracked.certificate)
        )

    @strawberry.mutation(description="Refresh a URL source now. A fetch failure is not an error: it is in lastError.")
    async def refresh_tracked_source(self, info: Info, id: strawberry.ID) -> TrackedSource:
        source = await refresh.refresh_now(
            from_global_id(id, "TrackedSource")[1], settings=info.context.settings, actor=info.context.require_viewer().actor
        )
        return TrackedSource.from_model(source)

    @strawberry.mutation(
        description="Stop tracking (history kept); its certificate stops being current unless present elsewhere."
    )
    async def untrack_source(self, info: Info, id: strawberry.ID) -> TrackedSource:
        source = await tracked_sources.untrack(from_global_id(id, "TrackedSource")[1], actor=info.context.require_viewer().actor)
        return TrackedSource.from_model(source)
