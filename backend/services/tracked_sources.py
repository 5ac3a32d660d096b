"""Tracked sources: URLs re-fetched on a schedule and uploads kept as expiry reminders.

- :func:`track_url` fetches once (a failure is a typed error and stores
  nothing), then stores the leaf and a URL source in one transaction. A source
  is identified by (scheme, IDNA host, port, serverName): tracking a tracked
  identity returns it (``already_tracked``), tracking an untracked one
  reactivates it, history kept.
- :func:`import_certificate` makes an UPLOAD source, or re-imports into one,
  applying the renewal rule (:mod:`backend.services.renewal`).
- :func:`untrack` stops refreshing; the certificate stops being current unless
  it is present elsewhere; UNTRACKED is recorded.
- :func:`put_certificate` is the one way a source changes certificate (used
  here and by :mod:`backend.services.refresh`): the renewal rule decides
  between RENEWED / EXPIRY_CHANGED (``renewedFrom`` linked) and a replacement
  (UNTRACKED on the old one, IMPORTED on the new one).

Every change runs in one transaction and records its events there; the
presence counters (``live_sources``, ``is_current``) are recounted by
:func:`backend.services.certificate_rows.refresh_presence`. Event details are
documented in ``docs/checker.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from tortoise.queryset import QuerySet

from backend import chain, clock, outbound, x509
from backend.db import transaction
from backend.endpoints import Endpoint, parse
from backend.errors import BadUserInput, NotFound
from backend.models import Certificate, EventType, RefreshInterval, SourceKind, TrackedSource
from backend.services import bulk, certificate_rows, checker, renewal
from backend.services.events import NewEvent, record
from backend.services.pagination import Order, Page, check_first, decode_cursor, encode_cursor, keyset_page

#: Why a certificate became a source's current one (IMPORTED ``reason``) or left it (UNTRACKED ``reason``).
NEW = "NEW"
REACTIVATED = "REACTIVATED"
REPLACED = "REPLACED"
UNTRACKED = "UNTRACKED"

SOURCE_ORDER = Order(("id",))
_json = TrackedSource._meta.fields_map["warnings"].encoder

SOURCE_TABLE = bulk.Table(
    "tracked_source",
    (
        ("kind", "text"), ("url", "text"), ("server_name", "text"), ("identity", "text"), ("name", "text"),
        ("note", "text"), ("refresh_interval", "text"), ("certificate_id", "int4"), ("warnings", "jsonb"),
        ("last_refreshed_at", "timestamptz"), ("last_attempt_at", "timestamptz"), ("next_refresh_at", "timestamptz"),
        ("consecutive_failures", "int4"), ("created_at", "timestamptz"),
    ),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Tracked:
    source: TrackedSource
    certificate: Certificate | None
    already_tracked: bool = False


def _clean(text: str | None, limit: int, field: str) -> str | None:
    if text is None:
        return None
    text = text.strip()
    if len(text) > limit:
        raise BadUserInput(f"{field} is limited to {limit} characters.")
    return text or None


def source_details(source: Any) -> dict[str, Any]:
    kind = getattr(source.kind, "value", source.kind)
    return {"kind": kind, "url": source.url, "serverName": source.server_name}


async def _lock(source_id: int) -> TrackedSource | None:
    """The source row, locked until the transaction ends (PostgreSQL; SQLite has one writer)."""
    return await TrackedSource.filter(id=source_id).select_for_update().first()


async def _mark_imported(conn: Any, certificate_id: int) -> None:
    await bulk.execute(conn, "UPDATE certificate SET imported = ? WHERE id = ? AND imported = ?", [True, certificate_id, False])


async def put_certificate(
    conn: Any,
    source: TrackedSource,
    new: x509.CertificateDescription,
    *,
    now: dt.datetime,
    events: list[NewEvent],
    reason: str = NEW,
) -> int:
    """Make ``new`` the current certificate of ``source`` (locked, in a transaction).

    Writes the source's ``certificate_id`` and ``untracked_at`` (a reactivated
    source counts as live), recounts presence, appends the events to
    ``events`` and returns the new certificate id. The caller saves the rest of
    the source row.
    """
    stored = await certificate_rows.store(conn, [new], now, imported=True)
    new_id = stored.ids[new.fingerprint_sha256]
    old_id = source.certificate_id
    if old_id == new_id:
        if reason == REACTIVATED:
            details = {**source_details(source), "reason": REACTIVATED, "previousFingerprint": None}
            events.append(NewEvent(EventType.IMPORTED, new_id, tracked_source_id=source.id, details=details))
            await TrackedSource.filter(id=source.id).update(untracked_at=source.untracked_at)
            await certificate_rows.refresh_presence(conn, {new_id})
            await _mark_imported(conn, new_id)
        return new_id
    old = await Certificate.get_or_none(id=old_id) if old_id is not None else None
    if old is None:
        events.append(NewEvent(EventType.IMPORTED, new_id, tracked_source_id=source.id,
                               details={**source_details(source), "reason": reason, "previousFingerprint": None}))  # fmt: skip
    else:
        decision = renewal.decide(renewal.Facts.of(old), renewal.Facts.of(new))
        if reason == REACTIVATED:
            events.append(NewEvent(EventType.IMPORTED, new_id, tracked_source_id=source.id,
                                   details={**source_details(source), "reason": REACTIVATED,
                                            "previousFingerprint": old.fingerprint_sha256}))  # fmt: skip
        elif decision.same_certificate:
            assert decision.event_type is not None
            events.append(NewEvent(decision.event_type, new_id, tracked_source_id=source.id, details=decision.details))
        else:
            events.append(NewEvent(EventType.UNTRACKED, old.id, tracked_source_id=source.id,
                                   details={"reason": REPLACED, "replacedBy": new.fingerprint_sha256}))  # fmt: skip
            events.append(NewEvent(EventType.IMPORTED, new_id, tracked_source_id=source.id,
                                   details={**source_details(source), "reason": REPLACED,
                                            "previousFingerprint": old.fingerprint_sha256}))  # fmt: skip
        if decision.same_certificate:
            await certificate_rows.link_renewals(conn, {new_id: old.id})
    source.certificate_id = new_id
    await TrackedSource.filter(id=source.id).update(certificate_id=new_id, untracked_at=source.untracked_at)
    await certificate_rows.refresh_presence(conn, {new_id} | ({old_id} if old_id is not None else set()))
    await _mark_imported(conn, new_id)
    return new_id


class _LostRace(Exception):
    """Another call tracked the same identity first: roll back, answer with its source."""


async def track_url(
    url: str,
    *,
    server_name: str | None = None,
    interval: RefreshInterval = RefreshInterval.HOURS_1,
    name: str | None = None,
    note: str | None = None,
    settings: object,
    actor: str = "system",
    resolver: outbound.Resolver | None = None,
) -> Tracked:
    endpoint = parse(url, server_name)
    name = _clean(name, 255, "name")
    note = _clean(note, 4000, "note")
    interval = RefreshInterval(interval)
    existing = await TrackedSource.get_or_none(identity=endpoint.identity)
    if existing is not None and existing.untracked_at is None:
        return await _answer(existing, already=True)
    inspection = await checker.fetch_endpoint(endpoint, settings=settings, resolver=resolver)
    try:
        source_id = await _store_tracked(endpoint, inspection, interval, name, note, actor)
    except _LostRace:
        winner = await TrackedSource.get(identity=endpoint.identity)
        return await _answer(winner, already=True)
    source = await TrackedSource.get(id=source_id)
    await _evaluate_alerts(source, ())
    return await _answer(source, already=False)


async def _store_tracked(
    endpoint: Endpoint, inspection: checker.Inspection, interval: RefreshInterval,
    name: str | None, note: str | None, actor: str,
) -> int:  # fmt: skip
    now = clock.now()
    events: list[NewEvent] = []
    warnings = [w.as_dict() for w in inspection.verdict.lasting]
    async with transaction() as conn:
        existing = await TrackedSource.filter(identity=endpoint.identity).select_for_update().first()
        if existing is not None:
            if existing.untracked_at is None:
                raise _LostRace()
            existing.untracked_at = None
            existing.refresh_interval = interval
            existing.name = name if name is not None else existing.name
            existing.note = note if note is not None else existing.note
            await put_certificate(conn, existing, inspection.leaf, now=now, events=events, reason=REACTIVATED)
            _succeeded(existing, warnings, now)
            await existing.save()
            await record(conn, events, actor=actor, now=now)
            return existing.id
        stored = await certificate_rows.store(conn, [inspection.leaf], now, imported=True)
        certificate_id = stored.ids[inspection.leaf.fingerprint_sha256]
        row = (
            SourceKind.URL.value, endpoint.url, endpoint.server_name, endpoint.identity, name, note, interval.value,
            certificate_id, _json(warnings), now, now, now + interval.delta, 0, now,
        )
        inserted = await bulk.insert(conn, SOURCE_TABLE, [row], returning=("id",), conflict='"identity"')
        if not inserted:
            raise _LostRace()
        source_id = inserted[0]["id"]
        await certificate_rows.refresh_presence(conn, {certificate_id})
        await _mark_imported(conn, certificate_id)
        details = {"kind": SourceKind.URL.value, "url": endpoint.url, "serverName": endpoint.server_name,
                   "reason": NEW, "previousFingerprint": None}  # fmt: skip
        await record(conn, [NewEvent(EventType.IMPORTED, certificate_id, tracked_source_id=source_id, details=details)],
                     actor=actor, now=now)  # fmt: skip
        return source_id


def _succeeded(source: TrackedSource, warnings: list[dict], now: dt.datetime) -> None:
    """A successful fetch (or upload): the failure state is cleared, the next refresh planned."""
    source.warnings = warnings
    source.last_refreshed_at = now
    source.last_attempt_at = now
    source.last_error = None
    source.last_error_code = None
    source.consecutive_failures = 0
    source.failing_since = None
    if source.kind == SourceKind.URL and source.untracked_at is None and source.refresh_interval:
        source.next_refresh_at = now + RefreshInterval(source.refresh_interval).delta
    else:
        source.next_refresh_at = None


async def _answer(source: TrackedSource, *, already: bool) -> Tracked:
    certificate = await Certificate.get_or_none(id=source.certificate_id) if source.certificate_id else None
    return Tracked(source, certificate, already)


# --- uploads ----------------------------------------------------------------------------------


async def import_certificate(
    data: str,
    *,
    password: str | None = None,
    name: str | None = None,
    note: str | None = None,
    tracked_source_id: int | None = None,
    settings: object,
    actor: str = "system",
) -> Tracked:
    inspection = checker.inspect_data(data, password, settings=settings)
    name = _clean(name, 255, "name")
    note = _clean(note, 4000, "note")
    warnings = [w.as_dict() for w in inspection.verdict.lasting]
    now = clock.now()
    events: list[NewEvent] = []
    previous: int | None = None
    async with transaction() as conn:
        if tracked_source_id is None:
            source = await TrackedSource.create(
                kind=SourceKind.UPLOAD, name=name or inspection.leaf.common_name, note=note, warnings=warnings,
                last_refreshed_at=now, last_attempt_at=now, created_at=now,
            )
            await put_certificate(conn, source, inspection.leaf, now=now, events=events, reason=NEW)
        else:
            source = await _lock(tracked_source_id)
            if source is None:
                raise NotFound("No tracked source with this id.")
            if source.kind != SourceKind.UPLOAD:
                raise BadUserInput("This source is a URL: it is refreshed from its URL, not re-imported.")
            reason = REACTIVATED if source.untracked_at is not None else NEW
            previous = source.certificate_id
            source.untracked_at = None
            if name is not None:
                source.name = name
            if note is not None:
                source.note = note
            await put_certificate(conn, source, inspection.leaf, now=now, events=events, reason=reason)
            _succeeded(source, warnings, now)
            await source.save()
        await record(conn, events, actor=actor, now=now)
    source = await TrackedSource.get(id=source.id)
    await _evaluate_alerts(source, (previous, *(e.certificate_id for e in events)))
    return await _answer(source, already=False)


# --- untracking ----------------------------------------------------------------------------


async def untrack(source_id: int, *, actor: str = "system") -> TrackedSource:
    now = clock.now()
    async with transaction() as conn:
        source = await _lock(source_id)
        if source is None:
            raise NotFound("No tracked source with this id.")
        if source.untracked_at is not None:
            return source
        source.untracked_at = now
        source.next_refresh_at = None
        await source.save(update_fields=["untracked_at", "next_refresh_at"])
        if source.certificate_id is not None:
            await certificate_rows.refresh_presence(conn, {source.certificate_id})
            await record(conn, [NewEvent(EventType.UNTRACKED, source.certificate_id, tracked_source_id=source.id,
                                         details={"reason": UNTRACKED, "replacedBy": None})],
                         actor=actor, now=now)  # fmt: skip
    await _evaluate_alerts(source, ())
    return source


async def _evaluate_alerts(source: TrackedSource, certificate_ids: Any) -> None:
    """After a track, an import or an untrack committed: the source's alerts and its certificates'."""
    from backend.services import alerts

    await alerts.after_source_change(source.id, {i for i in (source.certificate_id, *certificate_ids) if i is not None})


# --- reading --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceQuery:
    kind: SourceKind | None = None
    failing: bool | None = None
    include_untracked: bool = False


def sources_queryset(query: SourceQuery) -> QuerySet[TrackedSource]:
    qs = TrackedSource.all()
    if not query.include_untracked:
        qs = qs.filter(untracked_at__isnull=True)
    if query.kind is not None:
        qs = qs.filter(kind=query.kind)
    if query.failing is True:
        qs = qs.filter(consecutive_failures__gt=0)
    elif query.failing is False:
        qs = qs.filter(consecutive_failures=0)
    return qs


async def list_sources(query: SourceQuery, first: int | None = None, after: str | None = None) -> Page[TrackedSource]:
    return await keyset_page(sources_queryset(query), SOURCE_ORDER, first, after)


async def get_source(source_id: int) -> TrackedSource | None:
    return await TrackedSource.get_or_none(id=source_id)


async def find_tracking(*, identity: str | None = None, fingerprint: str | None = None) -> TrackedSource | None:
    """The active source with this identity, or (for uploads) whose current certificate this is."""
    if identity is not None:
        return await TrackedSource.get_or_none(identity=identity, untracked_at__isnull=True)
    if fingerprint is not None:
        return await (
            TrackedSource.filter(untracked_at__isnull=True, certificate__fingerprint_sha256=fingerprint)
            .order_by("id")
            .first()
        )
    return None


def current_warnings(source: TrackedSource, certificate: Any | None, now: dt.datetime | None = None) -> list[chain.Warning]:
    """The warnings of the last fetch, with the leaf's expiry warnings as of now."""
    stored = [chain.Warning.from_dict(w) for w in (source.warnings or []) if isinstance(w, dict) and w.get("code")]
    fresh = chain.time_warnings(certificate, now or clock.now()) if certificate is not None else []
    return fresh + stored


