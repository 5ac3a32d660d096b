"""Refreshing tracked URLs: one function for the arq job, the mutation and the embedded runner.

Scheduling lives in the database: ``next_refresh_at``. Each tick
:func:`claim_due` takes the due sources and pushes their ``next_refresh_at``
forward by :data:`LEASE` in the same statement (PostgreSQL: ``SELECT … FOR
UPDATE SKIP LOCKED`` inside an ``UPDATE … RETURNING``, so two workers never
claim the same row; SQLite has one writer: select, then update, in one write
transaction). Each claimed (source, due time) is refreshed once: by an arq job
whose id is ``refresh:<source id>:<due ms>`` (``ctops worker``) or in-process
(embedded mode). A claim that is never carried out (a worker killed with its
queue) comes due again when the lease ends.

:func:`refresh_source` fetches outside any transaction (no connection is held
during network I/O), then applies the outcome in one transaction with the
source row locked:

- same fingerprint: ``last_refreshed_at`` and the warnings updated, no event;
- new fingerprint: the renewal rule (:func:`tracked_sources.put_certificate`);
- failure (DNS, TCP, TLS, STARTTLS, policy, or a served certificate already
  expired: CERTIFICATE_EXPIRED): ``last_error``, ``last_error_code``,
  ``consecutive_failures``, ``last_attempt_at``; the certificate untouched;
  REFRESH_FAILED only on the transition from healthy to failing; the next
  attempt after min(interval, 1 min × 2^failures);
- the first success after failures: REFRESH_RECOVERED.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from backend import clock, outbound
from backend.db import is_postgres, transaction
from backend.endpoints import parse
from backend.errors import CheckErrorCode, CheckFailed
from backend.models import EventType, RefreshInterval, SourceKind, TrackedSource
from backend.services import bulk, certificate_rows, checker, tracked_sources
from backend.services.events import NewEvent, record

log = logging.getLogger("ctops.refresh")

#: How far a claim pushes ``next_refresh_at``: a claimed refresh that never
#: runs is claimed again after this (every interval is longer).
LEASE = dt.timedelta(minutes=10)
BACKOFF_BASE = dt.timedelta(minutes=1)
CLAIM_BATCH = 500
MAX_BATCHES_PER_TICK = 40


class Outcome(str, enum.Enum):
    UNCHANGED = "UNCHANGED"
    CHANGED = "CHANGED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclasses.dataclass(frozen=True)
class Result:
    source_id: int
    outcome: Outcome
    events: tuple[str, ...] = ()
    error_code: str | None = None
    certificate_ids: tuple[int, ...] = ()
    """The certificates the outcome touched (alert evaluation looks at them)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What a refresh fetches, as claimed (so the job need not read the source first)."""

    url: str
    server_name: str | None
    interval: str


@dataclasses.dataclass(frozen=True)
class Claimed:
    source_id: int
    due: dt.datetime
    target: Target | None = None

    @property
    def job_id(self) -> str:
        return f"refresh:{self.source_id}:{int(self.due.timestamp() * 1000)}"


def backoff(interval: RefreshInterval | str, failures: int) -> dt.timedelta:
    """Delay before the next attempt after ``failures`` consecutive failures."""
    return min(RefreshInterval(interval).delta, BACKOFF_BASE * (2 ** min(max(failures, 0), 20)))


# --- claiming -----------------------------------------------------------------------------


async def claim_due(now: dt.datetime, limit: int = CLAIM_BATCH) -> list[Claimed]:
    """Claim up to ``limit`` due URL sources, pushing them ``LEASE`` ahead."""
    async with transaction() as conn:
        rows = await bulk.claim_due(
            conn, table="tracked_source", due="next_refresh_at", where="kind = ? AND untracked_at IS NULL",
            params=[SourceKind.URL.value], now=now, lease_end=now + LEASE, limit=limit,
            columns=("url", "server_name", "refresh_interval"),
        )
    return [
        Claimed(int(r["id"]), bulk.as_datetime(r["due"]),  # type: ignore[arg-type]
                Target(r["url"], r["server_name"], r["refresh_interval"] or RefreshInterval.HOURS_1.value))
        for r in rows
    ]  # fmt: skip


Dispatch = Callable[[Sequence[Claimed]], Awaitable[object]]


async def tick(dispatch: Dispatch, *, batch: int = CLAIM_BATCH) -> int:
    """Claim everything due now (in batches) and hand each batch to ``dispatch``."""
    started = clock.now()
    total = 0
    for _ in range(MAX_BATCHES_PER_TICK):
        claimed = await claim_due(clock.now(), batch)
        if claimed:
            await dispatch(claimed)
        total += len(claimed)
        if len(claimed) < batch:
            break
    if total:
        elapsed = (clock.now() - started).total_seconds()
        log.info("refresh tick %s: %d due source(s) dispatched in %.3f s", started.isoformat(), total, elapsed)
    return total


def in_process(settings: object) -> Dispatch:
    """Embedded mode's dispatch: refresh in this process, ``worker_max_jobs`` at a time."""
    limit = asyncio.Semaphore(max(1, int(getattr(settings, "worker_max_jobs", 50))))

    async def one(claimed: Claimed) -> None:
        async with limit:
            try:
                await refresh_source(claimed.source_id, settings=settings, target=claimed.target)
            except Exception:  # noqa: BLE001 - one source's bug must not stop the others
                log.exception("Refreshing tracked source %s failed", claimed.source_id)

    async def dispatch(batch: Sequence[Claimed]) -> None:
        await asyncio.gather(*(one(c) for c in batch))

    return dispatch


