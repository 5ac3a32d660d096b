"""The one clock.

Every "now" in the product (status, daysRemaining, sweeps, refresh scheduling,
alerts, retries, stored timestamps) comes from :func:`now`. Processes can be
moved in time with ``CTOPS_CLOCK_OFFSET_SECONDS`` (an exact offset, so processes
sharing the value agree to the microsecond) or ``CTOPS_FAKE_NOW`` (ISO 8601: the
offset that makes the clock read that instant when the process starts).
"""

from __future__ import annotations

import datetime as dt
import os

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)

_offset: dt.timedelta = dt.timedelta(0)
_frozen: dt.datetime | None = None


def parse_instant(text: str) -> dt.datetime:
    """Parse an ISO 8601 instant; a naive value is taken as UTC."""
    value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def configure(offset_seconds: float | None = None, fake_now: str | None = None) -> None:
    """Set the offset from explicit values (settings call this once at start-up)."""
    global _offset
    if fake_now:
        _offset = parse_instant(fake_now) - dt.datetime.now(UTC)
    elif offset_seconds:
        _offset = dt.timedelta(seconds=float(offset_seconds))
    else:
        _offset = dt.timedelta(0)


def configure_from_env() -> None:
    configure(
        offset_seconds=float(os.environ.get("CTOPS_CLOCK_OFFSET_SECONDS") or 0),
        fake_now=os.environ.get("CTOPS_FAKE_NOW") or None,
    )


def offset() -> dt.timedelta:
    return _offset


def is_shifted() -> bool:
    return _offset != dt.timedelta(0) or _frozen is not None


def now() -> dt.datetime:
    """Aware UTC now, shifted by the configured offset."""
    if _frozen is not None:
        return _frozen
    return dt.datetime.now(UTC) + _offset


def freeze(instant: dt.datetime | None) -> None:
    """Stop the clock at ``instant`` (None starts it again).

    For tests of exact boundaries in one process; processes are moved with
    the offset settings instead.
    """
    global _frozen
    _frozen = None if instant is None else instant.astimezone(UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Normalise a datetime read from a database driver to aware UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


configure_from_env()
