"""Prometheus metrics: counters each process keeps, gauges read from the database
when scraped.

Counters and the subscription gauge live in this module (import it and
``.inc()``); ``GET /metrics`` (API processes) and ``ctops worker --metrics-port``
expose them. Under ``ctops serve --workers N`` every worker process writes its
values to ``PROMETHEUS_MULTIPROC_DIR`` (``ctops serve`` creates a temporary one
when N > 1 and none is set) and a scrape of any worker answers the sum, so the
variable must be set before this module is first imported: ``ctops serve`` does
that before uvicorn starts its workers.

Database gauges are computed at scrape time, so every replica answers the same:

- ``ctops_certificates{status}``: the current set, as ``certificateStats`` counts it;
- ``ctops_certificate_not_after_seconds{fingerprint,common_name}``: notAfter
  (Unix seconds) of the ``CTOPS_METRICS_CERT_LIMIT`` soonest-expiring current
  certificates.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

INGEST_REPORTS = Counter("ctops_ingest_reports_total", "Agent report parts received by reportCertificates.")
SUBSCRIPTIONS_ACTIVE = Gauge(
    "ctops_subscriptions_active", "GraphQL subscriptions open on this server.", multiprocess_mode="livesum"
)
BUS_DROPPED = Counter(
    "ctops_bus_dropped_total",
    "Bus messages or subscriber deliveries dropped: a slow subscriber's queue overflowed "
    "(its connection is closed with 1013) or the Redis outbox was full.",
)
REFRESH = Counter("ctops_refresh_total", "Tracked-source refreshes, by result.", ["result"])
REFRESH_RESULTS = ("unchanged", "changed", "failed", "skipped")
for _result in REFRESH_RESULTS:
    REFRESH.labels(result=_result)  # every result is exported from the start, at 0


def count_refresh(outcome: str) -> None:
    """One refresh done (``refresh.Outcome`` value): the worker's refresh job calls this."""
    REFRESH.labels(result=outcome.lower()).inc()


SWEEP_TRANSITIONS = Counter("ctops_sweep_transitions_total", "Status changes recorded by expiry sweeps.", ["to"])


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def mark_process_dead(pid: int) -> None:
    """Forget a finished process's live gauges (``ctops_subscriptions_active``)."""
    path = multiprocess_dir()
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)


class _Families:
    """A collector answering metric families computed beforehand."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


async def database_families(cert_limit: int) -> list[Metric]:
    from backend.models import Certificate
    from backend.services import inventory

    stats = await inventory.certificate_stats(inventory.CertificateQuery())
    by_status = GaugeMetricFamily(
        "ctops_certificates", "Current certificates by status (the set certificateStats counts).", labels=["status"]
    )
    for status in ("ok", "warning", "critical", "expired"):
        by_status.add_metric([status.upper()], getattr(stats, status))
    soonest = GaugeMetricFamily(
        "ctops_certificate_not_after_seconds",
        "notAfter (Unix time) of the soonest-expiring current certificates.",
        labels=["fingerprint", "common_name"],
    )
    rows = (
        await Certificate.filter(is_current=True)
        .order_by("not_after", "id")
        .limit(cert_limit)
        .values("fingerprint_sha256", "common_name", "not_after")
    )
    for row in rows:
        soonest.add_metric([row["fingerprint_sha256"], row["common_name"] or ""], row["not_after"].timestamp())
    return [by_status, soonest]


def process_exposition() -> bytes:
    """This process's (or, in multiprocess mode, all processes') counters and gauges."""
    path = multiprocess_dir()
    if path:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


async def exposition(cert_limit: int) -> bytes:
    """The whole ``/metrics`` body."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await database_families(cert_limit)))  # type: ignore[arg-type]
    return process_exposition() + generate_latest(registry)


async def endpoint(request: Any) -> Any:
    """``GET /metrics``: an ADMIN token, unless ``CTOPS_METRICS_PUBLIC=true``."""
    from starlette.responses import JSONResponse, Response

    from backend.middleware.auth import bearer
    from backend.models import Role
    from backend.services import tokens

    settings = request.app.state.settings
    if not settings.metrics_public:
        secret = bearer(request.scope)
        viewer = await tokens.authenticate(secret) if secret else None
        if viewer is None:
            return JSONResponse(
                _error("Authentication required: send an ADMIN token as `Authorization: Bearer <token>`.", "UNAUTHENTICATED"),
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        if viewer.role is not Role.ADMIN:
            return JSONResponse(_error("Metrics need an ADMIN token.", "FORBIDDEN"), status_code=403)
    body = await exposition(settings.metrics_cert_limit)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _error(message: str, code: str) -> dict:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


def serve_worker_metrics(port: int, host: str = "127.0.0.1") -> None:
    """``ctops worker --metrics-port``: this process's counters over plain HTTP."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
