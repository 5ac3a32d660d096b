"""Agent reports: what a host holds, recorded once, in one transaction per part.

Hash first, touch the database a constant number of times per report:

1. Decode and SHA-256 every item (cheap); reject bad items by position.
2. In one transaction: stamp the host (its row lock orders reports of one host;
   a report older than the last applied scan matches nothing and is *stale*),
   record the part in ``scan_part`` (unique: a replay finds it and is rolled
   back whole), look up which fingerprints are known, parse only the unknown
   ones and insert them with conflict-ignore, read this host's places, diff in
   memory, then write locations, presence counters and events in bulk.
3. After commit the event ids go out on the ``events`` topic.

An unchanged report costs six statements whatever its size and the size of the
inventory. The diff, per report item, in this order:

- same place, same certificate: unchanged (``last_seen_at`` bumped);
- same file (or endpoint), same certificate, another index: a bundle gained or
  lost an entry; the index is updated, no event;
- same place, another certificate: :mod:`backend.services.renewal` decides
  (RENEWED / EXPIRY_CHANGED, or a replacement: REMOVED_FROM_HOST + DISCOVERED);
- otherwise a new place (DISCOVERED) or one seen before (RESTORED).

Places the host had but the scan did not mention are removed only when the
last part of a complete scan is recorded (and every part of it is).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from backend import clock, x509
from backend.db import transaction
from backend.errors import BadUserInput, Forbidden, NotFound, TooLarge
from backend.models import Certificate, EventType, Host, LocationKind
from backend.models.location import place_key
from backend.services import alerts, bulk, certificate_rows, renewal
from backend.services.events import MISSING, REPLACED, NewEvent, place_details, record

MAX_ITEMS_PER_PART = 10_000
MAX_DER_BYTES = x509.MAX_CERTIFICATE_BYTES
MAX_SCAN_ERRORS = 1_000
MAX_INTERVAL_SECONDS = 30 * 24 * 3600

_FILE = LocationKind.FILE.value
_PORT = LocationKind.PORT.value
_json = Host._meta.fields_map["scan_errors"].encoder

LOCATION_TABLE = bulk.Table(
    "certificate_location",
    (
        ("certificate_id", "int4"), ("host_id", "int4"), ("kind", "text"), ("place", "text"), ("path", "text"),
        ("link_paths", "jsonb"), ("index", "int4"), ("alias", "text"), ("address", "text"), ("port", "int4"),
        ("server_name", "text"), ("first_seen_at", "timestamptz"), ("last_seen_at", "timestamptz"),
        ("removed_at", "timestamptz"),
    ),
)  # fmt: skip


MOVED_TABLE = bulk.Table(
    "certificate_location", (("id", "int4"), ("place", "text"), ("index", "int4"), ("link_paths", "jsonb"))
)


# --- what a report is ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class ReportItem:
    """One certificate at one place. Transports may pass any object with these
    attributes (the GraphQL input type has exactly these)."""

    kind: str
    der: str
    """Base64 of the DER certificate."""
    path: str | None = None
    link_paths: Sequence[str] | None = None
    index: int = 0
    alias: str | None = None
    address: str | None = None
    port: int | None = None
    server_name: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ScanError:
    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Report:
    scan_id: str
    scanned_at: dt.datetime
    complete: bool
    hostname: str
    items: Sequence[Any]
    part: int = 0
    last_part: bool = True
    agent_version: str | None = None
    os: str | None = None
    interval_seconds: int | None = None
    errors: Sequence[Any] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    index: int
    reason: str


@dataclasses.dataclass(frozen=True)
class ReportResult:
    accepted: int
    new_certificates: int
    events_recorded: int
    stale: bool
    rejected: list[Rejected]
    replayed: bool = False


# --- step 1: decode and hash -----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Item:
    position: int
    kind: str
    place: str
    container: tuple | None
    """Same file (keystore entry) / same endpoint, whatever the index."""
    fingerprint: str
    der: bytes
    path: str | None
    link_paths: list[str]
    index: int
    alias: str | None
    address: str | None
    port: int | None
    server_name: str | None
    certificate_id: int = 0


def _text(value: Any, limit: int, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    if len(value) > limit:
        raise ValueError(f"{what} is longer than {limit} characters")
    return value


def _decode(position: int, raw: Any) -> _Item:
    """One report item, checked and hashed; ValueError(reason) when it is bad."""
    kind = raw.kind
    kind = getattr(kind, "value", kind)
    if kind not in (_FILE, _PORT):
        raise ValueError("kind must be FILE or PORT")
    try:
        der = base64.b64decode(raw.der, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("der is not base64") from None
    if not der:
        raise ValueError("der is empty")
    if len(der) > MAX_DER_BYTES:
        raise ValueError(f"der is larger than {MAX_DER_BYTES // 1024} KiB")
    index = raw.index if raw.index is not None else 0
    if index < 0:
        raise ValueError("index must not be negative")
    path = _text(raw.path, 4096, "path")
    alias = _text(raw.alias, 512, "alias")
    link_paths = [_text(p, 4096, "linkPaths entry") for p in (raw.link_paths or ())]
    if kind == _FILE:
        if not path:
            raise ValueError("a FILE item needs a path")
        place = place_key(_FILE, path=path, index=index, alias=alias)
        container = (_FILE, path, alias)
        address = server_name = port = None
    else:
        port = raw.port
        if port is None or not 0 < port < 65536:
            raise ValueError("a PORT item needs a port (1-65535)")
        address = _text(raw.address, 64, "address")
        server_name = _text(raw.server_name, 255, "serverName")
        place = place_key(_PORT, address=address, port=port, server_name=server_name, index=index)
        container = (_PORT, address, port, server_name)
        path = alias = None
        link_paths = []
    return _Item(
        position, kind, place, container, hashlib.sha256(der).hexdigest(), der, path, link_paths, index, alias,
        address, port, server_name,
    )


def decode_items(items: Sequence[Any]) -> tuple[list[_Item], list[Rejected]]:
    """Valid items (first of each place) and rejections, by position in ``items``."""
    good: list[_Item] = []
    rejected: list[Rejected] = []
    first_at: dict[str, int] = {}
    for position, raw in enumerate(items):
        try:
            item = _decode(position, raw)
        except ValueError as exc:
            rejected.append(Rejected(position, str(exc)))
            continue
        earlier = first_at.setdefault(item.place, position)
        if earlier != position:
            rejected.append(Rejected(position, f"same place as item {earlier}"))
            continue
        good.append(item)
    return good, rejected


# --- the report --------------------------------------------------------------------------------


class _Replay(Exception):
    """This part was recorded already: roll back the host stamp, answer calmly."""


def _check(report: Report) -> None:
    if len(report.items) > MAX_ITEMS_PER_PART:
        raise TooLarge(
            f"A report part holds at most {MAX_ITEMS_PER_PART} items; send larger scans in parts "
            f"(same scanId, part 0, 1, ...).",
            limit=MAX_ITEMS_PER_PART,
        )
    if not report.scan_id or len(report.scan_id) > 64:
        raise BadUserInput("scanId must be 1 to 64 characters.")
    if report.part is None or report.part < 0:
        raise BadUserInput("part must be 0 or more.")
    if report.interval_seconds is not None and not 0 < report.interval_seconds <= MAX_INTERVAL_SECONDS:
        raise BadUserInput(f"intervalSeconds must be between 1 and {MAX_INTERVAL_SECONDS}.")


def _scan_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    return [{"path": str(e.path)[:4096], "reason": str(e.reason)[:1024]} for e in list(errors)[:MAX_SCAN_ERRORS]]


async def report_certificates(host_id: int, actor: str, report: Report) -> ReportResult:
    """Record one report part for the agent of ``host_id`` (it may report for that host only)."""
    _check(report)
    items, rejected = decode_items(report.items)
    now = clock.now()
    scanned_at = clock.as_utc(report.scanned_at)  # a naive instant is taken as UTC
    try:
        async with transaction() as conn:
            stamped = await _stamp_host(conn, host_id, report, scanned_at, now)
            if not stamped:
                await _refuse_or_stale(host_id, report)
                return ReportResult(0, 0, 0, True, rejected)
            if not await _record_part(conn, host_id, report, scanned_at, now):
                raise _Replay
            run = _Run(conn, host_id, actor, report, now, items, rejected)
            result = await run.apply()
    except _Replay:
        return ReportResult(len(items), 0, 0, False, rejected, replayed=True)
    # After commit, for what the report touched: its host reported, and the
    # certificates whose places changed (an unchanged report: one indexed query).
    await alerts.after_report(host_id, run.changed, host_alerting=bool(stamped["alerting"]))
    return result


async def _stamp_host(
    conn: Any, host_id: int, report: Report, scanned_at: dt.datetime, now: dt.datetime
) -> dict[str, Any] | None:
    """Stamp the host unless the report is stale (or not its own); locks the host row.

    The row comes back with ``alerting``: whether the host has an open alert (a
    HOST_STALE alert recovers now), so an unchanged report needs no statement
    more for alerts."""
    # The newest applied scan never lies ahead of the server's clock, so an agent
    # whose clock ran fast once cannot make every later report stale.
    applied = min(scanned_at, now)
    sets = [
        "last_report_at = ?",
        "last_scanned_at = CASE WHEN last_scanned_at IS NULL OR last_scanned_at < ? THEN ? ELSE last_scanned_at END",
    ]
    params: list[Any] = [now, applied, applied]
    for column, value in (("os", report.os and report.os[:255]),
                          ("agent_version", report.agent_version and report.agent_version[:64]),
                          ("interval_seconds", report.interval_seconds)):  # fmt: skip
        if value is not None:
            sets.append(f"{column} = ?")
            params.append(value)
    if report.last_part:
        sets.append("scan_errors = ?")
        params.append(_json(_scan_errors(report.errors or ())))
    params += [host_id, report.hostname.strip().lower(), scanned_at]
    rows = await bulk.fetch(
        conn,
        f"UPDATE host SET {', '.join(sets)} WHERE id = ? AND hostname = ? AND retired_at IS NULL"
        " AND (last_scanned_at IS NULL OR last_scanned_at <= ?) RETURNING id,"
        " EXISTS (SELECT 1 FROM alert a WHERE a.host_id = host.id AND a.open_key IS NOT NULL) AS alerting",
        params,
    )
    return rows[0] if rows else None


async def _refuse_or_stale(host_id: int, report: Report) -> None:
    """Why the host was not stamped: raise for a refusal; return for a stale report."""
    host = await Host.get_or_none(id=host_id)
    if host is None:
        raise NotFound("The host of this agent token no longer exists.")
    if host.hostname != report.hostname.strip().lower():
        raise Forbidden(f"This agent token reports for {host.hostname!r} only.")
    if host.retired_at is not None:
        raise Forbidden(f"Host {host.hostname!r} is retired: enrol it again to report.")


async def _record_part(conn: Any, host_id: int, report: Report, scanned_at: dt.datetime, now: dt.datetime) -> bool:
    rows = await bulk.fetch(
        conn,
        "INSERT INTO scan_part (host_id, scan_id, part, scanned_at, recorded_at) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (host_id, scan_id, part) DO NOTHING RETURNING id",
        [host_id, report.scan_id, report.part, scanned_at, now],
    )
    return bool(rows)


@dataclasses.dataclass(slots=True)
class _Location:
    id: int
    certificate_id: int
    place: str
    kind: str
    path: str | None
    index: int
    alias: str | None
    address: str | None
    port: int | None
    server_name: str | None
    link_paths: list[str]
    removed: bool
    last_seen_at: dt.datetime

    @property
    def container(self) -> tuple | None:
        if self.kind == _FILE:
            return (_FILE, self.path, self.alias)
        return (_PORT, self.address, self.port, self.server_name)


class _Run:
    """Applying one report part inside its transaction."""

    def __init__(self, conn: Any, host_id: int, actor: str, report: Report, now: dt.datetime,
                 items: list[_Item], rejected: list[Rejected]) -> None:  # fmt: skip
        self.conn = conn
        self.host_id = host_id
        self.actor = actor
        self.report = report
        self.now = now
        self.items = items
        self.rejected = rejected
        self.descriptions: dict[str, x509.CertificateDescription] = {}
        self.inserted: frozenset[str] = frozenset()
        # What to write.
        self.bump: list[int] = []
        self.rewrites: list[tuple[_Location, _Item]] = []  # index / place / linkPaths changed
        self.restores: list[int] = []
        self.removals: list[int] = []
        self.new_locations: list[_Item] = []
        self.events: list[NewEvent] = []
        self.pending_events: list[tuple[_Item, EventType, dict]] = []  # for locations inserted later
        self.changed: set[int] = set()
        self.renewals: dict[int, int] = {}

    async def apply(self) -> ReportResult:
        await self._identify()
        locations = await self._locations()
        await self._diff(locations)
        await self._write()
        return ReportResult(len(self.items), len(self.inserted), len(self.events), False, self.rejected)

    # -- certificates ---------------------------------------------------------

    async def _identify(self) -> None:
        """Certificate ids for every item; the unknown ones parsed and stored."""
        fingerprints = list({item.fingerprint: None for item in self.items})
        known = await certificate_rows.ids_of(self.conn, fingerprints)
        unknown: dict[str, bytes] = {}
        for item in self.items:
            if item.fingerprint not in known:
                unknown.setdefault(item.fingerprint, item.der)
        bad: dict[str, str] = {}
        for fp, der in unknown.items():
            try:
                self.descriptions[fp] = x509.describe(der)
            except x509.CertificateParseError as exc:
                bad[fp] = f"not a certificate: {exc}"
        if bad:
            self.rejected.extend(Rejected(i.position, bad[i.fingerprint]) for i in self.items if i.fingerprint in bad)
            self.rejected.sort(key=lambda r: r.index)
            self.items = [i for i in self.items if i.fingerprint not in bad]
        if self.descriptions:
            places: dict[str, int] = defaultdict(int)
            for item in self.items:  # a new certificate can only get new places: one per item
                places[item.fingerprint] += 1
            stored = await certificate_rows.store(
                self.conn, list(self.descriptions.values()), self.now, seen_by_agent=True, places=places
            )
            known.update(stored.ids)
            self.inserted = stored.inserted
        for item in self.items:
            item.certificate_id = known[item.fingerprint]

    async def _facts(self, ids: set[int]) -> dict[int, renewal.Facts]:
        """What the renewal rule reads of these certificates (parsed now, or stored)."""
        facts: dict[int, renewal.Facts] = {}
        for item in self.items:
            if item.certificate_id in ids and item.fingerprint in self.descriptions:
                facts[item.certificate_id] = renewal.Facts.of(self.descriptions[item.fingerprint])
        missing = ids - facts.keys()
        if missing:
            rows = await Certificate.filter(id__in=sorted(missing)).only(
                "id", "fingerprint_sha256", "common_name", "sans", "not_after", "spki_sha256"
            )
            facts.update({row.id: renewal.Facts.of(row) for row in rows})
        return facts

    # -- places -----------------------------------------------------------------

    async def _locations(self) -> list[_Location]:
        """This host's live places, and its removed ones holding a reported certificate."""
        ids = sorted({item.certificate_id for item in self.items})
        removed_clause = "l.removed_at IS NULL"
        params: list[Any] = [self.host_id]
        if ids:
            where, extra = bulk.in_ids(self.conn, "l.certificate_id", ids)
            removed_clause = f"(l.removed_at IS NULL OR {where})"
            params += extra
        rows = await bulk.fetch(
            self.conn,
            'SELECT l.id, l.certificate_id, l.place, l.kind, l.path, l."index", l.alias, l.address, l.port,'
            " l.server_name, l.link_paths, l.removed_at, l.last_seen_at FROM certificate_location l"
            f" WHERE l.host_id = ? AND {removed_clause} ORDER BY l.id",
            params,
        )
        return [
            _Location(
                r["id"], r["certificate_id"], r["place"], r["kind"], r["path"], r["index"], r["alias"], r["address"],
                r["port"], r["server_name"], bulk.as_json(r["link_paths"]) or [], r["removed_at"] is not None,
                bulk.as_datetime(r["last_seen_at"]),
            )
            for r in rows
        ]  # fmt: skip

    async def _diff(self, locations: list[_Location]) -> None:
        live_exact: dict[tuple[str, int], _Location] = {}
        live_moved: dict[tuple, list[_Location]] = defaultdict(list)
        live_at: dict[str, list[_Location]] = defaultdict(list)
        gone_exact: dict[tuple[str, int], _Location] = {}
        gone_moved: dict[tuple, _Location] = {}
        for loc in locations:  # by id: later rows win
            if loc.removed:
                gone_exact[(loc.place, loc.certificate_id)] = loc
                if loc.container is not None:
                    gone_moved[(loc.container, loc.certificate_id)] = loc
            else:
                live_exact.setdefault((loc.place, loc.certificate_id), loc)
                if loc.container is not None:
                    live_moved[(loc.container, loc.certificate_id)].append(loc)
                live_at[loc.place].append(loc)
        claimed: set[int] = set()

        # 1. unchanged
        pending: list[_Item] = []
        for item in self.items:
            loc = live_exact.get((item.place, item.certificate_id))
            if loc is not None and loc.id not in claimed:
                claimed.add(loc.id)
                self.bump.append(loc.id)
                if loc.index != item.index or loc.link_paths != item.link_paths:
                    self.rewrites.append((loc, item))
            else:
                pending.append(item)

        # 2. the same certificate in the same file or endpoint at another index
        still: list[_Item] = []
        for item in pending:
            moved = next(
                (loc for loc in live_moved.get((item.container, item.certificate_id), ()) if loc.id not in claimed),
                None,
            ) if item.container is not None else None  # fmt: skip
            if moved is not None:
                claimed.add(moved.id)
                self.bump.append(moved.id)
                self.rewrites.append((moved, item))
            else:
                still.append(item)

        # 3. the same place holds another certificate: the renewal rule
        changes: list[tuple[_Location, _Item]] = []
        fresh: list[_Item] = []
        for item in still:
            rule_applies = item.kind == _FILE or item.index == 0
            previous = [loc for loc in live_at.get(item.place, ()) if loc.id not in claimed] if rule_applies else []
            if previous:
                old = previous[-1]
                claimed.add(old.id)
                changes.append((old, item))
            else:
                fresh.append(item)
        if changes:
            facts = await self._facts({old.certificate_id for old, _ in changes} | {i.certificate_id for _, i in changes})
            for old, item in changes:
                decision = renewal.decide(facts[old.certificate_id], facts[item.certificate_id])
                self._remove(old)
                if decision.same_certificate:
                    self.renewals[item.certificate_id] = old.certificate_id
                    self._place(item, decision.event_type, decision.details, gone_exact, gone_moved)
                else:
                    self.events.append(NewEvent(
                        EventType.REMOVED_FROM_HOST, old.certificate_id, self.host_id, old.id,
                        details={**place_details(old), "reason": REPLACED, "replacedBy": item.fingerprint},
                    ))  # fmt: skip
                    self._place(item, None, {}, gone_exact, gone_moved)

        # 4. new places, or places seen before
        for item in fresh:
            self._place(item, None, {}, gone_exact, gone_moved)

        # 5. places the scan did not mention. A file the agent could not read
        # this time (it is in the report's errors) is not gone: keep its places.
        if self.report.complete and self.report.last_part:
            unreadable = {str(e.path) for e in self.report.errors or ()}
            unseen = [
                loc for loc in locations
                if not loc.removed and loc.id not in claimed and (loc.path is None or loc.path not in unreadable)
            ]
            if unseen and self.report.part > 0:
                unseen = await self._unseen_by_earlier_parts(unseen)
            for loc in unseen:
                self._remove(loc)
                self.events.append(NewEvent(
                    EventType.REMOVED_FROM_HOST, loc.certificate_id, self.host_id, loc.id,
                    details={**place_details(loc), "reason": MISSING, "replacedBy": None},
                ))  # fmt: skip

    def _remove(self, loc: _Location) -> None:
        self.removals.append(loc.id)
        self.changed.add(loc.certificate_id)

    def _place(self, item: _Item, event: EventType | None, details: dict, gone_exact: dict, gone_moved: dict) -> None:
        """Put ``item``'s certificate at its place: revive the row it had there, or a new row."""
        self.changed.add(item.certificate_id)
        previous = gone_exact.pop((item.place, item.certificate_id), None)
        if previous is None and item.container is not None:
            previous = gone_moved.pop((item.container, item.certificate_id), None)
        if previous is not None:
            self.restores.append(previous.id)
            if previous.place != item.place or previous.link_paths != item.link_paths:
                self.rewrites.append((previous, item))
            self.events.append(NewEvent(
                event or EventType.RESTORED, item.certificate_id, self.host_id, previous.id,
                details=details or place_details(item),
            ))  # fmt: skip
            return
        self.new_locations.append(item)
        self.pending_events.append((item, event or EventType.DISCOVERED, details or place_details(item)))

    async def _unseen_by_earlier_parts(self, unseen: list[_Location]) -> list[_Location]:
        """Of ``unseen``, the places no part of this scan saw; none until every part is in."""
        rows = await bulk.fetch(
            self.conn,
            "SELECT COUNT(*) AS parts, MIN(recorded_at) AS first FROM scan_part WHERE host_id = ? AND scan_id = ?",
            [self.host_id, self.report.scan_id],
        )
        if not rows or int(rows[0]["parts"]) != self.report.part + 1:
            return []
        first = bulk.as_datetime(rows[0]["first"])
        return [loc for loc in unseen if loc.last_seen_at < first]

    # -- writing ------------------------------------------------------------------

    async def _write(self) -> None:
        conn, now = self.conn, self.now
        if self.new_locations:
            rows = [
                (i.certificate_id, self.host_id, i.kind, i.place, i.path, _json(i.link_paths), i.index, i.alias,
                 i.address, i.port, i.server_name, now, now, None)
                for i in self.new_locations
            ]  # fmt: skip
            inserted = await bulk.insert(conn, LOCATION_TABLE, rows, returning=("id", "place"))
            location_ids = {r["place"]: r["id"] for r in inserted}
            for item, event, details in self.pending_events:
                self.events.append(NewEvent(event, item.certificate_id, self.host_id, location_ids[item.place],
                                            details=details))  # fmt: skip
        if self.bump:
            where, params = bulk.in_ids(conn, "id", self.bump)
            await bulk.execute(conn, f"UPDATE certificate_location SET last_seen_at = ? WHERE {where}", [now, *params])
        if self.restores:
            where, params = bulk.in_ids(conn, "id", self.restores)
            await bulk.execute(
                conn, f"UPDATE certificate_location SET removed_at = NULL, last_seen_at = ? WHERE {where}", [now, *params]
            )
        if self.rewrites:  # a bundle gained or lost entries: indexes moved
            await bulk.update(
                conn, MOVED_TABLE, [(loc.id, item.place, item.index, _json(item.link_paths)) for loc, item in self.rewrites]
            )
        if self.removals:
            where, params = bulk.in_ids(conn, "id", self.removals)
            await bulk.execute(conn, f"UPDATE certificate_location SET removed_at = ? WHERE {where}", [now, *params])
        inserted = {item.certificate_id for item in self.items if item.fingerprint in self.inserted}
        if self.changed - inserted:  # rows inserted here were stored with their counts
            await certificate_rows.refresh_presence(conn, self.changed - inserted)
        if self.renewals:
            await certificate_rows.link_renewals(conn, self.renewals)
        await certificate_rows.touch(conn, {item.certificate_id for item in self.items} - inserted, now)
        await record(conn, self.events, actor=self.actor, now=now)
