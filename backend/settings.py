"""Every setting, read from the environment once.

Each one is documented in ``docs/configuration.md`` (name, default, meaning).
With none set, ``ctops serve`` runs in embedded mode: SQLite in ``./data``,
jobs in-process, no Redis.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

MiB = 1024 * 1024


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    redis_url: str | None
    graphiql: bool
    public_schema: bool
    cors_origins: tuple[str, ...]
    max_query_depth: int
    max_query_tokens: int
    max_aliases: int
    max_body_bytes: int
    agent_max_body_bytes: int
    heartbeat_tick_seconds: float
    heartbeat_stale_seconds: float
    log_level: str
    # The checker (issue 4): outbound connections, TLS fetches, URL refresh.
    outbound_allow: tuple[str, ...] = ()
    outbound_deny: tuple[str, ...] = ()
    tls_timeout_seconds: float = 10.0
    ca_bundle: str | None = None
    inspect_rate: str = "60/min"
    refresh_tick_seconds: float = 60.0
    worker_max_jobs: int = 50
    worker_poll_delay_seconds: float = 0.05
    # Live (issue 5): the expiry sweep, subscriptions, metrics.
    sweep_tick_seconds: float = 60.0
    subscription_queue_size: int = 1000
    subscription_replay_limit: int = 10_000
    ws_auth_recheck_seconds: float = 30.0
    live_catch_up_tick_seconds: float = 5.0
    metrics_public: bool = False
    metrics_cert_limit: int = 500
    # Alerts and notifications (issue 6).
    # Secrets stay out of repr() (and so out of any log of the settings).
    secret_key: str | None = dataclasses.field(default=None, repr=False)
    notify_tick_seconds: float = 10.0
    notify_timeout_seconds: float = 10.0
    smtp_url: str | None = dataclasses.field(default=None, repr=False)
    smtp_from: str = "ctops@localhost"

    @property
    def embedded(self) -> bool:
        """No Redis: jobs run inside the server process."""
        return self.redis_url is None

    @property
    def database_is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load() -> Settings:
    data_dir = Path(os.environ.get("CTOPS_DATA_DIR") or "./data").resolve()
    database_url = os.environ.get("DATABASE_URL") or f"sqlite://{data_dir / 'ctops.sqlite3'}"
    heartbeat = _float("CTOPS_HEARTBEAT_TICK_SECONDS", 30.0)
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        redis_url=os.environ.get("REDIS_URL") or None,
        graphiql=_bool("CTOPS_GRAPHIQL", False),
        public_schema=_bool("CTOPS_PUBLIC_SCHEMA", True),
        cors_origins=_list("CTOPS_CORS_ORIGINS"),
        max_query_depth=_int("CTOPS_MAX_QUERY_DEPTH", 12),
        max_query_tokens=_int("CTOPS_MAX_QUERY_TOKENS", 5000),
        max_aliases=_int("CTOPS_MAX_ALIASES", 30),
        max_body_bytes=_int("CTOPS_MAX_BODY_BYTES", 2 * MiB),
        agent_max_body_bytes=_int("CTOPS_AGENT_MAX_BODY_BYTES", 32 * MiB),
        heartbeat_tick_seconds=heartbeat,
        heartbeat_stale_seconds=_float("CTOPS_HEARTBEAT_STALE_SECONDS", max(3 * heartbeat, 10.0)),
        log_level=(os.environ.get("CTOPS_LOG_LEVEL") or "INFO").upper(),
        outbound_allow=_list("CTOPS_OUTBOUND_ALLOW"),
        outbound_deny=_list("CTOPS_OUTBOUND_DENY"),
        tls_timeout_seconds=_float("CTOPS_TLS_TIMEOUT_SECONDS", 10.0),
        ca_bundle=os.environ.get("CTOPS_CA_BUNDLE") or None,
        inspect_rate=(os.environ.get("CTOPS_INSPECT_RATE") or "60/min").strip(),
        refresh_tick_seconds=_float("CTOPS_REFRESH_TICK_SECONDS", 60.0),
        worker_max_jobs=_int("CTOPS_WORKER_MAX_JOBS", 50),
        worker_poll_delay_seconds=_float("CTOPS_WORKER_POLL_DELAY_SECONDS", 0.05),
        sweep_tick_seconds=_float("CTOPS_SWEEP_TICK_SECONDS", 60.0),
        subscription_queue_size=_int("CTOPS_SUBSCRIPTION_QUEUE_SIZE", 1000),
        subscription_replay_limit=_int("CTOPS_SUBSCRIPTION_REPLAY_LIMIT", 10_000),
        ws_auth_recheck_seconds=_float("CTOPS_WS_AUTH_RECHECK_SECONDS", 30.0),
        live_catch_up_tick_seconds=_float("CTOPS_LIVE_CATCH_UP_TICK_SECONDS", 5.0),
        metrics_public=_bool("CTOPS_METRICS_PUBLIC", False),
        metrics_cert_limit=_int("CTOPS_METRICS_CERT_LIMIT", 500),
        secret_key=(os.environ.get("CTOPS_SECRET_KEY") or "").strip() or None,
        notify_tick_seconds=_float("CTOPS_NOTIFY_TICK_SECONDS", 10.0),
        notify_timeout_seconds=_float("CTOPS_NOTIFY_TIMEOUT_SECONDS", 10.0),
        smtp_url=(os.environ.get("CTOPS_SMTP_URL") or "").strip() or None,
        smtp_from=(os.environ.get("CTOPS_SMTP_FROM") or "").strip() or "ctops@localhost",
    )
