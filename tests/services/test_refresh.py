"""Refreshing tracked URLs in-process: outcomes, backoff, claiming, the tick.

(The same through a real ``ctops worker`` and a real embedded ``ctops serve``:
``tests/jobs/test_refresh_jobs.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import pytest

from backend import clock, db
from backend.models import Certificate, CertificateEvent, EventType, RefreshInterval, SourceKind, TrackedSource
from backend.services import refresh, tracked_sources
from backend.services.refresh import Outcome
from tests.support.databases import postgres_only
from tests.support.checker import checker_settings, make_pki
from tests.support.tls_servers import TLSServer

UTC = dt.timezone.utc
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def settings(pki):
    return checker_settings(pki)


@contextlib.contextmanager
def frozen(at: dt.datetime):
    clock.freeze(at)
    try:
        yield at
    finally:
        clock.freeze(None)


async def types(source_id: int) -> list[str]:
    return [e.type.value for e in await CertificateEvent.filter(tracked_source_id=source_id).order_by("id")]


@pytest.mark.parametrize(
    ("interval", "failures", "minutes"),
    [("MINUTES_15", 1, 2), ("MINUTES_15", 2, 4), ("MINUTES_15", 3, 8), ("MINUTES_15", 4, 15), ("HOURS_1", 5, 32),
     ("HOURS_1", 6, 60), ("HOURS_24", 10, 1024), ("HOURS_24", 99, 1440)],
)  # fmt: skip
def test_backoff(interval, failures, minutes):
    assert refresh.backoff(interval, failures) == minutes * MINUTE


async def test_refresh_outcomes_in_order(database, pki, settings):
    old = pki.chain("shop.test", days=60)
    with TLSServer(old) as server:
        url = f"https://127.0.0.1:{server.port}"
        source = (await tracked_sources.track_url(url, server_name="shop.test", interval=RefreshInterval.MINUTES_15,
                                                  settings=settings)).source  # fmt: skip
        first_certificate = source.certificate_id

        # Same fingerprint: refreshed, nothing recorded.
        result = await refresh.refresh_source(source.id, settings=settings)
        assert result.outcome is Outcome.UNCHANGED and result.events == ()
        row = await TrackedSource.get(id=source.id)
        assert row.last_refreshed_at > source.last_refreshed_at
        assert row.next_refresh_at == row.last_refreshed_at + 15 * MINUTE

        # The server swaps to a renewed certificate: RENEWED, history kept.
        renewed = pki.chain("shop.test", days=120)
        server.serve(renewed)
        result = await refresh.refresh_source(source.id, settings=settings)
        assert result.outcome is Outcome.CHANGED and result.events == ("RENEWED",)
        row = await TrackedSource.get(id=source.id)
        new = await Certificate.get(id=row.certificate_id)
        assert new.fingerprint_sha256 == renewed[0].fingerprint and new.renewed_from_id == first_certificate
        assert (new.is_current, (await Certificate.get(id=first_certificate)).is_current) == (True, False)
        event = await CertificateEvent.get(type=EventType.RENEWED)
        assert event.details == {"previousFingerprint": old[0].fingerprint, "keyChanged": False, "reissued": False}
        assert event.tracked_source_id == source.id and event.actor == "system"

    # The server is down: REFRESH_FAILED once, data kept, failures counting, backing off.
    now = clock.now()
    with frozen(now):
        result = await refresh.refresh_source(source.id, settings=settings)
    assert result.outcome is Outcome.FAILED and result.error_code == "CONNECTION_REFUSED"
    row = await TrackedSource.get(id=source.id)
    assert (row.consecutive_failures, row.last_error_code, row.certificate_id) == (1, "CONNECTION_REFUSED", new.id)
    assert "refused" in row.last_error and row.failing_since == now and row.last_attempt_at == now
    assert row.next_refresh_at == now + 2 * MINUTE
    assert row.last_refreshed_at < now
    with frozen(now + 3 * MINUTE):
        await refresh.refresh_source(source.id, settings=settings)
    row = await TrackedSource.get(id=source.id)
    assert row.consecutive_failures == 2 and row.failing_since == now
    assert row.next_refresh_at == now + 3 * MINUTE + 4 * MINUTE
    assert (await Certificate.get(id=new.id)).is_current is True
    assert await types(source.id) == ["IMPORTED", "RENEWED", "REFRESH_FAILED"]
    failed = await CertificateEvent.get(type=EventType.REFRESH_FAILED)
    assert failed.details["code"] == "CONNECTION_REFUSED" and failed.certificate_id == new.id

    # Back: REFRESH_RECOVERED, the failure state cleared.
    with TLSServer(renewed, port=server.port):
        result = await refresh.refresh_source(source.id, settings=settings)
    assert result.outcome is Outcome.UNCHANGED and result.events == ("REFRESH_RECOVERED",)
    row = await TrackedSource.get(id=source.id)
    assert (row.consecutive_failures, row.last_error, row.last_error_code, row.failing_since) == (0, None, None, None)
    recovered = await CertificateEvent.get(type=EventType.REFRESH_RECOVERED)
    assert recovered.details == {"failures": 2, "failingSince": now.isoformat(), "lastErrorCode": "CONNECTION_REFUSED"}


async def test_an_expired_served_certificate_is_a_failure_that_keeps_the_last_one(database, pki, settings):
    with TLSServer(pki.chain("shop.test")) as server:
        source = (await tracked_sources.track_url(f"https://127.0.0.1:{server.port}", server_name="shop.test",
                                                  settings=settings)).source  # fmt: skip
        past = dt.datetime.now(UTC) - dt.timedelta(days=100)
        server.serve([pki.leaf("shop.test", not_before=past, days=30), pki.intermediate])
        result = await refresh.refresh_source(source.id, settings=settings)
    assert result.outcome is Outcome.FAILED and result.error_code == "CERTIFICATE_EXPIRED"
    row = await TrackedSource.get(id=source.id)
    assert row.certificate_id == source.certificate_id and "expired" in row.last_error
    assert await Certificate.all().count() == 1


async def test_a_replacement_at_a_url(database, pki, settings):
    with TLSServer(pki.chain("shop.test")) as server:
        source = (await tracked_sources.track_url(f"https://127.0.0.1:{server.port}", server_name="shop.test",
                                                  settings=settings)).source  # fmt: skip
        server.serve(pki.chain("unrelated.test"))
        result = await refresh.refresh_source(source.id, settings=settings)
    assert result.events == ("UNTRACKED", "IMPORTED")
    row = await TrackedSource.get(id=source.id)
    assert row.warnings[0]["code"] == "HOSTNAME_MISMATCH"  # fetched fine; the warnings say what is wrong


async def sources(count: int, *, due: dt.datetime, **extra) -> list[TrackedSource]:
    now = clock.now()
    made = []
    for i in range(count):
        made.append(await TrackedSource.create(
            kind=extra.get("kind", SourceKind.URL), url=f"https://s{i}.test", identity=f"https://s{i}.test:443#{extra.get('tag', '')}",
            refresh_interval=RefreshInterval.HOURS_1, next_refresh_at=due, created_at=now,
            untracked_at=extra.get("untracked_at"),
        ))  # fmt: skip
    return made


async def test_claiming_takes_due_sources_once_and_pushes_them_ahead(database):
    now = clock.now()
    due = await sources(3, due=now - MINUTE)
    await sources(2, due=now + MINUTE, tag="later")
    await sources(1, due=now - MINUTE, tag="gone", untracked_at=now)
    claimed = await refresh.claim_due(now)
    assert [c.source_id for c in claimed] == [s.id for s in due]
    assert all(c.due == now - MINUTE for c in claimed)
    assert claimed[0].job_id == f"refresh:{due[0].id}:{int((now - MINUTE).timestamp() * 1000)}"
    assert await refresh.claim_due(now) == []
    for s in due:
        assert (await TrackedSource.get(id=s.id)).next_refresh_at == now + refresh.LEASE
    assert await refresh.claim_due(now + refresh.LEASE) != []  # a lost claim comes due again


@postgres_only  # SQLite has one writer: claims are serialised
async def test_concurrent_claims_never_share_a_source(database):
    now = clock.now()
    made = await sources(60, due=now - MINUTE)
    results = await asyncio.gather(*(refresh.claim_due(now, 25) for _ in range(4)))
    ids = [c.source_id for batch in results for c in batch]
    assert sorted(ids) == sorted(s.id for s in made)
    assert len(ids) == len(set(ids))


async def test_tick_refreshes_what_is_due_in_process(database, pki, settings):
    with TLSServer(pki.chain("shop.test")) as server:
        source = (await tracked_sources.track_url(f"https://127.0.0.1:{server.port}", server_name="shop.test",
                                                  interval=RefreshInterval.MINUTES_15, settings=settings)).source  # fmt: skip
        dispatch = refresh.in_process(settings)
        assert await refresh.tick(dispatch) == 0
        with frozen(clock.now() + 16 * MINUTE) as later:
            assert await refresh.tick(dispatch) == 1
            assert await refresh.tick(dispatch) == 0
        assert server.total == 2
    row = await TrackedSource.get(id=source.id)
    assert row.last_refreshed_at == later and row.next_refresh_at == later + 15 * MINUTE


async def test_refresh_now_refuses_uploads_and_untracked_sources(database, pki, settings):
    from backend.errors import BadUserInput, NotFound

    upload = (await tracked_sources.import_certificate(pki.leaf("x.test").pem, settings=settings)).source
    with pytest.raises(BadUserInput, match="re-import"):
        await refresh.refresh_now(upload.id, settings=settings, actor="a")
    with pytest.raises(NotFound):
        await refresh.refresh_now(999, settings=settings, actor="a")
    assert (await refresh.refresh_source(upload.id, settings=settings)).outcome is Outcome.SKIPPED


async def test_an_unchanged_refresh_is_one_statement_on_postgresql(database, pki, settings):
    from tests.support.statements import count_statements

    chain = pki.chain("shop.test")
    with TLSServer(chain) as server:
        url = f"https://127.0.0.1:{server.port}"
        source = (await tracked_sources.track_url(url, server_name="shop.test", settings=settings)).source
        target = refresh.Target(url, "shop.test", RefreshInterval.HOURS_1.value)
        with count_statements() as statements:
            result = await refresh.refresh_source(source.id, settings=settings, target=target)
        assert result.outcome is Outcome.UNCHANGED
        assert len(statements) == (1 if db.is_postgres() else 2), statements
        # A change of warnings (here: the chain loses its intermediate) takes the full path.
        server.serve([chain[0]])
        again = await refresh.refresh_source(source.id, settings=settings, target=target)
        assert again.outcome is Outcome.UNCHANGED and again.events == ()
    row = await TrackedSource.get(id=source.id)
    assert row.certificate_id == source.certificate_id
    assert [w["code"] for w in row.warnings] == ["INCOMPLETE_CHAIN"]
    assert (await Certificate.get(id=row.certificate_id)).last_seen_at == row.last_refreshed_at