# --- refreshing ---------------------------------------------------------------------------


_SOURCE = (
    "SELECT s.id, s.kind, s.url, s.server_name, s.refresh_interval, s.certificate_id, s.untracked_at, s.warnings,"
    " s.consecutive_failures, s.failing_since, s.last_error_code, c.fingerprint_sha256 AS fingerprint"
    " FROM tracked_source s LEFT JOIN certificate c ON c.id = s.certificate_id WHERE s.id = ?"
)
_json = TrackedSource._meta.fields_map["warnings"].encoder


async def _source(conn: object, source_id: int, *, lock: bool) -> dict | None:
    """The source with its certificate's fingerprint (its row locked when ``lock``, on PostgreSQL)."""
    sql = _SOURCE + (" FOR UPDATE OF s" if lock and bulk.is_postgres(conn) else "")
    rows = await bulk.fetch(conn, sql, [source_id])
    return rows[0] if rows else None


async def _still_the_same(
    source_id: int, target: Target, fingerprint: str, warnings: list[dict], now: dt.datetime
) -> bool:
    """The common case in one statement (PostgreSQL): a healthy source that serves the
    same certificate with the same warnings gets its refresh times (and the
    certificate its ``last_seen_at``). False when anything else is the case: the
    full path (one transaction, the row locked) then decides."""
    from tortoise import connections

    interval = RefreshInterval(target.interval)
    same = (
        "UPDATE tracked_source SET last_refreshed_at = ?, last_attempt_at = ?, next_refresh_at = ?"
        " WHERE id = ? AND untracked_at IS NULL AND consecutive_failures = 0 AND refresh_interval = ?"
        f" AND warnings = {'CAST(? AS jsonb)' if is_postgres() else '?'}"
        " AND certificate_id = (SELECT id FROM certificate WHERE fingerprint_sha256 = ?)"
    )
    params = [now, now, now + interval.delta, source_id, interval.value, _json(warnings), fingerprint]
    touch = "UPDATE certificate SET last_seen_at = ? WHERE id = {} AND last_seen_at < ?"
    if is_postgres():
        rows = await bulk.fetch(
            connections.get("default"),
            f"WITH s AS ({same} RETURNING certificate_id),"
            f" t AS ({touch.format('(SELECT certificate_id FROM s)')}) SELECT COUNT(*) AS n FROM s",
            [*params, now, now],
        )
        return int(rows[0]["n"]) == 1
    async with transaction() as conn:
        if await bulk.execute(conn, same, params) != 1:
            return False
        await bulk.execute(conn, touch.format("(SELECT certificate_id FROM tracked_source WHERE id = ?)"),
                           [now, source_id, now])  # fmt: skip
    return True


async def refresh_source(source_id: int, **options: Any) -> Result:
    """Refresh one source (:func:`fetch_and_record`), then evaluate its alerts when
    something changed: a failure (SOURCE_FAILING), a recovery, a new certificate."""
    result = await fetch_and_record(source_id, **options)
    if result.outcome in (Outcome.FAILED, Outcome.CHANGED) or result.events:
        from backend.services import alerts

        await alerts.after_source_change(source_id, result.certificate_ids)
    return result


