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
    )
