"""Per-request dataloaders: nested fields cost a constant number of statements
per page, not one per row. Created fresh for every request (and, later, every
subscription event), so nothing is cached across requests.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from strawberry.dataloader import DataLoader

from backend import clock, sql
from backend.services import bulk
from backend.models import Certificate, CertificateLocation, Host, TrackedSource


def _by_key(rows: Iterable[Any], key: str) -> dict[Any, list[Any]]:
    grouped: dict[Any, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[getattr(row, key)].append(row)
    return grouped


async def _certificates(ids: list[int]) -> list[Certificate | None]:
    rows = {c.id: c for c in await Certificate.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def _certificates_by_fingerprint(fingerprints: list[str]) -> list[Certificate | None]:
    rows = {c.fingerprint_sha256: c for c in await Certificate.filter(fingerprint_sha256__in=fingerprints)}
    return [rows.get(f) for f in fingerprints]


async def _locations_by_id(ids: list[int]) -> list[CertificateLocation | None]:
    rows = {r.id: r for r in await CertificateLocation.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def _tracked_sources(ids: list[int]) -> list[TrackedSource | None]:
    rows = {r.id: r for r in await TrackedSource.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


async def _hosts(ids: list[int]) -> list[Host | None]:
    rows = {h.id: h for h in await Host.filter(id__in=ids)}
    return [rows.get(i) for i in ids]


def _locations_loader() -> DataLoader:
    """Key: (certificate id, include removed, first) -> locations, oldest first."""

    async def load(keys: list[tuple[int, bool, int]]) -> list[list[CertificateLocation]]:
        out: dict[tuple[int, bool, int], list[CertificateLocation]] = {}
        for (include_removed, first), group in _group_variants(keys).items():
            ids = sorted({k[0] for k in group})
            where = "" if include_removed else " AND removed_at IS NULL"
            rows = await sql.fetch(
                "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY certificate_id ORDER BY id) AS rn"
                f" FROM certificate_location WHERE certificate_id IN {sql.in_list(ids)}{where}) t WHERE rn <= ?",
                [*ids, first],
            )
            # With their hosts (one JOIN): `location.host` then needs no other load.
            locations = await CertificateLocation.filter(id__in=[r["id"] for r in rows]).select_related("host").order_by("id")
            grouped = _by_key(locations, "certificate_id")
            for cid in ids:
                out[(cid, include_removed, first)] = grouped.get(cid, [])
        return [out[k] for k in keys]

    return DataLoader(load_fn=load)


PLACES_BOUND = 100


_PLACE_COLUMNS = ("id", "certificate_id", "host_id", "kind", "path", "link_paths", "index", "alias", "address", "port",
                  "server_name", "first_seen_at", "last_seen_at", "removed_at")  # fmt: skip
_HOST_COLUMNS = ("id", "hostname", "os", "agent_version", "interval_seconds", "last_report_at", "last_scanned_at",
                 "scan_errors", "retired_at", "created_at")  # fmt: skip
_DATETIMES = {"first_seen_at", "last_seen_at", "removed_at", "last_report_at", "last_scanned_at", "retired_at", "created_at"}
_JSONS = {"link_paths", "scan_errors"}


class Row:
    """A row with attribute access: what the types' ``from_model`` reads, without
    building an ORM model (about 10 us per row, 20 more with select_related)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def _row(raw: dict[str, Any], prefix: str, columns: tuple[str, ...]) -> Row:
    values = {}
    for column in columns:
        value = raw[prefix + column]
        if column in _DATETIMES:
            value = bulk.as_datetime(value)
        elif column in _JSONS:
            value = bulk.as_json(value)
        values[column] = value
    return Row(values)


async def _live_places(ids: list[int]) -> list[list[Row]]:
    """Certificate id -> its first PLACES_BOUND live locations by id, each with its
    host as ``.host``: what `locations`, `hosts` and `location.host` need, in one statement."""
    rows = await sql.fetch(
        "SELECT " + ", ".join(f'l."{c}" AS l_{c}' for c in _PLACE_COLUMNS) + ", "
        + ", ".join(f'h."{c}" AS h_{c}' for c in _HOST_COLUMNS)
        + " FROM (SELECT *, row_number() OVER (PARTITION BY certificate_id ORDER BY id) AS rn"
        f" FROM certificate_location WHERE certificate_id IN {sql.in_list(ids)} AND removed_at IS NULL) l"
        " JOIN host h ON h.id = l.host_id WHERE l.rn <= ? ORDER BY l.id",
        [*ids, PLACES_BOUND],
    )
    hosts: dict[int, Row] = {}
    grouped: dict[int, list[Row]] = defaultdict(list)
    for raw in rows:
        place = _row(raw, "l_", _PLACE_COLUMNS)
        host = hosts.get(place.host_id)
        if host is None:
            host = hosts[place.host_id] = _row(raw, "h_", _HOST_COLUMNS)
        place._host = host
        grouped[place.certificate_id].append(place)
    return [grouped.get(i, []) for i in ids]


def _group_variants(keys: list[tuple]) -> dict[tuple, list[tuple]]:
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    for key in keys:
        groups[key[1:]].append(key)
    return groups