async def fetch_and_record(
    source_id: int,
    *,
    settings: object,
    actor: str = "system",
    resolver: outbound.Resolver | None = None,
    target: Target | None = None,
) -> Result:
    """Fetch one URL source now and record the outcome (never raises for a fetch failure).

    ``target`` comes with a claim; without it the source is read first. A
    refresh that finds what it found before is one statement on PostgreSQL
    (:func:`_still_the_same`); anything else runs in one transaction with the
    source row locked.
    """
    from tortoise import connections

    if target is None:
        source = await _source(connections.get("default"), source_id, lock=False)
        if source is None or source["untracked_at"] is not None or source["kind"] != SourceKind.URL.value:
            return Result(source_id, Outcome.SKIPPED)
        target = Target(source["url"], source["server_name"], source["refresh_interval"] or RefreshInterval.HOURS_1.value)
    if not target.url:
        return Result(source_id, Outcome.SKIPPED)
    inspection: checker.Inspection | None = None
    failure: CheckFailed | None = None
    try:
        endpoint = parse(target.url, target.server_name)
        inspection = await checker.fetch_endpoint(endpoint, settings=settings, resolver=resolver)
        if inspection.leaf.not_after <= clock.now():
            failure = CheckFailed(
                CheckErrorCode.CERTIFICATE_EXPIRED,
                f"The server serves a certificate that expired on {inspection.leaf.not_after.isoformat()}"
                f" ({inspection.leaf.common_name or inspection.leaf.subject}); the last valid one is kept.",
            )
    except CheckFailed as exc:
        failure = exc
    if failure is None and inspection is not None:
        warnings = [w.as_dict() for w in inspection.verdict.lasting]
        if await _still_the_same(source_id, target, inspection.leaf.fingerprint_sha256, warnings, clock.now()):
            return Result(source_id, Outcome.UNCHANGED)
    now = clock.now()
    events: list[NewEvent] = []
    async with transaction() as conn:
        locked = await _source(conn, source_id, lock=True)
        if locked is None or locked["untracked_at"] is not None:
            return Result(source_id, Outcome.SKIPPED)
        interval = RefreshInterval(locked["refresh_interval"] or RefreshInterval.HOURS_1)
        previous_failures = int(locked["consecutive_failures"] or 0)
        certificate_id = locked["certificate_id"]
        if failure is not None:
            failures = previous_failures + 1
            if previous_failures == 0 and certificate_id is not None:
                events.append(NewEvent(EventType.REFRESH_FAILED, certificate_id, tracked_source_id=source_id,
                                       details={"code": failure.code, "message": str(failure)}))  # fmt: skip
            await bulk.execute(
                conn,
                "UPDATE tracked_source SET last_attempt_at = ?, last_error = ?, last_error_code = ?,"
                " consecutive_failures = ?, failing_since = ?, next_refresh_at = ? WHERE id = ?",
                [now, str(failure), failure.code, failures, bulk.as_datetime(locked["failing_since"]) or now,
                 now + backoff(interval, failures), source_id],
            )  # fmt: skip
            await record(conn, events, actor=actor, now=now)
            return Result(source_id, Outcome.FAILED, tuple(e.type.value for e in events), failure.code,
                          tuple(i for i in (certificate_id,) if i is not None))  # fmt: skip
        assert inspection is not None
        changed = locked["fingerprint"] != inspection.leaf.fingerprint_sha256
        if changed:
            row = await TrackedSource.get(id=source_id)
            certificate_id = await tracked_sources.put_certificate(conn, row, inspection.leaf, now=now, events=events)
        if certificate_id is not None:
            await certificate_rows.touch(conn, [certificate_id], now)
        if previous_failures > 0 and certificate_id is not None:
            failing_since = bulk.as_datetime(locked["failing_since"])
            events.append(NewEvent(EventType.REFRESH_RECOVERED, certificate_id, tracked_source_id=source_id,
                                   details={"failures": previous_failures,
                                            "failingSince": failing_since.isoformat() if failing_since else None,
                                            "lastErrorCode": locked["last_error_code"]}))  # fmt: skip
        warnings = [w.as_dict() for w in inspection.verdict.lasting]
        assignments = (
            "last_refreshed_at = ?, last_attempt_at = ?, last_error = NULL, last_error_code = NULL,"
            " consecutive_failures = 0, failing_since = NULL, next_refresh_at = ?"
        )
        params: list[object] = [now, now, now + interval.delta]
        if bulk.as_json(locked["warnings"]) != warnings:
            assignments += ", warnings = ?"
            params.append(_json(warnings))
        await bulk.execute(conn, f"UPDATE tracked_source SET {assignments} WHERE id = ?", [*params, source_id])
        await record(conn, events, actor=actor, now=now)
    touched = tuple(i for i in {locked["certificate_id"], certificate_id} if i is not None)
    return Result(source_id, Outcome.CHANGED if changed else Outcome.UNCHANGED, tuple(e.type.value for e in events),
                  certificate_ids=touched)  # fmt: skip


async def refresh_now(source_id: int, *, settings: object, actor: str) -> TrackedSource:
    """``refreshTrackedSource``: refresh one source now; a fetch failure lands in ``last_error``."""
    from backend.errors import BadUserInput, NotFound

    source = await TrackedSource.get_or_none(id=source_id)
    if source is None:
        raise NotFound("No tracked source with this id.")
    if source.kind != SourceKind.URL:
        raise BadUserInput("An uploaded certificate has no URL to refresh: re-import it with importCertificate.")
    if source.untracked_at is not None:
        raise BadUserInput("This source is untracked: track its URL again to refresh it.")
    await refresh_source(source_id, settings=settings, actor=actor)
    return await TrackedSource.get(id=source_id)
