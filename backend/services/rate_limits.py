"""Per-token rate limits (``inspectUrl``: ``CTOPS_INSPECT_RATE``, default ``60/min``).

A sliding window: a call is allowed when fewer than N calls of the same token
were allowed in the last window. With ``REDIS_URL`` the window is a Redis
sorted set per token (``ctops:rate:<name>:<token id>``), so every API replica
counts the same calls; without Redis (embedded mode: one process) it is kept
in memory. If Redis does not answer, the call is allowed and a warning logged
(a rate limit must not take the checker down with Redis).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
import secrets
import time
from typing import Any

from backend.errors import CheckErrorCode, CheckFailed

log = logging.getLogger("ctops.rate_limits")

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclasses.dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``N/s``, ``N/min`` or ``N/h``; None for ``off``."""
        if text.strip().lower() in ("off", "none", "unlimited"):
            return None
        match = _RATE.match(text.lower())
        if not match or match.group(2) not in _UNITS:
            raise ValueError(f"rate {text!r} is not N/s, N/min or N/h (or off)")
        return cls(int(match.group(1)), float(_UNITS[match.group(2)]))


class MemoryWindow:
    def __init__(self) -> None:
        self._hits: dict[str, collections.deque[float]] = {}

    async def hit(self, key: str, rate: Rate, now: float) -> float | None:
        """Record a call; None when allowed, else seconds until one is."""
        hits = self._hits.setdefault(key, collections.deque())
        while hits and hits[0] <= now - rate.seconds:
            hits.popleft()
        if len(hits) >= rate.count:
            return max(0.0, hits[0] + rate.seconds - now)
        hits.append(now)
        return None


class RedisWindow:
    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self.client: Any = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)

    async def hit(self, key: str, rate: Rate, now: float) -> float | None:
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - rate.seconds)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.zrange(key, 0, 0, withscores=True)
            pipe.expire(key, int(rate.seconds) + 1)
            _, _, count, oldest, _ = await pipe.execute()
        if count > rate.count:
            await self.client.zrem(key, member)
            first = oldest[0][1] if oldest else now
            return max(0.0, float(first) + rate.seconds - now)
        return None


class Windows:
    """Where the windows live: one per app (its ``state``), or this module's default."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str | None, int], Any] = {}

    def get(self, redis_url: str | None) -> Any:
        key = (redis_url, id(asyncio.get_running_loop()))  # a Redis client belongs to one event loop
        if key not in self._by_key:
            self._by_key[key] = RedisWindow(redis_url) if redis_url else MemoryWindow()
        return self._by_key[key]


_default = Windows()


def windows_of(holder: Any) -> Windows:
    """The windows kept on ``holder`` (e.g. a Starlette app's ``state``), created on first use."""
    if holder is None:
        return _default
    found = getattr(holder, "ctops_rate_windows", None)
    if found is None:
        found = Windows()
        holder.ctops_rate_windows = found
    return found


async def check(name: str, subject: str, rate_text: str, redis_url: str | None, *, holder: Any = None) -> None:
    """Count one call of ``subject`` (a token) against ``name``'s limit; RATE_LIMITED when over.

    ``holder`` keeps the in-memory windows (the app's ``state``: one per app).
    """
    rate = Rate.parse(rate_text)
    if rate is None:
        return
    key = f"ctops:rate:{name}:{subject}"
    window = windows_of(holder).get(redis_url)
    try:
        wait = await window.hit(key, rate, time.time())
    except Exception as exc:  # noqa: BLE001 - Redis unreachable: allow, say so
        log.warning("Rate limit %s not enforced: Redis did not answer (%s)", name, exc.__class__.__name__)
        return
    if wait is not None:
        seconds = max(1, int(wait + 0.999))
        raise CheckFailed(
            CheckErrorCode.RATE_LIMITED,
            f"Too many inspections: {rate.count} per {int(rate.seconds)} s are allowed per token. Try again in {seconds} s.",
            retryAfterSeconds=seconds,
        )