_HISTORY_TYPES = (EventType.IMPORTED.value, EventType.RENEWED.value, EventType.EXPIRY_CHANGED.value)


async def history(source_id: int, first: int | None = None, after: str | None = None) -> Page[Certificate]:
    """Every certificate the source has had, newest first (by when it became current)."""
    limit = check_first(first)
    conn = _connection()
    types = ",".join("?" * len(_HISTORY_TYPES))
    having, params = "", [source_id, *_HISTORY_TYPES]
    if after:
        having = " HAVING MAX(id) < ?"
        params.append(int(decode_cursor(after, 1)[0]))
    rows = await bulk.fetch(
        conn,
        f"SELECT certificate_id, MAX(id) AS at FROM certificate_event WHERE tracked_source_id = ? AND type IN ({types})"
        f" GROUP BY certificate_id{having} ORDER BY at DESC LIMIT ?",
        [*params, limit + 1],
    )
    has_next = len(rows) > limit
    rows = rows[:limit]
    by_id = {c.id: c for c in await Certificate.filter(id__in=[r["certificate_id"] for r in rows])}
    items = [by_id[r["certificate_id"]] for r in rows if r["certificate_id"] in by_id]
    cursors = [encode_cursor([int(r["at"])]) for r in rows if r["certificate_id"] in by_id]
    return Page(items=items, cursors=cursors, has_next=has_next)


