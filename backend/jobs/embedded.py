"""The embedded runner: periodic jobs as asyncio tasks inside the server process."""

from __future__ import annotations

import asyncio
import logging

from backend.jobs.periodic import PeriodicJob, periodic_jobs
from backend.services.heartbeat import EMBEDDED
from backend.settings import Settings

log = logging.getLogger("ctops.jobs")


class EmbeddedRunner:
    def __init__(self, settings: Settings) -> None:
        self.jobs = periodic_jobs(settings, EMBEDDED)
        self._tasks: list[asyncio.Task] = []

    async def _loop(self, job: PeriodicJob) -> None:
        while True:
            try:
                await job.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Periodic job %s failed; it runs again next tick", job.name)
            await asyncio.sleep(job.tick_seconds)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(job), name=f"ctops:{job.name}") for job in self.jobs]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
