"""arq worker settings: ``ctops worker`` runs :func:`run`.

Pitfalls kept in mind (arq 0.28): ``max_jobs`` defaults to 10; ``keep_result``
defaults to 3600 s and a reused ``_job_id`` is refused while a result is kept;
cron jobs are unique across workers by default; cron uses wall-clock time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from arq import cron, func
from arq.connections import RedisSettings
from arq.worker import run_worker

from backend import clock, db, metrics
from backend.bus import RedisBus
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


QUEUE = "ctops:queue"
REFRESH_JOB = "ctops:refresh-source"


class RefreshEnqueuer:
    """The worker's refresh dispatch: one arq job per claimed (source, due time).

    The job id ``refresh:<source id>:<due ms>`` is refused by arq while a job or
    result with that id exists, so a claim is enqueued at most once; results are
    kept for the claim's lease (``keep_result``) and a job not started within the
    lease expires (the source is claimed again then, under a new id).
    """

    def __init__(self) -> None:
        self.pool: Any = None

    async def __call__(self, batch: Any) -> None:
        from backend.services import refresh

        await asyncio.gather(*(
            self.pool.enqueue_job(REFRESH_JOB, claimed.source_id, dataclasses.asdict(claimed.target) if claimed.target else None,
                                  _job_id=claimed.job_id, _queue_name=QUEUE, _expires=refresh.LEASE)
            for claimed in batch
        ))  # fmt: skip


def _refresh_function(settings: Settings):
    from backend.services import refresh

    async def refresh_job(ctx: dict, source_id: int, target: dict | None = None) -> str:
        claimed = refresh.Target(**target) if target else None
        result = await refresh.refresh_source(source_id, settings=settings, target=claimed)
        metrics.count_refresh(result.outcome.value)
        return result.outcome.value

    return func(
        refresh_job,
        name=REFRESH_JOB,
        keep_result=refresh.LEASE.total_seconds(),
        timeout=3 * settings.tls_timeout_seconds + 60,
        max_tries=3,
    )


def worker_settings(settings: Settings) -> type:
    if not settings.redis_url:
        raise SystemExit("ctops worker needs REDIS_URL (embedded mode runs jobs inside `ctops serve`).")
    enqueue_refreshes = RefreshEnqueuer()
    from backend.services.checker import validate_settings

    validate_settings(settings)
    from backend import mail, secret_box

    secret_box.validate_settings(settings)
    mail.validate_settings(settings)
    jobs = periodic_jobs(settings, WORKER, refresh_dispatch=enqueue_refreshes)

    async def on_startup(ctx: dict) -> None:
        await db.init(settings.database_url)
        from backend.services import alerts

        await secret_box.check_ready(settings)
        await alerts.ensure_default_rules()
        # Events this worker records reach every API replica's subscribers.
        ctx["bus"] = RedisBus(settings.redis_url, listen=False)
        await ctx["bus"].start()
        db.set_publisher(ctx["bus"].publish)
        enqueue_refreshes.pool = ctx["redis"]
        if clock.is_shifted():
            log.warning("Clock shifted by %s: now reads %s", clock.offset(), clock.now().isoformat())
        log.info("ctops worker started")

    async def on_shutdown(ctx: dict) -> None:
        if ctx.get("bus") is not None:
            db.set_publisher(None)
            await ctx["bus"].close()
        await db.close()

    return type(
        "WorkerSettings",
        (),
        {
            "redis_settings": RedisSettings.from_dsn(settings.redis_url),
            "functions": [_refresh_function(settings)],
            "max_jobs": settings.worker_max_jobs,
            "poll_delay": settings.worker_poll_delay_seconds,
            "cron_jobs": [_cron_job(job) for job in jobs],
            "on_startup": on_startup,
            "on_shutdown": on_shutdown,
            "queue_name": QUEUE,
            "health_check_key": "ctops:worker-health",
            "handle_signals": True,
        },
    )


def run(settings: Settings) -> None:
    run_worker(worker_settings(settings))