async def count_history(source_id: int) -> int:
    types = ",".join("?" * len(_HISTORY_TYPES))
    rows = await bulk.fetch(
        _connection(),
        f"SELECT COUNT(DISTINCT certificate_id) AS n FROM certificate_event WHERE tracked_source_id = ? AND type IN ({types})",
        [source_id, *_HISTORY_TYPES],
    )
    return int(rows[0]["n"]) if rows else 0


def _connection() -> Any:
    from tortoise import connections

    return connections.get("default")




# --- many URLs at once (ctops import-urls) -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class UrlLine:
    line: int
    url: str
    server_name: str | None = None
    problem: str | None = None
    """Why the line itself is unusable (it is reported as failed)."""


@dataclasses.dataclass(frozen=True)
class UrlOutcome:
    entry: UrlLine
    status: str
    """TRACKED, ALREADY_TRACKED or FAILED."""
    reason: str | None = None
    code: str | None = None


def parse_url_list(text: str) -> list[UrlLine]:
    """One ``URL [serverName]`` per line; blank lines and ``#`` comments are skipped."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()  # a comment: `#` at the start or after a space
        if not line:
            continue
        fields = line.split()
        if len(fields) > 2:
            entries.append(UrlLine(number, fields[0], problem="expected `URL [serverName]`"))
        else:
            entries.append(UrlLine(number, fields[0], fields[1] if len(fields) == 2 else None))
    return entries


async def track_many(
    entries: list[UrlLine],
    *,
    interval: RefreshInterval,
    concurrency: int,
    settings: object,
    actor: str = "system",
    progress: Any = None,
) -> list[UrlOutcome]:
    """Track each entry (``concurrency`` fetches at a time); ``progress(done, total)`` after each."""
    import asyncio

    from backend.errors import CtopsError

    limit = asyncio.Semaphore(max(1, concurrency))
    outcomes: list[UrlOutcome | None] = [None] * len(entries)
    done = 0

    async def one(index: int, entry: UrlLine) -> None:
        nonlocal done
        if entry.problem is not None:
            outcome = UrlOutcome(entry, "FAILED", entry.problem, "INVALID_URL")
        else:
            async with limit:
                try:
                    tracked = await track_url(entry.url, server_name=entry.server_name, interval=interval,
                                              settings=settings, actor=actor)  # fmt: skip
                    outcome = UrlOutcome(entry, "ALREADY_TRACKED" if tracked.already_tracked else "TRACKED")
                except CtopsError as exc:
                    outcome = UrlOutcome(entry, "FAILED", str(exc), exc.code)
        outcomes[index] = outcome
        done += 1
        if progress is not None:
            progress(done, len(entries))

    await asyncio.gather(*(one(i, e) for i, e in enumerate(entries)))
    return [o for o in outcomes if o is not None]
