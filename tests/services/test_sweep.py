"""The expiry sweep: each status change recorded once, with a moved clock."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from backend import clock, db
from backend.models import Certificate, CertificateEvent, EventType
from backend.services import ingest, sweep
from tests.certs import make_cert
from tests.support.databases import postgres_only
from tests.support import inventory
from tests.support.reports import document, file_item, service_report

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2031, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


@pytest.fixture
def published():
    """Every (topic, payload) the transactions publish after commit."""
    seen: list[tuple[str, dict]] = []
    db.set_publisher(lambda topic, payload: seen.append((topic, payload)))
    yield seen
    db.set_publisher(None)


@pytest.fixture
def frozen():
    def at(instant: dt.datetime) -> dt.datetime:
        clock.freeze(instant)
        return instant

    yield at
    clock.freeze(None)


def cert_expiring(name: str, not_after: dt.datetime):
    return make_cert(name, sans=(name,), not_before=not_after - 200 * DAY, not_after=not_after)


async def status_events(certificate_id: int) -> list[tuple[str, dict]]:
    rows = await CertificateEvent.filter(
        certificate_id=certificate_id, type__in=[EventType.STATUS_CHANGED, EventType.EXPIRED]
    ).order_by("id")
    return [(EventType(r.type).value, r.details) for r in rows]


async def test_ok_warning_critical_expired_each_recorded_once(database, frozen, published):
    frozen(T0)
    stored = await inventory.put(cert_expiring("shop.test", T0 + 40 * DAY).der)
    assert stored.last_status == "OK"
    assert (await sweep.sweep()).status_changes == 0

    steps = [(11, "OK", "WARNING"), (27, "WARNING", "CRITICAL"), (40, "CRITICAL", "EXPIRED")]
    for days, before, after in steps:
        frozen(T0 + days * DAY)
        published.clear()
        result = await sweep.sweep()
        assert [(t.previous.value, t.status.value) for t in result.transitions] == [(before, after)]
        assert result.expired == (1 if after == "EXPIRED" else 0)
        # published after commit, as event ids
        [(topic, payload)] = published
        assert topic == "events" and sorted(payload["ids"]) == list(result.transitions[0].event_ids)
        # a second sweep at the same instant records nothing
        assert (await sweep.sweep()).status_changes == 0
    frozen(T0 + 400 * DAY)
    assert (await sweep.sweep()).status_changes == 0  # expired stays expired

    assert await status_events(stored.id) == [
        ("STATUS_CHANGED", {"from": "OK", "to": "WARNING"}),
        ("STATUS_CHANGED", {"from": "WARNING", "to": "CRITICAL"}),
        ("STATUS_CHANGED", {"from": "CRITICAL", "to": "EXPIRED"}),
        ("EXPIRED", {}),
    ]
    events = await CertificateEvent.filter(certificate_id=stored.id, type=EventType.EXPIRED)
    assert events[0].actor == "system" and events[0].occurred_at == T0 + 40 * DAY
    assert (await Certificate.get(id=stored.id)).last_status == "EXPIRED"


async def test_exact_boundaries(database, frozen):
    frozen(T0)
    cert = await inventory.put(cert_expiring("edge.test", T0 + 60 * DAY).der)
    frozen(T0 + 30 * DAY)  # exactly 30 days left: still OK
    assert (await sweep.sweep()).status_changes == 0
    frozen(T0 + 30 * DAY + dt.timedelta(microseconds=1))
    assert [t.status.value for t in (await sweep.sweep()).transitions] == ["WARNING"]
    frozen(T0 + 46 * DAY)  # exactly 14 days left: still WARNING
    assert (await sweep.sweep()).status_changes == 0
    frozen(T0 + 60 * DAY)  # notAfter == now: EXPIRED
    assert [t.status.value for t in (await sweep.sweep()).transitions] == ["EXPIRED"]
    assert len(await status_events(cert.id)) == 3


async def test_jumping_several_statuses_is_one_change(database, frozen):
    frozen(T0)
    cert = await inventory.put(cert_expiring("jump.test", T0 + 40 * DAY).der)
    frozen(T0 + 100 * DAY)
    result = await sweep.sweep()
    assert [(t.previous.value, t.status.value) for t in result.transitions] == [("OK", "EXPIRED")]
    assert await status_events(cert.id) == [("STATUS_CHANGED", {"from": "OK", "to": "EXPIRED"}), ("EXPIRED", {})]


async def test_stored_already_expired_gets_no_status_change(database, frozen, published):
    frozen(T0)
    cert = await inventory.put(cert_expiring("old.test", T0 - 5 * DAY).der)
    assert cert.last_status == "EXPIRED"
    published.clear()
    assert (await sweep.sweep()).status_changes == 0
    assert await status_events(cert.id) == [] and published == []


async def test_only_the_current_set_is_swept(database, frozen):
    frozen(T0)
    gone = await inventory.put(cert_expiring("gone.test", T0 + 40 * DAY).der, removed=True)
    assert gone.is_current is False
    frozen(T0 + 15 * DAY)
    assert (await sweep.sweep()).status_changes == 0
    assert (await Certificate.get(id=gone.id)).last_status == "OK"  # untouched
    assert await status_events(gone.id) == []


async def test_many_certificates_one_statement_batch(database, frozen):
    frozen(T0)
    certs = [await inventory.put(cert_expiring(f"c{i}.test", T0 + (31 + i) * DAY).der, path=f"/c{i}.pem") for i in range(12)]
    frozen(T0 + 12 * DAY)  # days left: 19 + i -> WARNING for i < 11, OK for i = 11
    result = await sweep.sweep()
    assert sorted(t.certificate_id for t in result.transitions) == [c.id for c in certs[:11]]
    assert (await sweep.sweep()).status_changes == 0


async def test_concurrent_sweeps_record_each_transition_once(database, frozen):
    frozen(T0)
    for i in range(30):
        await inventory.put(cert_expiring(f"race{i}.test", T0 + (20 + i) * DAY).der, path=f"/r{i}.pem")
    frozen(T0 + 50 * DAY)  # every one changes: some EXPIRED, some CRITICAL
    results = await asyncio.gather(*(sweep.sweep() for _ in range(4)))
    changed = [t.certificate_id for r in results for t in r.transitions]
    assert len(changed) == len(set(changed)) == 30
    assert await CertificateEvent.filter(type=EventType.STATUS_CHANGED).count() == 30
    expired = sum(r.expired for r in results)
    assert await CertificateEvent.filter(type=EventType.EXPIRED).count() == expired > 0


@postgres_only
async def test_a_sweep_waiting_on_locked_rows_re_checks_them(database, frozen):
    """PostgreSQL: sweep A holds the row locks (not committed yet); sweep B
    blocks on them, then finds nothing left to do once A commits."""
    import asyncpg

    frozen(T0)
    cert = await inventory.put(cert_expiring("locked.test", T0 + 40 * DAY).der)
    frozen(T0 + 30 * DAY)
    conn = await asyncpg.connect(database.url.replace("postgres://", "postgresql://", 1))
    try:
        tx = conn.transaction()
        await tx.start()
        bounds = sweep._bounds(clock.now())
        from backend.services.bulk import numbered

        rows = await conn.fetch(numbered(sweep._PG_SWEEP), *(bounds * 2))
        assert [(r["before"], r["after"]) for r in rows] == [("OK", "CRITICAL")]
        b = asyncio.create_task(sweep.sweep())
        await asyncio.sleep(0.5)
        assert not b.done()  # waiting for A's row locks
        await tx.commit()
        result = await asyncio.wait_for(b, 10)
    finally:
        await conn.close()
    assert result.status_changes == 0
    assert await status_events(cert.id) == []  # A recorded no events: it only moved last_status


async def test_renewal_returns_to_ok_through_the_normal_events(database, frozen, published):
    """A certificate in WARNING renewed by an agent: RENEWED (from ingest), the
    new one is current and OK, the old one leaves the current set, and no
    sweep records a status change for either."""
    frozen(T0)
    host = await inventory.host("web-1.test")
    old = cert_expiring("renew.test", T0 + 40 * DAY)
    await ingest.report_certificates(host.id, "agent", service_report(document("web-1.test", [file_item(old.der)])))
    frozen(T0 + 15 * DAY)
    assert [t.status.value for t in (await sweep.sweep()).transitions] == ["WARNING"]

    new = cert_expiring("renew.test", T0 + 120 * DAY)
    published.clear()
    await ingest.report_certificates(host.id, "agent", service_report(document("web-1.test", [file_item(new.der)])))
    renewed = await Certificate.get(fingerprint_sha256=new.fingerprint)
    assert renewed.is_current and renewed.last_status == "OK"
    assert not (await Certificate.get(fingerprint_sha256=old.fingerprint)).is_current
    types = [EventType(e.type).value for e in await CertificateEvent.filter(certificate_id=renewed.id)]
    assert "RENEWED" in types
    assert published and published[0][0] == "events"
    assert (await sweep.sweep()).status_changes == 0
    frozen(T0 + 100 * DAY)  # the old one would be EXPIRED now, but it is not current
    assert [(t.certificate_id, t.status.value) for t in (await sweep.sweep()).transitions] == [(renewed.id, "WARNING")]
