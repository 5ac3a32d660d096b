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
from backend.models import Certificate, CertificateEvent, CertificateLocation, Host, TrackedSource


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
            locations = await CertificateLocation.filter(id__in=[r["id"] for r in rows]).order_by("id")
            grouped = _by_key(locations, "certificate_id")
            for cid in ids:
                out[(cid, include_removed, first)] = grouped.get(cid, [])
        return [out[k] for k in keys]

    return DataLoader(load_fn=load)


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


async def _last_events(ids: list[int]) -> list[CertificateEvent | None]:
    rows = await sql.fetch(
        "SELECT MAX(id) AS id FROM certificate_event"
        f" WHERE certificate_id IN {sql.in_list(ids)} GROUP BY certificate_id",
        ids,
    )
    events = {e.certificate_id: e for e in await CertificateEvent.filter(id__in=[r["id"] for r in rows])}
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
    location_count: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_location_counts))
    host_ids: DataLoader = dataclasses.field(default_factory=_host_ids_loader)
    host_count: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_host_counts))
    last_event: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_last_events))
    renewed_by: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_renewed_by))
    issuer: DataLoader = dataclasses.field(default_factory=lambda: DataLoader(load_fn=_issuers))
    host_soonest_expiry: DataLoader = dataclasses.field(
        default_factory=lambda: DataLoader(load_fn=_host_soonest_expiry)
    )
