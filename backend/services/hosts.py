"""Hosts: whether their agent still reports, and retiring them.

A host is STALE when no report arrived for three of its reporting intervals
(one hour when the agent never said), counted from its last report or, before
the first one, from its enrolment. RETIRED hosts are out of the inventory:
their places are removed and their tokens revoked.
"""

from __future__ import annotations

import datetime as dt
import enum

from backend import clock
from backend.db import after_commit, transaction
from backend.errors import NotFound
from backend.models import ApiToken, CertificateLocation, EventType, Host, Role
from backend.services import bulk, certificate_rows, tokens
from backend.services.events import HOST_RETIRED, NewEvent, place_details, record

DEFAULT_INTERVAL_SECONDS = 3600
STALE_AFTER_INTERVALS = 3


class HostStatus(str, enum.Enum):
    ACTIVE = "ACTIVE"
    STALE = "STALE"
    RETIRED = "RETIRED"


def host_status(host: Host, now: dt.datetime | None = None) -> HostStatus:
    if host.retired_at is not None:
        return HostStatus.RETIRED
    now = now or clock.now()
    last = host.last_report_at or host.created_at
    interval = dt.timedelta(seconds=host.interval_seconds or DEFAULT_INTERVAL_SECONDS)
    return HostStatus.STALE if now - last > STALE_AFTER_INTERVALS * interval else HostStatus.ACTIVE


async def retire_host(host_id: int, actor: str) -> Host:
    """Remove every place of the host (REMOVED_FROM_HOST) and revoke its tokens.

    Its certificates stop being current unless present elsewhere. Retiring a
    retired host changes nothing. Enrolling its hostname again brings it back.
    """
    now = clock.now()
    touched: set[int] = set()
    async with transaction() as conn:
        stamped = await bulk.fetch(
            conn, "UPDATE host SET retired_at = ? WHERE id = ? AND retired_at IS NULL RETURNING id", [now, host_id]
        )
        if stamped:
            places = await CertificateLocation.filter(host_id=host_id, removed_at__isnull=True).order_by("id")
            if places:
                where, params = bulk.in_ids(conn, "id", [p.id for p in places])
                await bulk.execute(conn, f"UPDATE certificate_location SET removed_at = ? WHERE {where}", [now, *params])
                touched = {p.certificate_id for p in places}
                await certificate_rows.refresh_presence(conn, touched)
                events = [
                    NewEvent(EventType.REMOVED_FROM_HOST, p.certificate_id, host_id, p.id,
                             details={**place_details(p), "reason": HOST_RETIRED, "replacedBy": None})
                    for p in places
                ]  # fmt: skip
                await record(conn, events, actor=actor, now=now)
            await revoke_tokens_of_host(host_id, now)
    if stamped:
        from backend.services import alerts

        await alerts.after_host_change(host_id, touched)
    host = await Host.get_or_none(id=host_id)
    if host is None:
        raise NotFound("No such host.")
    return host


async def revoke_tokens_of_host(host_id: int, now: dt.datetime, *, role: Role | None = None) -> list[int]:
    """Revoke the host's live tokens (of ``role`` only, if given), in the caller's
    transaction; their open connections close after commit, as with revokeApiToken."""
    live = ApiToken.filter(host_id=host_id, revoked_at__isnull=True)
    if role is not None:
        live = live.filter(role=role)
    ids = list(await live.values_list("id", flat=True))
    if ids:
        await ApiToken.filter(id__in=ids, revoked_at__isnull=True).update(revoked_at=now)
        after_commit(tokens.REVOKED_TOPIC, {"revoked": ids})
    return ids
