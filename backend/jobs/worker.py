"""arq worker settings: ``ctops worker`` runs :func:`run`.

Pitfalls kept in mind (arq 0.28): ``max_jobs`` defaults to 10; ``keep_result``
defaults to 3600 s and a reused ``_job_id`` is refused while a result is kept;
cron jobs are unique across workers by default; cron uses wall-clock time.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import cron
from arq.connections import RedisSettings
from arq.worker import run_worker

from backend import clock, db
from backend.jobs.periodic import PeriodicJob, periodic_jobs
from backend.services.heartbeat import WORKER
from backend.settings import Settings

log = logging.getLogger("ctops.worker")


def cron_fields(tick_seconds: float) -> dict[str, Any]:
    """arq cron fields that fire every ``tick_seconds`` (rounded to what cron can express)."""
    tick = max(1, int(round(tick_seconds)))
    if tick < 60:
        return {"second": set(range(0, 60, tick))}
    minutes = max(1, tick // 60)
    return {"minute": set(range(0, 60, minutes)), "second": 0}


def _cron_job(job: PeriodicJob):
    async def run(ctx: dict) -> None:
        await job.run()

    run.__qualname__ = run.__name__ = f"periodic_{job.name}"
    return cron(run, name=f"ctops:{job.name}", run_at_startup=True, **cron_fields(job.tick_seconds))


def worker_settings(settings: Settings) -> type:
    if not settings.redis_url:
        raise SystemExit("ctops worker needs REDIS_URL (embedded mode runs jobs inside `ctops serve`).")
    jobs = periodic_jobs(settings, WORKER)

    async def on_startup(ctx: dict) -> None:
        await db.init(settings.database_url)
        if clock.is_shifted():
            log.warning("Clock shifted by %s: now reads %s", clock.offset(), clock.now().isoformat())
        log.info("ctops worker started")

    async def on_shutdown(ctx: dict) -> None:
        await db.close()

    return type(
        "WorkerSettings",
        (),
        {
            "redis_settings": RedisSettings.from_dsn(settings.redis_url),
            "functions": [],
            "cron_jobs": [_cron_job(job) for job in jobs],
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
            "queue_name": "ctops:queue",
            "health_check_key": "ctops:worker-health",
            "handle_signals": True,
        },
    )


def run(settings: Settings) -> None:
    run_worker(worker_settings(settings))
