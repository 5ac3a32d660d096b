"""The periodic jobs, named once and run by either runner.

Each entry is (name, tick setting in seconds, service coroutine). The arq worker
turns them into cron jobs; the embedded runner into asyncio loops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from backend.services import heartbeat
from backend.settings import Settings


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    name: str
    tick_seconds: float
    run: Callable[[], Awaitable[object]]


def periodic_jobs(settings: Settings, component: str, refresh_dispatch: Any = None) -> list[PeriodicJob]:
    """``refresh_dispatch`` carries out the claimed URL refreshes: the worker
    enqueues arq jobs; by default (embedded) they run in this process."""
    from backend.services import refresh

    dispatch = refresh_dispatch or refresh.in_process(settings)

    async def refresh_tick() -> object:
        return await refresh.tick(dispatch)

    async def beat() -> object:
        return await heartbeat.beat(component)

    async def sweep() -> object:
        from backend.services import sweep as expiry

        return await expiry.sweep()

    async def notify_tick() -> object:
        from backend.services import notify

        return await notify.tick(settings)

    return [
        PeriodicJob("heartbeat", settings.heartbeat_tick_seconds, beat),
        # Notification attempts due by the clock: first sends and retries (issue 6).
        PeriodicJob("notify", settings.notify_tick_seconds, notify_tick),
        # Status changes caused by time alone (arq: cron + once at worker start).
        PeriodicJob("sweep", settings.sweep_tick_seconds, sweep),
        # Tracked URLs whose nextRefreshAt has come (issue 4).
        PeriodicJob("refresh", settings.refresh_tick_seconds, refresh_tick),
    ]
