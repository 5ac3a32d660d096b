"""Put certificates into the inventory directly, for tests of reading it.

(Tests of how certificates *arrive* go through ingest and the checker.)
"""

from __future__ import annotations

import datetime as dt

from backend import clock, x509
from backend.models import Certificate, CertificateEvent, CertificateLocation, EventType, Host, LocationKind
from backend.models.location import place_key
from backend.services.certificates import certificate_fields


async def host(hostname: str) -> Host:
    found = await Host.get_or_none(hostname=hostname)
    return found or await Host.create(hostname=hostname, created_at=clock.now(), last_report_at=clock.now())


async def put(
    der: bytes,
    *,
    hosts: tuple[str, ...] = ("web-1.test",),
    path: str = "/etc/ssl/site.pem",
    removed: bool = False,
    current: bool | None = None,
    last_seen_at: dt.datetime | None = None,
) -> Certificate:
    """Store ``der`` (once) with a FILE location on each host and a DISCOVERED event each."""
    now = clock.now()
    desc = x509.describe(der)
    cert = await Certificate.get_or_none(fingerprint_sha256=desc.fingerprint_sha256)
    if cert is None:
        fields = certificate_fields(desc, now)
        if last_seen_at is not None:
            fields["last_seen_at"] = last_seen_at
        cert = await Certificate.create(**fields)
    for hostname in hosts:
        h = await host(hostname)
        location = await CertificateLocation.create(
            certificate=cert, host=h, kind=LocationKind.FILE, place=place_key("FILE", path=path), path=path,
            index=0, first_seen_at=now, last_seen_at=now, removed_at=now if removed else None,
        )
        await CertificateEvent.create(
            type=EventType.DISCOVERED, occurred_at=now, certificate=cert, host=h, location=location,
            actor="test", details={},
        )
    live = await CertificateLocation.filter(certificate_id=cert.id, removed_at__isnull=True).count()
    cert.live_locations = live
    cert.seen_by_agent = True
    cert.is_current = live > 0 if current is None else current
    await cert.save(update_fields=["live_locations", "seen_by_agent", "is_current"])
    return cert
