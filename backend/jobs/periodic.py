"""The periodic jobs, named once and run by either runner.

Each entry is (name, tick setting in seconds, service coroutine). The arq worker
turns them into cron jobs; the embedded runner into asyncio loops.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from backend.services import heartbeat
from backend.settings import Settings


@dataclasses.dataclass(frozen=True)
class PeriodicJob:
    name: str
    tick_seconds: float
    run: Callable[[], Awaitable[object]]


def periodic_jobs(settings: Settings, component: str) -> list[PeriodicJob]:
    async def beat() -> object:
        return await heartbeat.beat(component)

    return [PeriodicJob("heartbeat", settings.heartbeat_tick_seconds, beat)]
