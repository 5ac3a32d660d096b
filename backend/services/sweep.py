"""The expiry sweep: record status changes that time alone causes.

Nobody writes anything when a certificate passes 30 days left, so a sweep
compares each current certificate's status now (a function of ``not_after``
and the clock) with ``last_status`` (its status when it was stored or last
swept) and, in one transaction, moves ``last_status`` forward and records
STATUS_CHANGED ``{from, to}`` (plus EXPIRED on reaching EXPIRED). The events
are published after commit like every other event.

Exactly once per certificate and transition, even with concurrent sweeps:

- PostgreSQL: one statement. A CTE selects the changed rows ``FOR UPDATE``
  (PostgreSQL's ``RETURNING`` sees only new values, so the old status comes
  from the CTE); a second sweep blocks on those row locks, re-checks the
  condition on the committed rows and updates nothing.
- SQLite: one writer at a time. The transaction's first statement is a write,
  which takes the database's write lock, so the select-then-update that
  follows cannot interleave with another sweep; each update still re-checks
  the old status.

Certificates outside the current set are not swept; one discovered already
expired was stored with ``last_status`` EXPIRED and gets no STATUS_CHANGED.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any

from backend import clock
from backend.db import transaction
from backend.models import EventType
from backend.services import bulk, events
from backend.services.status import CRITICAL_DAYS, WARNING_DAYS, CertificateStatus

ACTOR = "system"

_COMPUTED = (
    "CASE WHEN not_after <= ? THEN 'EXPIRED' WHEN not_after < ? THEN 'CRITICAL'"
    " WHEN not_after < ? THEN 'WARNING' ELSE 'OK' END"
)

_PG_SWEEP = f"""
WITH c AS (
    SELECT id, last_status AS before, {_COMPUTED} AS after
    FROM certificate
    WHERE is_current AND last_status IS DISTINCT FROM ({_COMPUTED})
    ORDER BY id
    FOR UPDATE
)
UPDATE certificate t SET last_status = c.after
FROM c
WHERE t.id = c.id AND t.last_status IS DISTINCT FROM c.after
RETURNING t.id, c.before, c.after, t.fingerprint_sha256, t.common_name
"""


@dataclasses.dataclass(frozen=True)
class Transition:
    certificate_id: int
    fingerprint: str
    common_name: str | None
    previous: CertificateStatus | None
    status: CertificateStatus
    event_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    started_at: dt.datetime
    finished_at: dt.datetime
    transitions: tuple[Transition, ...]

    @property
    def status_changes(self) -> int:
        return len(self.transitions)

    @property
    def expired(self) -> int:
        return sum(1 for t in self.transitions if t.status is CertificateStatus.EXPIRED)


def _bounds(now: dt.datetime) -> list[dt.datetime]:
    return [now, now + dt.timedelta(days=CRITICAL_DAYS), now + dt.timedelta(days=WARNING_DAYS)]


async def _changed_postgres(conn: Any, now: dt.datetime) -> list[dict[str, Any]]:
    return await bulk.fetch(conn, _PG_SWEEP, _bounds(now) * 2)


async def _changed_sqlite(conn: Any, now: dt.datetime) -> list[dict[str, Any]]:
    # A write first: it takes SQLite's write lock for the whole transaction.
    await bulk.execute(conn, "UPDATE certificate SET last_status = last_status WHERE 0")
    candidates = await bulk.fetch(
        conn,
        f"SELECT id, last_status AS before, {_COMPUTED} AS after, fingerprint_sha256, common_name"
        f" FROM certificate WHERE is_current = 1 AND last_status IS NOT ({_COMPUTED}) ORDER BY id",
        _bounds(now) * 2,
    )
    groups: dict[tuple[str | None, str], list[dict[str, Any]]] = defaultdict(list)
    for row in candidates:
        groups[(row["before"], row["after"])].append(row)
    changed: list[dict[str, Any]] = []
    for (before, after), rows in groups.items():
        ids = [r["id"] for r in rows]
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            where, params = bulk.in_ids(conn, "id", chunk)
            updated = await bulk.fetch(
                conn,
                f"UPDATE certificate SET last_status = ? WHERE {where} AND last_status IS ? RETURNING id",
                [after, *params, before],
            )
            done = {r["id"] for r in updated}
            changed.extend(r for r in rows if r["id"] in done)
    changed.sort(key=lambda r: r["id"])
    return changed


async def sweep(now: dt.datetime | None = None) -> SweepResult:
    """Record every status change of the current set since the last sweep."""
    started = clock.now()
    now = now or started
    async with transaction() as conn:
        if bulk.is_postgres(conn):
            rows = await _changed_postgres(conn, now)
        else:
            rows = await _changed_sqlite(conn, now)
        rows.sort(key=lambda r: r["id"])
        new_events: list[events.NewEvent] = []
        owners: list[int] = []
        for index, row in enumerate(rows):
            new_events.append(
                events.NewEvent(
                    type=EventType.STATUS_CHANGED,
                    certificate_id=row["id"],
                    details={"from": row["before"], "to": row["after"]},
                )
            )
            owners.append(index)
            if row["after"] == CertificateStatus.EXPIRED.value:
                new_events.append(events.NewEvent(type=EventType.EXPIRED, certificate_id=row["id"]))
                owners.append(index)
        ids = await events.record(conn, new_events, actor=ACTOR, now=now)
    # record() inserts in order and returns the ids sorted: they line up.
    by_row: dict[int, list[int]] = defaultdict(list)
    for owner, event_id in zip(owners, ids, strict=True):
        by_row[owner].append(event_id)
    transitions = tuple(
        Transition(
            certificate_id=row["id"],
            fingerprint=row["fingerprint_sha256"],
            common_name=row["common_name"],
            previous=CertificateStatus(row["before"]) if row["before"] else None,
            status=CertificateStatus(row["after"]),
            event_ids=tuple(by_row[index]),
        )
        for index, row in enumerate(rows)
    )
    _count(transitions)
    # Alerts: every rule over everything, in its own transaction after this one
    # (time alone fires EXPIRY, SOURCE_FAILING and HOST_STALE alerts, and ends
    # acknowledgements).
    from backend.services import alerts

    await alerts.evaluate(alerts.EVERYTHING, now=now)
    return SweepResult(started_at=started, finished_at=clock.now(), transitions=transitions)


def _count(transitions: tuple[Transition, ...]) -> None:
    from backend import metrics

    for t in transitions:
        metrics.SWEEP_TRANSITIONS.labels(to=t.status.value).inc()
