"""Writing certificate rows in bulk: new ones, presence counters, last seen, renewal links.

:func:`store` inserts parsed certificates with conflict-ignore on the
fingerprint, so two transactions storing the same new certificate at once both
succeed and one row exists. :func:`refresh_presence` is the one place that
recomputes ``live_locations``, ``live_sources``, ``is_current`` and
``seen_by_agent`` from the locations and sources: every change to either calls
it in the same transaction.

Concurrency (PostgreSQL, READ COMMITTED): a recount must see every committed
location, so :func:`refresh_presence` first locks the certificate rows in id
order (``FOR NO KEY UPDATE``: foreign-key checks of concurrent location and
event inserts are not blocked) and only then counts, in a new statement whose
snapshot includes whatever the previous holder of the lock committed. The same
id order everywhere means no deadlock. New certificates are inserted in
fingerprint order for the same reason. :func:`touch` (``last_seen_at``) skips
rows another transaction holds: that transaction is writing them anyway.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from backend import x509
from backend.models import Certificate
from backend.services import bulk
from backend.services.certificates import certificate_fields

_json = Certificate._meta.fields_map["sans"].encoder  # the ORM's own JSON encoding

TABLE = bulk.Table(
    "certificate",
    (
        ("fingerprint_sha256", "text"), ("fingerprint_sha1", "text"), ("serial_number", "text"),
        ("spki_sha256", "text"), ("common_name", "text"), ("sort_name", "text"), ("subject", "text"),
        ("issuer", "text"), ("issuer_common_name", "text"), ("not_before", "timestamptz"),
        ("not_after", "timestamptz"), ("sans", "jsonb"), ("key_algorithm", "text"), ("key_size", "int4"),
        ("curve", "text"), ("signature_algorithm", "text"), ("is_ca", "bool"), ("path_length", "int4"),
        ("key_usage", "jsonb"), ("extended_key_usage", "jsonb"), ("subject_key_identifier", "text"),
        ("authority_key_identifier", "text"), ("self_signed", "bool"), ("der", "bytea"), ("search_text", "text"),
        ("live_locations", "int4"), ("live_sources", "int4"), ("is_current", "bool"), ("seen_by_agent", "bool"),
        ("imported", "bool"), ("last_status", "text"), ("first_seen_at", "timestamptz"),
        ("last_seen_at", "timestamptz"), ("created_at", "timestamptz"),
    ),
)  # fmt: skip


_JSON_COLUMNS = ("sans", "key_usage", "extended_key_usage")


def _row(d: x509.CertificateDescription, now: dt.datetime, seen_by_agent: bool, imported: bool, places: int) -> tuple:
    values = {
        **certificate_fields(d, now),
        "live_locations": places,
        "live_sources": 0,
        "is_current": places > 0,
        "seen_by_agent": seen_by_agent or places > 0,
        "imported": imported,
    }
    for name in _JSON_COLUMNS:
        values[name] = _json(values[name])
    return tuple(values[column] for column, _ in TABLE.columns)


@dataclasses.dataclass(frozen=True)
class Stored:
    ids: dict[str, int]
    """fingerprint -> id, for every description given."""
    inserted: frozenset[str]
    """The fingerprints this call inserted (the others existed already)."""


async def store(
    conn: Any,
    descriptions: Sequence[x509.CertificateDescription],
    now: dt.datetime,
    *,
    seen_by_agent: bool = False,
    imported: bool = False,
    places: Mapping[str, int] | None = None,
) -> Stored:
    """Insert the certificates not stored yet (conflict-ignore); ids of all of them.

    Presence counters start at zero: the caller adds locations or sources and
    then calls :func:`refresh_presence`. Or, when the caller knows how many
    locations it is about to add for each (``places``, by fingerprint), the
    rows it inserts start with those counts and need no refresh: nobody else
    can add a location to a row this transaction inserted until it commits
    (a concurrent insert of the same fingerprint waits for it). That saves
    writing every new row twice.
    """
    unique = {d.fingerprint_sha256: d for d in descriptions}
    if not unique:
        return Stored({}, frozenset())
    ordered = [unique[fp] for fp in sorted(unique)]
    places = places or {}
    rows = [_row(d, now, seen_by_agent, imported, places.get(d.fingerprint_sha256, 0)) for d in ordered]
    inserted = await bulk.insert(
        conn, TABLE, rows, returning=("id", "fingerprint_sha256"), conflict='"fingerprint_sha256"'
    )
    ids = {r["fingerprint_sha256"]: r["id"] for r in inserted}
    missing = [fp for fp in unique if fp not in ids]
    if missing:  # stored meanwhile by a concurrent transaction, or already there
        ids.update(await ids_of(conn, missing))
    return Stored(ids, frozenset(r["fingerprint_sha256"] for r in inserted))


async def ids_of(conn: Any, fingerprints: Sequence[str]) -> dict[str, int]:
    """fingerprint -> id of the stored ones among ``fingerprints``."""
    if not fingerprints:
        return {}
    where, params = bulk.in_texts(conn, "fingerprint_sha256", fingerprints)
    rows = await bulk.fetch(conn, f"SELECT id, fingerprint_sha256 FROM certificate WHERE {where}", params)
    return {r["fingerprint_sha256"]: r["id"] for r in rows}


_LIVE_LOCATIONS = (
    "(SELECT COUNT(*) FROM certificate_location l WHERE l.certificate_id = certificate.id AND l.removed_at IS NULL)"
)
_LIVE_SOURCES = (
    "(SELECT COUNT(*) FROM tracked_source s WHERE s.certificate_id = certificate.id AND s.untracked_at IS NULL)"
)


async def lock(conn: Any, ids: Iterable[int]) -> list[int]:
    """Lock certificate rows in id order (PostgreSQL; SQLite has one writer). Returns the sorted ids."""
    ordered = sorted(set(ids))
    if ordered and bulk.is_postgres(conn):
        where, params = bulk.in_ids(conn, "id", ordered)
        await bulk.fetch(conn, f"SELECT id FROM certificate WHERE {where} ORDER BY id FOR NO KEY UPDATE", params)
    return ordered


async def refresh_presence(conn: Any, ids: Iterable[int]) -> None:
    """Recount where each certificate is: live locations, live tracked sources,
    ``is_current`` (either is non-zero) and ``seen_by_agent`` (ever had a location).

    Call it in the transaction that changed locations or sources, after the change.
    """
    ordered = await lock(conn, ids)
    if not ordered:
        return
    where, params = bulk.in_ids(conn, "id", ordered)
    await bulk.execute(
        conn,
        f"UPDATE certificate SET live_locations = {_LIVE_LOCATIONS}, live_sources = {_LIVE_SOURCES},"
        f" is_current = ({_LIVE_LOCATIONS} > 0 OR {_LIVE_SOURCES} > 0),"
        f" seen_by_agent = (seen_by_agent OR {_LIVE_LOCATIONS} > 0) WHERE {where}",
        params,
    )


async def touch(conn: Any, ids: Iterable[int], now: dt.datetime) -> None:
    """``last_seen_at = now`` for certificates just seen (rows held by another
    transaction are skipped: it is updating them)."""
    ordered = sorted(set(ids))
    if not ordered:
        return
    where, params = bulk.in_ids(conn, "id", ordered)
    if bulk.is_postgres(conn):
        await bulk.execute(
            conn,
            "UPDATE certificate SET last_seen_at = ? WHERE id IN (SELECT id FROM certificate"
            f" WHERE {where} AND last_seen_at < ? ORDER BY id FOR NO KEY UPDATE SKIP LOCKED)",
            [now, *params, now],
        )
    else:
        await bulk.execute(
            conn, f"UPDATE certificate SET last_seen_at = ? WHERE {where} AND last_seen_at < ?", [now, *params, now]
        )


async def link_renewals(conn: Any, links: dict[int, int]) -> None:
    """``renewed_from`` of each new certificate (key) -> the one it continues (value),
    unless it already continues another one (the first renewal seen wins)."""
    links = {new: old for new, old in links.items() if new != old}
    if not links:
        return
    ordered = sorted(links)
    cases = " ".join("WHEN CAST(? AS INTEGER) THEN CAST(? AS INTEGER)" for _ in ordered)
    case_params: list[Any] = [value for new in ordered for value in (new, links[new])]
    where, params = bulk.in_ids(conn, "id", ordered)
    await bulk.execute(
        conn,
        f"UPDATE certificate SET renewed_from_id = CASE id {cases} END WHERE {where} AND renewed_from_id IS NULL",
        [*case_params, *params],
    )
