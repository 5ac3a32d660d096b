"""Database wiring: the Tortoise config, start-up, migrations, and transactions
that publish their events after commit.

Tortoise has no on-commit hook. :func:`transaction` is the one way services open
a transaction: the outermost block collects what should be published and hands
it to the bus only when the block exits successfully; a nested block joins the
outer one; a rollback publishes nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tortoise import Tortoise, connections
from tortoise.transactions import in_transaction

APP = "models"
MIGRATIONS_MODULE = "migrations"


def tortoise_config(database_url: str) -> dict[str, Any]:
    if database_url.startswith("postgresql://"):
        database_url = "postgres://" + database_url[len("postgresql://") :]
    return {
        "connections": {"default": database_url},
        "apps": {
            APP: {
                "models": ["backend.models"],
                "migrations": MIGRATIONS_MODULE,
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def ensure_sqlite_dir(database_url: str) -> None:
    if database_url.startswith("sqlite://") and ":memory:" not in database_url:
        Path(database_url[len("sqlite://") :]).parent.mkdir(parents=True, exist_ok=True)


async def init(database_url: str) -> None:
    ensure_sqlite_dir(database_url)
    # The global fallback lets request tasks (started outside the lifespan's
    # task) see the connections.
    await Tortoise.init(config=tortoise_config(database_url), _enable_global_fallback=True)


async def close() -> None:
    await Tortoise.close_connections()


async def migrate(database_url: str) -> None:
    """Apply every migration in ``migrations/`` (idempotent)."""
    from tortoise.migrations.api import migrate as run_migrations

    ensure_sqlite_dir(database_url)
    try:
        await run_migrations(config=tortoise_config(database_url))
    finally:
        # The migration API initialises apps without their query builders:
        # close, so that the next init() binds the models properly.
        await Tortoise.close_connections()


def dialect() -> str:
    return connections.get("default").capabilities.dialect


def is_postgres() -> bool:
    return dialect() == "postgres"


# --- transactions that publish after commit ---------------------------------

_pending: contextvars.ContextVar[list[tuple[str, dict]] | None] = contextvars.ContextVar(
    "ctops_pending_events", default=None
)
_publisher: Callable[[str, dict], Any] | None = None


def set_publisher(publish: Callable[[str, dict], Any] | None) -> None:
    """The bus installs itself here; without one, events are simply not pushed."""
    global _publisher
    _publisher = publish


def after_commit(topic: str, payload: dict) -> None:
    """Queue a message for when the outermost transaction commits.

    Outside any transaction the write has already committed, so it is sent now.
    """
    pending = _pending.get()
    if pending is None:
        _send([(topic, payload)])
    else:
        pending.append((topic, payload))


def _send(messages: list[tuple[str, dict]]) -> None:
    if _publisher is None:
        return
    for topic, payload in messages:
        _publisher(topic, payload)


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[Any]:
    """Open (or join) a transaction; publish its messages after the outermost commit."""
    if _pending.get() is not None:
        async with in_transaction() as conn:
            yield conn
        return
    pending: list[tuple[str, dict]] = []
    token = _pending.set(pending)
    try:
        async with in_transaction() as conn:
            yield conn
    finally:
        _pending.reset(token)
    _send(pending)


# --- migrations freshness ------------------------------------------------------


async def pending_migrations() -> list[Any]:
    """Migration writers for model changes that ``migrations/`` does not cover yet.

    Runs the real autodetector against an in-memory database; empty when the
    migrations match the models.
    """
    from tortoise.cli.cli import tortoise_cli_context
    from tortoise.migrations.autodetector import MigrationAutodetector

    config = tortoise_config("sqlite://:memory:")
    async with tortoise_cli_context(config) as ctx:
        autodetector = MigrationAutodetector(ctx.apps, config["apps"])
        return await autodetector.changes()


async def make_migrations(name: str | None = None) -> list[str]:
    """Write migrations for pending model changes; returns the written paths."""
    from tortoise.migrations.writer import format_migration_name

    written = []
    for writer in await pending_migrations():
        if name:
            number = int(writer.name.split("_", 1)[0])
            writer.name = format_migration_name(number, name)
        written.append(str(writer.write()))
    return written


async def ping() -> None:
    await connections.get("default").execute_query("SELECT 1")
