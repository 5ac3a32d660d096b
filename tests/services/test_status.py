"""Status boundaries: exactly 30 days left is OK, exactly 14 is WARNING, notAfter == now is EXPIRED."""

import datetime as dt

import pytest

from backend.services.status import CertificateStatus as S
from backend.services.status import days_remaining, status_of

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
D = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("not_after", "status"),
    [
        (NOW + 30 * D + US, S.OK),
        (NOW + 30 * D, S.OK),
        (NOW + 30 * D - US, S.WARNING),
        (NOW + 14 * D, S.WARNING),
        (NOW + 14 * D - US, S.CRITICAL),
        (NOW + US, S.CRITICAL),
        (NOW, S.EXPIRED),
        (NOW - US, S.EXPIRED),
    ],
)
def test_status_boundaries(not_after, status):
    assert status_of(not_after, NOW) is status


@pytest.mark.parametrize(
    ("not_after", "days"),
    [(NOW + 30 * D, 30), (NOW + 30 * D - US, 29), (NOW + US, 0), (NOW, 0), (NOW - US, -1), (NOW - D, -1), (NOW - D - US, -2)],
)
def test_days_remaining_is_floored(not_after, days):
    assert days_remaining(not_after, NOW) == days