async def _location_counts(keys: list[tuple[int, bool]]) -> list[int]:
    out: dict[tuple[int, bool], int] = {}
    for (include_removed,), group in _group_variants(keys).items():
        ids = sorted({k[0] for k in group})
        where = "" if include_removed else " AND removed_at IS NULL"
        rows = await sql.fetch(
            "SELECT certificate_id, COUNT(*) AS n FROM certificate_location"
            f" WHERE certificate_id IN {sql.in_list(ids)}{where} GROUP BY certificate_id",
            ids,
        )
        counts = {r["certificate_id"]: int(r["n"]) for r in rows}
        for cid in ids:
            out[(cid, include_removed)] = counts.get(cid, 0)
    return [out[k] for k in keys]


def _host_ids_loader() -> DataLoader:
    """Key: (certificate id, first) -> host ids holding it now, by id."""

    async def load(keys: list[tuple[int, int]]) -> list[list[int]]:
        out: dict[tuple[int, int], list[int]] = {}
        for (first,), group in _group_variants(keys).items():
            ids = sorted({k[0] for k in group})
            rows = await sql.fetch(
                "SELECT certificate_id, host_id FROM (SELECT certificate_id, host_id,"
                " row_number() OVER (PARTITION BY certificate_id ORDER BY host_id) AS rn FROM"
                " (SELECT DISTINCT certificate_id, host_id FROM certificate_location"
                f" WHERE certificate_id IN {sql.in_list(ids)} AND removed_at IS NULL) d) t"
                " WHERE rn <= ? ORDER BY certificate_id, host_id",
                [*ids, first],
            )
            grouped: dict[int, list[int]] = defaultdict(list)
            for r in rows:
                grouped[r["certificate_id"]].append(r["host_id"])
            for cid in ids:
                out[(cid, first)] = grouped.get(cid, [])
        return [out[k] for k in keys]

    return DataLoader(load_fn=load)


async def _host_counts(ids: list[int]) -> list[int]:
    rows = await sql.fetch(
        "SELECT certificate_id, COUNT(DISTINCT host_id) AS n FROM certificate_location"
        f" WHERE certificate_id IN {sql.in_list(ids)} AND removed_at IS NULL GROUP BY certificate_id",
        ids,
    )
    counts = {r["certificate_id"]: int(r["n"]) for r in rows}
    return [counts.get(i, 0) for i in ids]


_EVENT_COLUMNS = ("id", "type", "occurred_at", "certificate_id", "host_id", "location_id", "tracked_source_id", "actor",
                  "details")  # fmt: skip


async def _last_events(ids: list[int]) -> list[Row | None]:
    """Each certificate's newest event, in one statement (rows, not ORM models)."""
    rows = await sql.fetch(
        "SELECT " + ", ".join(_EVENT_COLUMNS) + " FROM certificate_event WHERE id IN (SELECT MAX(id) FROM"
        f" certificate_event WHERE certificate_id IN {sql.in_list(ids)} GROUP BY certificate_id)",
        ids,
    )
    events = {}
    for raw in rows:
        event = Row({c: raw[c] for c in _EVENT_COLUMNS})
        event.occurred_at = bulk.as_datetime(event.occurred_at)
        event.details = bulk.as_json(event.details)
        events[event.certificate_id] = event
    return [events.get(i) for i in ids]


async def _renewed_by(ids: list[int]) -> list[list[Certificate]]:
    grouped = _by_key(await Certificate.filter(renewed_from_id__in=ids).order_by("id"), "renewed_from_id")
    return [grouped.get(i, []) for i in ids]


async def _issuers(keys: list[tuple[str, str]]) -> list[Certificate | None]:
    """Key: (issuer DN, authority key id) -> the stored certificate with that subject and key id."""
    akis = sorted({aki for _, aki in keys})
    candidates = await Certificate.filter(subject_key_identifier__in=akis).order_by("-not_after")
    found: dict[tuple[str, str], Certificate] = {}
    for cert in candidates:
        found.setdefault((cert.subject, cert.subject_key_identifier), cert)
    return [found.get(k) for k in keys]


async def _host_soonest_expiry(ids: list[int]) -> list[Any]:
    """Per host: the soonest notAfter over its present, non-CA certificates."""
    rows = await sql.fetch(
        "SELECT l.host_id, MIN(c.not_after) AS not_after FROM certificate_location l"
        " JOIN certificate c ON c.id = l.certificate_id"
        f" WHERE l.host_id IN {sql.in_list(ids)} AND l.removed_at IS NULL AND c.is_ca = ?"
        " GROUP BY l.host_id",
        [*ids, False],
    )
    soonest = {r["host_id"]: r["not_after"] for r in rows}
    out = []
    for i in ids:
        value = soonest.get(i)
        if isinstance(value, str):
            value = clock.parse_instant(value)
        out.append(clock.as_utc(value) if value is not None else None)
    return out


@dataclasses.dataclass
class Loaders:
    certificate: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_certificates))
    certificate_by_fingerprint: DataLoader = dataclasses.field(
        default_factory=lambda: DataLoader(load_fn=_certificates_by_fingerprint)
    )
    host: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_hosts))
    location: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_locations_by_id))
    tracked_source: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_tracked_sources))
    locations: DataLoader = dataclasses.field(default_factory=_locations_loader)
    live_places: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_live_places))
    location_count: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_location_counts))
    host_ids: DataLoader = dataclasses.field(default_factory=_host_ids_loader)
    host_count: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_host_counts))
    last_event: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_last_events))
    renewed_by: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_renewed_by))
    issuer: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_issuers))
    host_soonest_expiry: DataLoader = dataclasses.field(
        default_factory=lambda: DataLoader(load_fn=_host_soonest_expiry)
    )
