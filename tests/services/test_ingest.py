"""Ingest semantics, through the service, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib

import pytest

from backend import clock
from backend.errors import Forbidden, TooLarge
from backend.models import Certificate, CertificateEvent, CertificateLocation, EventType, Host, ScanPart
from backend.services import ingest
from backend.services.certificate_rows import TABLE
from tests import certs
from tests.support.databases import postgres_only
from tests.support.reports import document, file_item, port_item, service_report
from tests.support.statements import count_statements

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
DAY = dt.timedelta(days=1)
MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def at():
    """Move the frozen clock: ``at(minutes)`` -> the instant T0 + minutes."""

    def move(minutes: float = 0) -> dt.datetime:
        instant = T0 + minutes * MINUTE
        clock.freeze(instant)
        return instant

    move(0)
    yield move
    clock.freeze(None)


def leaf(name: str, days_left: float = 60, **kw) -> bytes:
    not_after = T0 + days_left * DAY
    return certs.make_cert(name, sans=(name,), not_before=not_after - 90 * DAY, not_after=not_after, **kw).der


async def new_host(hostname: str = "web-1.test") -> Host:
    return await Host.create(hostname=hostname, created_at=clock.now())


async def report(host: Host, items: list[dict], **kw) -> ingest.ReportResult:
    return await ingest.report_certificates(host.id, f"agent:{host.hostname}", service_report(document(host.hostname, items, **kw)))


async def cert(der: bytes) -> Certificate:
    return await Certificate.get(fingerprint_sha256=hashlib.sha256(der).hexdigest())


async def events(*types: EventType) -> list[CertificateEvent]:
    qs = CertificateEvent.all().order_by("id")
    if types:
        qs = qs.filter(type__in=[t.value for t in types])
    return await qs


async def test_the_bulk_insert_writes_every_certificate_column(database):
    meta = Certificate._meta
    columns = {meta.fields_db_projection[f] for f in meta.db_fields}
    assert columns - {c for c, _ in TABLE.columns} == {"id", "renewed_from_id"}


async def test_an_unknown_certificate_is_stored_and_discovered(database, at):
    host = await new_host()
    der = leaf("shop.test")
    result = await report(host, [file_item(der, "/etc/ssl/shop.pem")])
    assert (result.accepted, result.new_certificates, result.events_recorded, result.stale) == (1, 1, 1, False)

    c = await cert(der)
    assert (c.live_locations, c.is_current, c.seen_by_agent, c.last_status) == (1, True, True, "OK")
    assert c.sort_name == "shop.test" and "shop.test" in c.search_text
    assert c.first_seen_at == c.last_seen_at == T0
    [location] = await CertificateLocation.filter(certificate_id=c.id)
    assert (location.host_id, location.path, location.index, location.removed_at) == (host.id, "/etc/ssl/shop.pem", 0, None)
    [event] = await events()
    assert (event.type, event.certificate_id, event.host_id, event.location_id) == ("DISCOVERED", c.id, host.id, location.id)
    assert event.actor == "agent:web-1.test"
    assert event.details == {"kind": "FILE", "path": "/etc/ssl/shop.pem", "index": 0, "alias": None, "address": None,
                             "port": None, "serverName": None}  # fmt: skip
    host = await Host.get(id=host.id)
    assert host.last_report_at == T0 and host.last_scanned_at == T0 and host.os == "TestOS"


async def test_a_known_certificate_on_another_host_is_discovered_there(database, at):
    der = leaf("shared.test")
    a, b = await new_host("a.test"), await new_host("b.test")
    await report(a, [file_item(der)])
    at(5)
    result = await report(b, [port_item(der, "10.0.0.2", 8443, serverName="shared.test")])
    assert (result.new_certificates, result.events_recorded) == (0, 1)
    c = await cert(der)
    assert c.live_locations == 2 and c.last_seen_at == T0 + 5 * MINUTE
    assert [(e.type, e.host_id) for e in await events()] == [("DISCOVERED", a.id), ("DISCOVERED", b.id)]
    assert await Certificate.all().count() == 1


async def test_an_unchanged_report_changes_only_last_seen(database, at):
    host = await new_host()
    der = leaf("same.test")
    await report(host, [file_item(der)])
    at(60)
    result = await report(host, [file_item(der)])
    assert (result.accepted, result.new_certificates, result.events_recorded) == (1, 0, 0)
    [location] = await CertificateLocation.all()
    assert location.first_seen_at == T0 and location.last_seen_at == T0 + 60 * MINUTE
    assert (await cert(der)).last_seen_at == T0 + 60 * MINUTE


async def test_a_bundle_gaining_or_losing_an_entry_only_moves_indexes(database, at):
    host = await new_host()
    site, intermediate, root = certs.make_chain("bundle.test")
    path = "/etc/nginx/fullchain.pem"
    await report(host, [file_item(site.der, path, 0), file_item(intermediate.der, path, 1)])
    at(1)
    first = await report(host, [file_item(root.der, path, 0), file_item(site.der, path, 1), file_item(intermediate.der, path, 2)])
    assert first.events_recorded == 1  # only the root is new
    assert [(e.type, e.certificate_id) for e in await events()][-1] == ("DISCOVERED", (await cert(root.der)).id)
    indexes = {loc.certificate_id: loc.index for loc in await CertificateLocation.filter(removed_at__isnull=True)}
    assert indexes[(await cert(site.der)).id] == 1 and indexes[(await cert(intermediate.der)).id] == 2

    at(2)
    second = await report(host, [file_item(site.der, path, 0), file_item(intermediate.der, path, 1)])
    assert second.events_recorded == 1  # the root left the file
    [removed] = await events(EventType.REMOVED_FROM_HOST)
    assert removed.certificate_id == (await cert(root.der)).id and removed.details["reason"] == "MISSING"
    assert await CertificateLocation.filter(removed_at__isnull=True).count() == 2


@pytest.mark.parametrize(
    ("new_days_left", "outcome", "reissued"),
    [(120, "RENEWED", False), (60, "RENEWED", True), (30, "EXPIRY_CHANGED", None)],
)
async def test_another_certificate_with_a_shared_name_at_the_same_place(database, at, new_days_left, outcome, reissued):
    host = await new_host()
    old = leaf("api.test")
    new = certs.make_cert("other-cn.test", sans=("www.api.test", "API.test"), not_before=T0 - DAY,
                          not_after=T0 + new_days_left * DAY).der  # fmt: skip
    await report(host, [file_item(old, "/etc/ssl/api.pem")])
    at(1)
    result = await report(host, [file_item(new, "/etc/ssl/api.pem")])
    assert (result.new_certificates, result.events_recorded) == (1, 1)

    old_row, new_row = await cert(old), await cert(new)
    [event] = await events(EventType.RENEWED, EventType.EXPIRY_CHANGED)
    assert (event.type, event.certificate_id, event.host_id) == (outcome, new_row.id, host.id)
    assert event.details["previousFingerprint"] == old_row.fingerprint_sha256
    assert event.details["keyChanged"] is False  # the factory reuses one leaf key
    if outcome == "RENEWED":
        assert event.details["reissued"] is reissued
    else:
        assert event.details["previousNotAfter"] == (T0 + 60 * DAY).isoformat()
        assert event.details["notAfter"] == (T0 + 30 * DAY).isoformat()
    assert new_row.renewed_from_id == old_row.id
    assert (old_row.is_current, old_row.live_locations, new_row.is_current) == (False, 0, True)
    assert [e.type for e in await events()] == ["DISCOVERED", outcome]


async def test_a_renewal_with_a_new_key_says_so(database, at):
    host = await new_host()
    old = leaf("keyed.test")
    new = leaf("keyed.test", 120, key=certs.make_key("ec", slot="another key"))
    await report(host, [port_item(old, "10.0.0.1", 443)])
    await report(host, [port_item(new, "10.0.0.1", 443)])
    [event] = await events(EventType.RENEWED)
    assert event.details == {"previousFingerprint": (await cert(old)).fingerprint_sha256, "keyChanged": True,
                             "reissued": False}  # fmt: skip


async def test_a_certificate_with_no_name_in_common_is_a_replacement(database, at):
    host = await new_host()
    old, new = leaf("old-site.test"), leaf("new-site.test", 120)
    await report(host, [file_item(old, "/etc/ssl/site.pem")])
    at(1)
    result = await report(host, [file_item(new, "/etc/ssl/site.pem")], complete=False)
    assert result.events_recorded == 2
    removed, discovered = (await events())[1:]
    assert (removed.type, removed.certificate_id) == ("REMOVED_FROM_HOST", (await cert(old)).id)
    assert removed.details["reason"] == "REPLACED" and removed.details["replacedBy"] == (await cert(new)).fingerprint_sha256
    assert (discovered.type, discovered.certificate_id) == ("DISCOVERED", (await cert(new)).id)
    assert (await cert(new)).renewed_from_id is None
    assert (await cert(old)).is_current is False


async def test_complete_scans_remove_partial_scans_do_not_and_a_later_scan_restores(database, at):
    host = await new_host()
    keep, goes = leaf("keep.test"), leaf("goes.test")
    await report(host, [file_item(keep, "/a.pem"), file_item(goes, "/b.pem")])
    at(1)
    partial = await report(host, [file_item(keep, "/a.pem")], complete=False)
    assert partial.events_recorded == 0 and (await cert(goes)).is_current

    at(2)
    complete = await report(host, [file_item(keep, "/a.pem")])
    assert complete.events_recorded == 1
    [removed] = await events(EventType.REMOVED_FROM_HOST)
    assert removed.certificate_id == (await cert(goes)).id
    location = await CertificateLocation.get(path="/b.pem")
    assert location.removed_at == T0 + 2 * MINUTE
    assert (await cert(goes)).is_current is False and (await cert(goes)).live_locations == 0

    at(3)
    back = await report(host, [file_item(keep, "/a.pem"), file_item(goes, "/b.pem")], complete=False)
    assert back.events_recorded == 1
    [restored] = await events(EventType.RESTORED)
    assert (restored.certificate_id, restored.location_id) == ((await cert(goes)).id, location.id)
    assert (await CertificateLocation.get(id=location.id)).removed_at is None
    assert (await cert(goes)).is_current is True
    assert await CertificateLocation.all().count() == 2


async def test_a_complete_scan_in_parts_removes_only_after_its_last_part(database, at):
    host = await new_host()
    a, b, c = leaf("a.test"), leaf("b.test"), leaf("c.test")
    await report(host, [file_item(a, "/a.pem"), file_item(b, "/b.pem"), file_item(c, "/c.pem")])
    at(10)
    first = await report(host, [file_item(a, "/a.pem")], scan_id="scan-2", part=0, last_part=False)
    assert first.events_recorded == 0
    assert await CertificateLocation.filter(removed_at__isnull=True).count() == 3
    at(11)
    last = await report(host, [file_item(b, "/b.pem")], scan_id="scan-2", part=1, last_part=True)
    assert last.events_recorded == 1
    [removed] = await events(EventType.REMOVED_FROM_HOST)
    assert removed.certificate_id == (await cert(c)).id
    assert {loc.path for loc in await CertificateLocation.filter(removed_at__isnull=True)} == {"/a.pem", "/b.pem"}


async def test_a_last_part_without_its_earlier_parts_removes_nothing(database, at):
    host = await new_host()
    a, b = leaf("a.test"), leaf("b.test")
    await report(host, [file_item(a, "/a.pem"), file_item(b, "/b.pem")])
    at(10)
    result = await report(host, [file_item(b, "/b.pem")], scan_id="scan-2", part=1, last_part=True)
    assert result.events_recorded == 0
    assert await CertificateLocation.filter(removed_at__isnull=True).count() == 2


async def test_replaying_a_part_changes_nothing(database, at):
    host = await new_host()
    doc = document(host.hostname, [file_item(leaf("replay.test"))], scan_id="scan-1")
    first = await ingest.report_certificates(host.id, "agent", service_report(doc))
    assert first.events_recorded == 1
    at(30)
    again = await ingest.report_certificates(host.id, "agent", service_report(doc))
    assert (again.accepted, again.new_certificates, again.events_recorded, again.stale) == (1, 0, 0, False)
    assert await CertificateEvent.all().count() == 1 and await ScanPart.all().count() == 1
    assert (await Host.get(id=host.id)).last_report_at == T0


async def test_a_replayed_old_part_after_a_newer_scan_changes_nothing(database, at):
    host = await new_host()
    old_scan = document(host.hostname, [file_item(leaf("first.test"), "/first.pem")], scan_id="scan-1")
    await ingest.report_certificates(host.id, "agent", service_report(old_scan))
    at(60)
    await report(host, [file_item(leaf("second.test"), "/second.pem")], scan_id="scan-2")
    at(61)
    replay = await ingest.report_certificates(host.id, "agent", service_report(old_scan))
    assert replay.events_recorded == 0 and replay.new_certificates == 0
    assert {loc.path for loc in await CertificateLocation.filter(removed_at__isnull=True)} == {"/second.pem"}


async def test_a_report_older_than_the_last_applied_scan_is_stale(database, at):
    host = await new_host()
    kept = leaf("kept.test")
    await report(host, [file_item(kept)], scanned_at=T0)
    at(5)
    stale = await report(host, [file_item(leaf("late.test"), "/late.pem")], scanned_at=T0 - MINUTE)
    assert (stale.stale, stale.accepted, stale.events_recorded, stale.new_certificates) == (True, 0, 0, 0)
    assert await Certificate.all().count() == 1 and await ScanPart.all().count() == 1
    assert (await Host.get(id=host.id)).last_report_at == T0
    same_time = await report(host, [file_item(kept)], scanned_at=T0)
    assert same_time.stale is False


async def test_a_scan_from_the_future_does_not_make_later_scans_stale(database, at):
    host = await new_host()
    await report(host, [], scanned_at=T0 + 365 * DAY)
    assert (await Host.get(id=host.id)).last_scanned_at == T0
    at(1)
    assert (await report(host, [], scanned_at=T0 + MINUTE)).stale is False


async def test_bad_items_are_rejected_by_index_and_the_rest_recorded(database, at):
    host = await new_host()
    good = leaf("good.test")
    items = [
        {"kind": "FILE", "path": "/bad-base64.pem", "der": "not base64!"},
        file_item(b"this is no certificate", "/junk.pem"),
        file_item(good, "/good.pem"),
        {"kind": "FILE", "path": "/huge.pem", "der": base64.b64encode(b"\x30" * (64 * 1024 + 1)).decode()},
        {"kind": "FILE", "der": base64.b64encode(good).decode()},
        {"kind": "PORT", "address": "10.0.0.1", "der": base64.b64encode(good).decode()},
        file_item(good, "/good.pem"),
    ]
    result = await report(host, items)
    assert (result.accepted, result.new_certificates, result.events_recorded) == (1, 1, 1)
    reasons = {r.index: r.reason for r in result.rejected}
    assert sorted(reasons) == [0, 1, 3, 4, 5, 6]
    assert "base64" in reasons[0]
    assert reasons[1].startswith("not a certificate")
    assert "64 KiB" in reasons[3]
    assert "path" in reasons[4] and "port" in reasons[5] and "item 2" in reasons[6]
    assert await CertificateLocation.all().count() == 1


async def test_a_part_over_the_limit_is_refused_whole(database, at):
    host = await new_host()
    items = [{"kind": "FILE", "path": f"/{i}.pem", "der": "AA=="} for i in range(ingest.MAX_ITEMS_PER_PART + 1)]
    with pytest.raises(TooLarge):
        await report(host, items)
    assert await ScanPart.all().count() == 0 and await CertificateEvent.all().count() == 0
    assert (await Host.get(id=host.id)).last_report_at is None


async def test_an_agent_reports_only_for_its_own_host(database, at):
    mine, other = await new_host("mine.test"), await new_host("other.test")
    doc = document("other.test", [file_item(leaf("x.test"))])
    with pytest.raises(Forbidden):
        await ingest.report_certificates(mine.id, "agent:mine", service_report(doc))
    assert await Certificate.all().count() == 0 and (await Host.get(id=other.id)).last_report_at is None


async def test_scan_errors_are_kept_from_the_last_part(database, at):
    host = await new_host()
    errors = [{"path": "/etc/ssl/private.pem", "reason": "permission denied"}]
    await report(host, [], errors=errors, interval_seconds=600)
    host = await Host.get(id=host.id)
    assert host.scan_errors == errors and host.interval_seconds == 600


async def test_a_file_that_could_not_be_read_this_time_is_not_taken_as_removed(database, at):
    host = await new_host()
    kept, gone = leaf("unreadable.test"), leaf("deleted.test")
    await report(host, [file_item(kept, "/etc/ssl/locked.pem"), file_item(gone, "/etc/ssl/deleted.pem")])
    at(1)
    result = await report(host, [], errors=[{"path": "/etc/ssl/locked.pem", "reason": "permission denied"}])
    assert result.events_recorded == 1
    [removed] = await events(EventType.REMOVED_FROM_HOST)
    assert removed.certificate_id == (await cert(gone)).id
    assert (await cert(kept)).is_current is True


@postgres_only  # SQLite has one writer: there is no race to test
async def test_concurrent_reports_with_the_same_new_certificates_store_them_once(database, at):
    hosts = [await new_host(f"race-{i}.test") for i in range(4)]
    for round in range(5):
        shared = [leaf(f"shared-{round}-{i}.test") for i in range(20)]
        ordered = [shared, shared[::-1], shared[5:] + shared[:5], shared[::2] + shared[1::2]]

        async def send(host: Host, ders: list[bytes]) -> ingest.ReportResult:
            items = [file_item(der, f"/etc/ssl/{i}.pem") for i, der in enumerate(ders)]
            return await ingest.report_certificates(
                host.id, host.hostname, service_report(document(host.hostname, items, complete=False))
            )

        results = await asyncio.gather(*(send(h, ders) for h, ders in zip(hosts, ordered, strict=True)))
        assert sum(r.new_certificates for r in results) == 20
        assert all(r.accepted == 20 for r in results)
        for der in shared:
            row = await cert(der)
            assert (row.live_locations, row.is_current) == (4, True)
    assert await Certificate.all().count() == 100


async def test_a_shifted_bundle_costs_the_same_statements_whatever_its_size(database, at):
    host = await new_host()
    counts = {}
    for size in (5, 30):
        path = f"/etc/ssl/bundle-{size}.pem"
        new_top = leaf(f"new-top-{size}.test")
        ders = [leaf(f"b{size}-{i}.test") for i in range(size)]
        await report(host, [file_item(der, path, i) for i, der in enumerate(ders)], complete=False)
        at(size)
        shifted = [file_item(new_top, path, 0)] + [file_item(der, path, i + 1, linkPaths=["/etc/ssl/current.pem"])
                                                    for i, der in enumerate(ders)]  # fmt: skip
        with count_statements() as statements:
            result = await report(host, shifted, complete=False)
        assert result.events_recorded == 1  # only new-top, DISCOVERED
        counts[size] = len(statements)
        moved = await CertificateLocation.filter(path=path, removed_at__isnull=True).order_by("index")
        assert [loc.index for loc in moved] == list(range(size + 1))
        assert all(loc.link_paths == ["/etc/ssl/current.pem"] for loc in moved[1:])
    assert counts[5] == counts[30], counts


async def test_a_keystore_entry_is_placed_by_alias_whatever_its_index(database, at):
    host = await new_host()
    der = leaf("jks.test")
    await report(host, [file_item(der, "/opt/app/keystore.jks", 3, alias="server")])
    at(1)
    result = await report(host, [file_item(der, "/opt/app/keystore.jks", 0, alias="server")])
    assert result.events_recorded == 0
    [location] = await CertificateLocation.all()
    assert (location.index, location.alias, location.removed_at) == (0, "server", None)


async def test_a_keystore_entry_with_a_chain_keeps_every_certificate(database, at):
    host = await new_host()
    chain = [leaf("jks-chain.test"), certs.make_ca("JKS Intermediate").der, certs.make_ca("JKS Root").der]
    items = [file_item(der, "/opt/app/keystore.jks", i, alias="server") for i, der in enumerate(chain)]
    result = await report(host, items)
    assert result.rejected == [] and result.accepted == 3
    at(1)
    again = await report(host, items)
    assert again.rejected == [] and again.events_recorded == 0
    places = await CertificateLocation.filter(removed_at__isnull=True).order_by("index")
    assert [(p.alias, p.index) for p in places] == [("server", 0), ("server", 1), ("server", 2)]


async def test_another_chain_certificate_behind_a_port_is_a_new_place_not_a_renewal(database, at):
    host = await new_host()
    site = leaf("site.test")
    old_ca, new_ca = certs.make_ca("Old CA").der, certs.make_ca("Old CA", key_kind="rsa").der
    await report(host, [port_item(site, index=0), port_item(old_ca, index=1)])
    at(1)
    partial = await report(host, [port_item(site, index=0), port_item(new_ca, index=1)], complete=False)
    assert [e.type for e in await events()][-1:] == ["DISCOVERED"] and partial.events_recorded == 1
    assert (await cert(new_ca)).renewed_from_id is None
    at(2)
    complete = await report(host, [port_item(site, index=0), port_item(new_ca, index=1)])
    assert complete.events_recorded == 1
    [removed] = await events(EventType.REMOVED_FROM_HOST)
    assert removed.certificate_id == (await cert(old_ca)).id and removed.details["reason"] == "MISSING"
