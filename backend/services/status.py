"""Expiry status as ranges of ``not_after``.

Status is a function of ``not_after`` and now, so each status is a half-open
range of ``not_after`` and a status filter is an OR of indexed range conditions:

- EXPIRED   ``not_after <= now``
- CRITICAL  ``now < not_after < now + 14 d``
- WARNING   ``now + 14 d <= not_after < now + 30 d``
- OK        ``not_after >= now + 30 d``
"""

from __future__ import annotations

import datetime as dt
import enum
import math

from tortoise.expressions import Q

from backend import clock

CRITICAL_DAYS = 14
WARNING_DAYS = 30


class CertificateStatus(str, enum.Enum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    EXPIRED = "EXPIRED"


# Worst first: the order used for "worst status" comparisons.
SEVERITY = {
    CertificateStatus.EXPIRED: 3,
    CertificateStatus.CRITICAL: 2,
    CertificateStatus.WARNING: 1,
    CertificateStatus.OK: 0,
}


def status_of(not_after: dt.datetime, now: dt.datetime | None = None) -> CertificateStatus:
    now = now or clock.now()
    if not_after <= now:
        return CertificateStatus.EXPIRED
    if not_after < now + dt.timedelta(days=CRITICAL_DAYS):
        return CertificateStatus.CRITICAL
    if not_after < now + dt.timedelta(days=WARNING_DAYS):
        return CertificateStatus.WARNING
    return CertificateStatus.OK


def days_remaining(not_after: dt.datetime, now: dt.datetime | None = None) -> int:
    """floor((notAfter - now) / 1 day): negative once expired."""
    now = now or clock.now()
    return math.floor((not_after - now) / clock.DAY)


def bounds(status: CertificateStatus, now: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(low, high)`` of the status' not_after range; low is exclusive only for CRITICAL."""
    critical = now + dt.timedelta(days=CRITICAL_DAYS)
    warning = now + dt.timedelta(days=WARNING_DAYS)
    return {
        CertificateStatus.EXPIRED: (None, now),
        CertificateStatus.CRITICAL: (now, critical),
        CertificateStatus.WARNING: (critical, warning),
        CertificateStatus.OK: (warning, None),
    }[status]


def status_q(status: CertificateStatus, now: dt.datetime, field: str = "not_after") -> Q:
    """The ORM condition selecting one status."""
    critical = now + dt.timedelta(days=CRITICAL_DAYS)
    warning = now + dt.timedelta(days=WARNING_DAYS)
    if status is CertificateStatus.EXPIRED:
        return Q(**{f"{field}__lte": now})
    if status is CertificateStatus.CRITICAL:
        return Q(**{f"{field}__gt": now, f"{field}__lt": critical})
    if status is CertificateStatus.WARNING:
        return Q(**{f"{field}__gte": critical, f"{field}__lt": warning})
    return Q(**{f"{field}__gte": warning})


def statuses_q(statuses: list[CertificateStatus], now: dt.datetime, field: str = "not_after") -> Q:
    q = Q()
    for i, status in enumerate(dict.fromkeys(statuses)):
        q = status_q(status, now, field) if i == 0 else (q | status_q(status, now, field))
    return q
