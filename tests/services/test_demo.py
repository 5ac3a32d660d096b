"""seed-demo: real certificates, stored exactly as ingest would store them, fast.

Runs on SQLite and PostgreSQL (the ``database`` fixture). Batches are made
small so a few dozen certificates take the multi-batch path (and, on
PostgreSQL, the overlapped write).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections import Counter, defaultdict

import pytest

from backend import clock, x509
from backend.models import Certificate, CertificateEvent, CertificateLocation, EventType, Host, LocationKind
from backend.models.location import place_key
from backend.services import demo, inventory
from backend.services.status import CertificateStatus, status_of

X509_FIELDS = [f.name for f in dataclasses.fields(x509.CertificateDescription)]


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    monkeypatch.setattr(demo, "BATCH_SIZE", 16)


def stored_value(cert: Certificate, name: str):
    value = getattr(cert, name)
    return bytes(value) if name == "der" else value


def described_value(d: x509.CertificateDescription, name: str):
    value = getattr(d, name)
    if name == "sans":
        return [{"type": s.type, "value": s.value} for s in value]
    return list(value) if isinstance(value, tuple) else value


async def test_seeds_real_certificates_stored_exactly_as_described(database):
    before = clock.now()
    result = await demo.seed_demo(60, seed=7)
    after = clock.now()

    assert (result.certificates, result.hosts) == (60, 6)
    assert result.events == result.locations
    assert await Certificate.all().count() == 60
    assert await Host.all().count() == 6
    assert await CertificateLocation.all().count() == result.locations
    assert await CertificateEvent.all().count() == result.events

    certificates = await Certificate.all().order_by("id")
    for cert in certificates:
        d = x509.describe(bytes(cert.der))
        for name in X509_FIELDS:
            assert stored_value(cert, name) == described_value(d, name), (cert.common_name, name)
        assert cert.search_text == "\n".join([d.common_name, *(s.value for s in d.sans), d.subject, d.issuer]).lower()
        assert cert.sort_name == d.common_name.lower()
        assert cert.last_status == status_of(d.not_after).value
        assert before <= cert.first_seen_at == cert.last_seen_at == cert.created_at <= after
        assert (cert.is_current, cert.seen_by_agent, cert.imported, cert.live_sources) == (True, True, False, 0)
        assert cert.renewed_from_id is None
    assert len({c.fingerprint_sha256 for c in certificates}) == 60


async def test_a_demo_ca_signs_mostly_ec_leaves(database):
    await demo.seed_demo(60, seed=7)
    certificates = await Certificate.all()
    cas = sorted((c for c in certificates if c.is_ca), key=lambda c: c.id)
    assert [(c.common_name, c.self_signed, c.path_length) for c in cas] == [
        (demo.ROOT_NAME, True, 1),
        (demo.INTERMEDIATE_NAME, False, 0),
    ]
    root, intermediate = cas
    assert intermediate.authority_key_identifier == root.subject_key_identifier
    leaves = [c for c in certificates if not c.is_ca]
    assert {c.issuer_common_name for c in leaves} == {demo.INTERMEDIATE_NAME}
    assert {c.authority_key_identifier for c in leaves} == {intermediate.subject_key_identifier}
    kinds = Counter((c.key_algorithm, c.key_size, c.curve) for c in leaves)
    assert set(kinds) == {("EC", 256, "P-256"), ("RSA", 2048, None), ("ED25519", 256, None)}
    assert kinds[("EC", 256, "P-256")] > len(leaves) / 2
    # a small key pool: keys repeat across leaves
    assert len({c.spki_sha256 for c in leaves}) <= 8


async def test_every_status_shows_up_and_the_inventory_counts_them(database):
    await demo.seed_demo(60, seed=7)
    stats = await inventory.certificate_stats(inventory.CertificateQuery())
    assert stats.total == 60
    assert min(stats.ok, stats.warning, stats.critical, stats.expired) > 0
    assert stats.ok > stats.warning + stats.critical + stats.expired
    now = clock.now()
    days = [(c.not_after - now) / dt.timedelta(days=1) for c in await Certificate.filter(is_ca=False)]
    assert any(0 < d <= 7 for d in days) and any(7 < d <= 14 for d in days)
    page = await inventory.list_certificates(
        inventory.CertificateQuery(statuses=(CertificateStatus.WARNING, CertificateStatus.CRITICAL)), first=100
    )
    assert len(page.items) == stats.warning + stats.critical
    assert all(status_of(c.not_after) in (CertificateStatus.WARNING, CertificateStatus.CRITICAL) for c in page.items)
    found = await inventory.list_certificates(inventory.CertificateQuery(search=page.items[0].common_name.upper()))
    assert [c.id for c in found.items] == [page.items[0].id]


async def test_each_certificate_is_on_one_to_five_hosts_with_a_discovered_event_per_place(database):
    result = await demo.seed_demo(60, seed=7)
    certificates = {c.id: c for c in await Certificate.all()}
    hosts = {h.id: h for h in await Host.all()}
    locations = await CertificateLocation.all()
    events = await CertificateEvent.all()

    by_certificate = defaultdict(list)
    for location in locations:
        by_certificate[location.certificate_id].append(location)
    assert set(by_certificate) == set(certificates)
    for cert_id, places in by_certificate.items():
        host_ids = [p.host_id for p in places]
        assert 1 <= len(set(host_ids)) == len(host_ids) <= 5
        assert certificates[cert_id].live_locations == len(places)
    assert {loc.host_id for loc in locations} == set(hosts)  # every host holds something

    kinds = Counter(loc.kind for loc in locations)
    assert kinds[LocationKind.FILE] > kinds[LocationKind.PORT] > 0
    for loc in locations:
        assert loc.removed_at is None and loc.first_seen_at == loc.last_seen_at
        assert loc.place == place_key(
            loc.kind, path=loc.path, index=loc.index, alias=loc.alias, address=loc.address, port=loc.port,
            server_name=loc.server_name,
        )  # fmt: skip
        if loc.kind is LocationKind.FILE:
            assert re.fullmatch(r"/[\w/.-]+\.(pem|crt)", loc.path) and loc.address is None
        else:
            assert re.fullmatch(r"10\.\d+\.\d+\.\d+", loc.address) and loc.port and loc.path is None
            assert loc.server_name == certificates[loc.certificate_id].common_name
    assert len({(loc.host_id, loc.place) for loc in locations}) == len(locations)

    assert len(events) == len(locations) == result.locations
    by_location = {e.location_id: e for e in events}
    for loc in locations:
        event = by_location[loc.id]
        assert event.type is EventType.DISCOVERED
        assert (event.certificate_id, event.host_id, event.actor) == (loc.certificate_id, loc.host_id, "seed-demo")
        assert event.occurred_at == loc.first_seen_at
        assert event.details == {
            "kind": loc.kind.value, "path": loc.path, "index": 0, "alias": None, "address": loc.address,
            "port": loc.port, "serverName": loc.server_name,
        }  # fmt: skip


async def test_running_it_again_adds_more_without_collisions(database):
    first = await demo.seed_demo(60, seed=7)
    hostnames_before = set(await Host.all().values_list("hostname", flat=True))
    second = await demo.seed_demo(40, hosts=3, seed=7)  # the same seed: still new certificates

    assert (second.certificates, second.hosts) == (40, 3)
    assert await Certificate.all().count() == 100
    assert len(set(await Certificate.all().values_list("fingerprint_sha256", flat=True))) == 100
    assert await CertificateLocation.all().count() == first.locations + second.locations
    assert await CertificateEvent.all().count() == first.events + second.events
    hostnames = await Host.all().order_by("id").values_list("hostname", flat=True)
    assert hostnames[:6] == sorted(hostnames_before)
    assert hostnames[6:] == [f"demo-{n:05d}.demo.internal" for n in (7, 8, 9)]
    assert await Certificate.filter(common_name=demo.ROOT_NAME).count() == 2
    # the second run's certificates sit on the second run's hosts only
    new_hosts = set(await Host.filter(hostname__in=hostnames[6:]).values_list("id", flat=True))
    newest = await Certificate.all().order_by("-id").limit(40).values_list("id", flat=True)
    holders = await CertificateLocation.filter(certificate_id__in=newest).values_list("host_id", flat=True)
    assert set(holders) <= new_hosts


async def test_progress_is_reported_per_batch_and_nothing_is_asked_for_nothing(database):
    seen = []
    result = await demo.seed_demo(40, hosts=2, progress=seen.append)
    assert seen == [16, 32, 40]
    assert result.hosts == 2
    assert max(Counter(await CertificateLocation.all().values_list("certificate_id", flat=True)).values()) <= 2

    nothing = await demo.seed_demo(0)
    assert (nothing.certificates, nothing.hosts, nothing.locations, nothing.events) == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        await demo.seed_demo(-1)
    with pytest.raises(ValueError):
        await demo.seed_demo(5, hosts=0)


async def test_a_filled_in_description_that_differs_from_describe_stops_the_seed(database, monkeypatch):
    class WrongSha1:
        sha256 = staticmethod(hashlib.sha256)

        @staticmethod
        def sha1(data, usedforsecurity=True):
            return hashlib.sha1(b"not " + data, usedforsecurity=usedforsecurity)

    monkeypatch.setattr(demo, "VERIFY_EVERY", 1)
    monkeypatch.setattr(demo, "hashlib", WrongSha1)
    with pytest.raises(RuntimeError, match="differently from x509.describe"):
        await demo.seed_demo(20, seed=7)
