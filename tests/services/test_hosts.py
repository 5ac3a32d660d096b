"""Host status and retiring a host."""

from __future__ import annotations

import datetime as dt

import pytest

from backend import clock, db
from backend.models import ApiToken, Certificate, CertificateEvent, CertificateLocation, Host
from backend.services import hosts, ingest, tokens
from backend.services.hosts import HostStatus
from tests import certs
from tests.support.reports import document, file_item, service_report

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("last_report", "interval", "status"),
    [
        (NOW - 3 * H, None, HostStatus.ACTIVE),
        (NOW - 3 * H - dt.timedelta(seconds=1), None, HostStatus.STALE),
        (NOW - 29 * dt.timedelta(minutes=1), 600, HostStatus.ACTIVE),
        (NOW - 31 * dt.timedelta(minutes=1), 600, HostStatus.STALE),
        (None, None, HostStatus.ACTIVE),  # counted from enrolment (created one hour ago)
    ],
)
def test_a_host_is_stale_after_three_intervals_without_a_report(last_report, interval, status):
    host = Host(hostname="h", created_at=NOW - H, last_report_at=last_report, interval_seconds=interval)
    assert hosts.host_status(host, NOW) is status
    host.retired_at = NOW
    assert hosts.host_status(host, NOW) is HostStatus.RETIRED


async def test_retiring_removes_its_places_revokes_its_tokens_and_keeps_what_is_elsewhere(database, make_token):
    only_here, shared = certs.make_cert("only.test", sans=("only.test",)).der, certs.make_cert("both.test", sans=("both.test",)).der
    a = await Host.create(hostname="a.test", created_at=clock.now())
    b = await Host.create(hostname="b.test", created_at=clock.now())
    for host, ders in ((a, [only_here, shared]), (b, [shared])):
        items = [file_item(der, f"/etc/ssl/{i}.pem") for i, der in enumerate(ders)]
        await ingest.report_certificates(host.id, "agent", service_report(document(host.hostname, items)))
    secret = await make_token("AGENT", host_id=a.id)

    published: list[tuple[str, dict]] = []
    db.set_publisher(lambda topic, payload: published.append((topic, payload)))
    try:
        retired = await hosts.retire_host(a.id, "admin")
    finally:
        db.set_publisher(None)
    assert retired.retired_at is not None and hosts.host_status(retired) is HostStatus.RETIRED
    assert await CertificateLocation.filter(host_id=a.id, removed_at__isnull=True).count() == 0
    removed = await CertificateEvent.filter(type="REMOVED_FROM_HOST").order_by("id")
    assert [(e.host_id, e.actor, e.details["reason"]) for e in removed] == [(a.id, "admin", "HOST_RETIRED")] * 2
    by_name = {c.common_name: c for c in await Certificate.all()}
    assert (by_name["only.test"].is_current, by_name["only.test"].live_locations) == (False, 0)
    assert (by_name["both.test"].is_current, by_name["both.test"].live_locations) == (True, 1)
    assert await tokens.authenticate(secret) is None
    token = await ApiToken.get(token_hash=tokens.hash_secret(secret))
    assert published == [("events", {"ids": [e.id for e in removed]}), ("tokens", {"revoked": [token.id]})]

    again = await hosts.retire_host(a.id, "admin")
    assert again.retired_at == retired.retired_at
    assert await CertificateEvent.filter(type="REMOVED_FROM_HOST").count() == 2
