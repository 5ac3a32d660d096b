"""Tracking URLs, importing uploads, untracking: against real TLS servers on loopback,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from backend import clock, outbound
from backend.errors import BadUserInput, CheckErrorCode, CheckFailed, NotFound
from backend.models import Certificate, CertificateEvent, EventType, RefreshInterval, SourceKind, TrackedSource
from backend.services import tracked_sources
from tests.support import inventory
from tests.support.checker import StaticResolver, checker_settings, make_pki
from tests.support.processes import free_port
from tests.support.tls_servers import TLSServer

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def settings(pki):
    return checker_settings(pki)


@pytest.fixture
def names():
    resolver = StaticResolver({"shop.test": ["127.0.0.1"], "api.test": ["127.0.0.1"]})
    with outbound.resolver_override(resolver):
        yield resolver


async def events_of(**filters) -> list[tuple[str, dict]]:
    return [(e.type.value, e.details) for e in await CertificateEvent.filter(**filters).order_by("id")]


async def test_tracking_a_url_stores_its_leaf_as_a_current_imported_certificate(database, pki, settings, names):
    chain = pki.chain("shop.test")
    with TLSServer(chain) as server:
        tracked = await tracked_sources.track_url(
            f"https://Shop.Test:{server.port}/login", interval=RefreshInterval.MINUTES_15, name="Shop", note="prod",
            settings=settings, actor="alice",
        )  # fmt: skip
    source, certificate = tracked.source, tracked.certificate
    assert tracked.already_tracked is False
    assert source.kind == SourceKind.URL and source.url == f"https://shop.test:{server.port}/login"
    assert source.identity == f"https://shop.test:{server.port}#"
    assert (source.name, source.note, source.refresh_interval) == ("Shop", "prod", RefreshInterval.MINUTES_15)
    assert source.next_refresh_at - source.last_refreshed_at == dt.timedelta(minutes=15)
    assert source.consecutive_failures == 0 and source.last_error is None and source.warnings == []
    assert certificate.fingerprint_sha256 == chain[0].fingerprint
    await certificate.refresh_from_db()
    assert (certificate.live_sources, certificate.is_current, certificate.imported) == (1, True, True)
    assert await Certificate.all().count() == 1  # the intermediate is not stored
    events = await CertificateEvent.filter(tracked_source_id=source.id)
    assert [(e.type, e.actor, e.certificate_id) for e in events] == [(EventType.IMPORTED, "alice", certificate.id)]
    assert events[0].details == {
        "kind": "URL", "url": source.url, "serverName": None, "reason": "NEW", "previousFingerprint": None,
    }  # fmt: skip


async def test_a_failed_first_fetch_stores_nothing(database, settings):
    with pytest.raises(CheckFailed) as caught:
        await tracked_sources.track_url(f"https://127.0.0.1:{free_port()}", settings=settings)
    assert caught.value.check_code is CheckErrorCode.CONNECTION_REFUSED
    assert await TrackedSource.all().count() == 0
    assert await Certificate.all().count() == 0
    assert await CertificateEvent.all().count() == 0


async def test_the_same_identity_is_tracked_once(database, pki, settings, names):
    with TLSServer(pki.chain("shop.test")) as server:
        first = await tracked_sources.track_url(f"shop.test:{server.port}", settings=settings)
        again = await tracked_sources.track_url(f"HTTPS://SHOP.TEST.:{server.port}/other-path", settings=settings)
        other_name = await tracked_sources.track_url(f"https://shop.test:{server.port}", server_name="api.test", settings=settings)
        assert server.total == 2  # the already-tracked call fetched nothing
    assert again.already_tracked is True and again.source.id == first.source.id
    assert other_name.already_tracked is False and other_name.source.id != first.source.id
    assert other_name.source.warnings[0]["code"] == "HOSTNAME_MISMATCH"


async def test_untracking_stops_refreshing_and_leaves_the_current_set(database, pki, settings, names):
    with TLSServer(pki.chain("shop.test")) as server:
        tracked = await tracked_sources.track_url(f"https://shop.test:{server.port}", settings=settings)
        source = await tracked_sources.untrack(tracked.source.id, actor="bob")
        assert source.untracked_at is not None and source.next_refresh_at is None
        certificate = await Certificate.get(id=tracked.certificate.id)
        assert (certificate.live_sources, certificate.is_current) == (0, False)
        assert [t for t, _ in await events_of(tracked_source_id=source.id)] == ["IMPORTED", "UNTRACKED"]
        assert (await tracked_sources.untrack(source.id)).untracked_at == source.untracked_at  # idempotent, no event
        assert await CertificateEvent.filter(type=EventType.UNTRACKED).count() == 1
        listed = await tracked_sources.list_sources(tracked_sources.SourceQuery())
        assert listed.items == []
        with_untracked = await tracked_sources.list_sources(tracked_sources.SourceQuery(include_untracked=True))
        assert [s.id for s in with_untracked.items] == [source.id]

        # Tracking it again reactivates the same source, history kept.
        back = await tracked_sources.track_url(f"https://shop.test:{server.port}", interval=RefreshInterval.HOURS_6, settings=settings)
    assert back.already_tracked is False and back.source.id == source.id
    assert back.source.untracked_at is None and back.source.refresh_interval == RefreshInterval.HOURS_6
    certificate = await Certificate.get(id=tracked.certificate.id)
    assert (certificate.live_sources, certificate.is_current) == (1, True)
    events = await events_of(tracked_source_id=source.id)
    assert [t for t, _ in events] == ["IMPORTED", "UNTRACKED", "IMPORTED"]
    assert events[-1][1]["reason"] == "REACTIVATED"


async def test_an_untracked_certificate_stays_current_when_a_host_has_it(database, pki, settings, names):
    chain = pki.chain("shop.test")
    await inventory.put(chain[0].der, hosts=("web-1.test",))
    with TLSServer(chain) as server:
        tracked = await tracked_sources.track_url(f"https://shop.test:{server.port}", settings=settings)
    await tracked_sources.untrack(tracked.source.id)
    certificate = await Certificate.get(id=tracked.certificate.id)
    assert (certificate.live_locations, certificate.live_sources, certificate.is_current) == (1, 0, True)


async def test_importing_and_reimporting_applies_the_renewal_rule(database, pki, settings):
    old = pki.leaf("upload.test", days=60)
    imported = await tracked_sources.import_certificate(old.pem, name=None, note="vpn", settings=settings, actor="carol")
    source = imported.source
    assert source.kind == SourceKind.UPLOAD and source.identity is None and source.next_refresh_at is None
    assert source.name == "upload.test" and source.note == "vpn"
    assert imported.certificate.fingerprint_sha256 == old.fingerprint

    renewed = pki.leaf("upload.test", days=120)
    again = await tracked_sources.import_certificate(renewed.pem + pki.intermediate.pem, tracked_source_id=source.id, settings=settings)
    assert again.source.id == source.id and again.certificate.fingerprint_sha256 == renewed.fingerprint
    assert again.certificate.renewed_from_id == imported.certificate.id
    assert again.source.warnings == []  # the intermediate came along this time
    shorter = pki.leaf("upload.test", days=30)
    await tracked_sources.import_certificate(shorter.pem, tracked_source_id=source.id, settings=settings)
    replacement = pki.leaf("other.test", days=90)
    final = await tracked_sources.import_certificate(replacement.pem, tracked_source_id=source.id, settings=settings)

    events = await events_of(tracked_source_id=source.id)
    assert [t for t, _ in events] == ["IMPORTED", "RENEWED", "EXPIRY_CHANGED", "UNTRACKED", "IMPORTED"]
    assert events[1][1] == {"previousFingerprint": old.fingerprint, "keyChanged": False, "reissued": False}
    assert events[3][1] == {"reason": "REPLACED", "replacedBy": replacement.fingerprint}
    assert events[4][1]["reason"] == "REPLACED" and events[4][1]["previousFingerprint"] == shorter.fingerprint
    current = await Certificate.filter(is_current=True).values_list("fingerprint_sha256", flat=True)
    assert current == [replacement.fingerprint]
    assert final.certificate.renewed_from_id is None

    page = await tracked_sources.history(source.id, first=2)
    assert [c.fingerprint_sha256 for c in page.items] == [replacement.fingerprint, shorter.fingerprint]
    assert page.has_next
    rest = await tracked_sources.history(source.id, first=10, after=page.end_cursor)
    assert [c.fingerprint_sha256 for c in rest.items] == [renewed.fingerprint, old.fingerprint]
    assert not rest.has_next
    assert await tracked_sources.count_history(source.id) == 4

    # Re-importing the same certificate changes nothing.
    await tracked_sources.import_certificate(replacement.pem, tracked_source_id=source.id, settings=settings)
    assert len(await events_of(tracked_source_id=source.id)) == 5


async def test_reimport_errors(database, pki, settings, names):
    with pytest.raises(NotFound):
        await tracked_sources.import_certificate(pki.leaf("x.test").pem, tracked_source_id=12345, settings=settings)
    with TLSServer(pki.chain("shop.test")) as server:
        url_source = (await tracked_sources.track_url(f"https://shop.test:{server.port}", settings=settings)).source
    with pytest.raises(BadUserInput, match="refreshed from its URL"):
        await tracked_sources.import_certificate(pki.leaf("shop.test").pem, tracked_source_id=url_source.id, settings=settings)


async def test_filters(database, pki, settings, names):
    with TLSServer(pki.chain("shop.test")) as server:
        url_source = (await tracked_sources.track_url(f"https://shop.test:{server.port}", settings=settings)).source
    upload = (await tracked_sources.import_certificate(pki.leaf("file.test").pem, settings=settings)).source
    await TrackedSource.filter(id=url_source.id).update(consecutive_failures=2)

    async def ids(**query) -> list[int]:
        return [s.id for s in (await tracked_sources.list_sources(tracked_sources.SourceQuery(**query))).items]

    assert await ids() == [url_source.id, upload.id]
    assert await ids(kind=SourceKind.UPLOAD) == [upload.id]
    assert await ids(failing=True) == [url_source.id]
    assert await ids(failing=False) == [upload.id]


async def test_two_concurrent_tracks_of_a_new_identity_make_one_source(database, pki, settings, names):
    with TLSServer(pki.chain("shop.test")) as server:
        results = await asyncio.gather(
            *(tracked_sources.track_url(f"https://shop.test:{server.port}", settings=settings) for _ in range(4))
        )
    assert len({r.source.id for r in results}) == 1
    assert sorted(r.already_tracked for r in results).count(False) == 1
    assert await TrackedSource.all().count() == 1
    assert await CertificateEvent.filter(type=EventType.IMPORTED).count() == 1
    certificate = await Certificate.get()
    assert certificate.live_sources == 1


async def test_current_warnings_recompute_expiry_at_read_time(database, pki, settings):
    leaf = pki.leaf("soon.test", days=40)
    source = (await tracked_sources.import_certificate(leaf.pem, settings=settings)).source
    certificate = await Certificate.get(id=source.certificate_id)
    assert [w.code.value for w in tracked_sources.current_warnings(source, certificate)] == ["INCOMPLETE_CHAIN"]
    later = clock.now() + dt.timedelta(days=20)
    assert [w.code.value for w in tracked_sources.current_warnings(source, certificate, later)] == [
        "EXPIRES_SOON", "INCOMPLETE_CHAIN",
    ]  # fmt: skip
