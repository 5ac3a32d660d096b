"""Reading the inventory: certificates, hosts and events, filtered and paged in SQL.

Nothing here loads all certificates into Python: filters are conditions on
indexed columns, stats are one aggregate query, pages are keyset-paginated.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum

from tortoise.expressions import Q, Subquery
from tortoise.functions import Count
from tortoise.queryset import QuerySet

from backend import clock
from backend.models import Certificate, CertificateEvent, CertificateLocation, EventType, Host
from backend.services import status as st
from backend.services.pagination import Order, Page, keyset_page


class CertificateSource(str, enum.Enum):
    AGENT = "AGENT"
    IMPORTED = "IMPORTED"


class CertificateOrder(str, enum.Enum):
    NOT_AFTER_ASC = "NOT_AFTER_ASC"
    NOT_AFTER_DESC = "NOT_AFTER_DESC"
    COMMON_NAME_ASC = "COMMON_NAME_ASC"
    LAST_SEEN_DESC = "LAST_SEEN_DESC"


ORDERS = {
    CertificateOrder.NOT_AFTER_ASC: Order(("not_after", "id")),
    CertificateOrder.NOT_AFTER_DESC: Order(("not_after", "id"), descending=True),
    CertificateOrder.COMMON_NAME_ASC: Order(("sort_name", "id")),
    CertificateOrder.LAST_SEEN_DESC: Order(("last_seen_at", "id"), descending=True),
}


@dataclasses.dataclass(frozen=True)
class CertificateQuery:
    statuses: tuple[st.CertificateStatus, ...] | None = None
    expires_within_days: int | None = None
    search: str | None = None
    host_id: int | None = None
    source: CertificateSource | None = None
    is_ca: bool | None = None
    self_signed: bool | None = None
    include_history: bool = False


def normalise_fingerprint(text: str) -> str:
    return text.replace(":", "").replace(" ", "").strip().lower()


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def expires_within_q(days: int, now: dt.datetime, *, include_expired: bool = False) -> Q:
    """``notAfter <= now + days x 24 h``, and not yet expired unless ``include_expired``:
    the ``expiresWithinDays`` filter, and (expired included) an EXPIRY alert rule's match."""
    condition = Q(not_after__lte=now + dt.timedelta(days=days))
    return condition if include_expired else condition & Q(not_after__gt=now)


def certificates_queryset(query: CertificateQuery, now: dt.datetime | None = None) -> QuerySet[Certificate]:
    now = now or clock.now()
    qs = Certificate.all()
    if not query.include_history:
        qs = qs.filter(is_current=True)
    if query.statuses:
        qs = qs.filter(st.statuses_q(list(query.statuses), now))
    if query.expires_within_days is not None:
        qs = qs.filter(expires_within_q(query.expires_within_days, now))
    if query.search:
        qs = qs.filter(search_text__contains=query.search.strip().lower())
    if query.host_id is not None:
        places = CertificateLocation.filter(host_id=query.host_id)
        if not query.include_history:
            places = places.filter(removed_at__isnull=True)
        qs = qs.filter(id__in=Subquery(places.values("certificate_id")))
    if query.source is CertificateSource.AGENT:
        qs = qs.filter(seen_by_agent=True) if query.include_history else qs.filter(live_locations__gt=0)
    elif query.source is CertificateSource.IMPORTED:
        qs = qs.filter(imported=True) if query.include_history else qs.filter(live_sources__gt=0)
    if query.is_ca is not None:
        qs = qs.filter(is_ca=query.is_ca)
    if query.self_signed is not None:
        qs = qs.filter(self_signed=query.self_signed)
    return qs


async def list_certificates(
    query: CertificateQuery,
    order: CertificateOrder = CertificateOrder.NOT_AFTER_ASC,
    first: int | None = None,
    after: str | None = None,
) -> Page[Certificate]:
    return await keyset_page(certificates_queryset(query), ORDERS[order], first, after)


async def count_certificates(query: CertificateQuery) -> int:
    return await certificates_queryset(query).count()


@dataclasses.dataclass(frozen=True)
class CertificateStats:
    total: int
    ok: int
    warning: int
    critical: int
    expired: int


async def certificate_stats(query: CertificateQuery) -> CertificateStats:
    """Counts per status over the set ``list_certificates`` returns, in one query."""
    now = clock.now()
    rows = (
        await certificates_queryset(query, now)
        .annotate(
            total=Count("id"),
            ok=Count("id", _filter=st.status_q(st.CertificateStatus.OK, now)),
            warning=Count("id", _filter=st.status_q(st.CertificateStatus.WARNING, now)),
            critical=Count("id", _filter=st.status_q(st.CertificateStatus.CRITICAL, now)),
            expired=Count("id", _filter=st.status_q(st.CertificateStatus.EXPIRED, now)),
        )
        .values("total", "ok", "warning", "critical", "expired")
    )
    row = rows[0] if rows else {}
    return CertificateStats(**{k: int(row.get(k) or 0) for k in ("total", "ok", "warning", "critical", "expired")})


async def get_certificate(id: int | None = None, fingerprint: str | None = None) -> Certificate | None:
    if id is not None:
        return await Certificate.get_or_none(id=id)
    assert fingerprint is not None
    return await Certificate.get_or_none(fingerprint_sha256=normalise_fingerprint(fingerprint))


# --- hosts ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HostQuery:
    search: str | None = None
    certificate_id: int | None = None


HOST_ORDER = Order(("hostname", "id"))


def hosts_queryset(query: HostQuery) -> QuerySet[Host]:
    qs = Host.all()
    if query.search:
        qs = qs.filter(hostname__icontains=query.search.strip())
    if query.certificate_id is not None:
        places = CertificateLocation.filter(certificate_id=query.certificate_id, removed_at__isnull=True)
        qs = qs.filter(id__in=Subquery(places.values("host_id")))
    return qs


async def list_hosts(query: HostQuery, first: int | None = None, after: str | None = None) -> Page[Host]:
    return await keyset_page(hosts_queryset(query), HOST_ORDER, first, after)


async def get_host(id: int | None = None, hostname: str | None = None) -> Host | None:
    if id is not None:
        return await Host.get_or_none(id=id)
    assert hostname is not None
    return await Host.get_or_none(hostname=hostname.strip().lower())


# --- events ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EventQuery:
    types: tuple[EventType, ...] | None = None
    certificate_id: int | None = None
    host_id: int | None = None
    tracked_source_id: int | None = None
    since: dt.datetime | None = None


EVENT_ORDER = Order(("id",), descending=True)


def events_queryset(query: EventQuery) -> QuerySet[CertificateEvent]:
    qs = CertificateEvent.all()
    if query.types:
        qs = qs.filter(type__in=[t.value for t in query.types])
    if query.certificate_id is not None:
        qs = qs.filter(certificate_id=query.certificate_id)
    if query.host_id is not None:
        qs = qs.filter(host_id=query.host_id)
    if query.tracked_source_id is not None:
        qs = qs.filter(tracked_source_id=query.tracked_source_id)
    if query.since is not None:
        qs = qs.filter(occurred_at__gte=query.since)
    return qs


async def get_event(id: int) -> CertificateEvent | None:
    return await CertificateEvent.get_or_none(id=id)


async def list_events(query: EventQuery, first: int | None = None, after: str | None = None) -> Page[CertificateEvent]:
    """Newest first."""
    return await keyset_page(events_queryset(query), EVENT_ORDER, first, after)


