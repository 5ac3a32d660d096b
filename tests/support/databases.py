"""Real test databases: a migrated SQLite file and a migrated PostgreSQL database.

Each is built once per test session with the real migrations and emptied
between tests. PostgreSQL gets a private database per session (created from
``CTOPS_TEST_DATABASE_URL``, default ``postgres://postgres@127.0.0.1:5432/test``)
so parallel runs never share rows; it is dropped at the end.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tortoise import Tortoise

from backend import db

DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/test"

#: For tests of what only PostgreSQL has (concurrent writers, row locks): the
#: `database` fixture then runs on PostgreSQL alone, instead of skipping on SQLite.
postgres_only = pytest.mark.parametrize("database_target", ["postgres"], indirect=True)


@dataclasses.dataclass(frozen=True)
class TestDatabase:
    backend: str  # "sqlite" | "postgres"
    url: str


def pg_base_url() -> str:
    return os.environ.get("CTOPS_TEST_DATABASE_URL") or DEFAULT_PG


def _with_db_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _asyncpg_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


async def create_pg_database(prefix: str = "ctops_test") -> str:
    base = pg_base_url()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(_asyncpg_url(base))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_db_name(base, name)


async def drop_pg_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(_asyncpg_url(pg_base_url()))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def model_tables() -> list[str]:
    return [model._meta.db_table for model in Tortoise.apps.get_models_iterable()]


async def empty_all_tables(backend: str) -> None:
    from tortoise import connections

    conn = connections.get("default")
    tables = model_tables()
    if backend == "postgres":
        await conn.execute_script(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )
    else:
        script = "PRAGMA foreign_keys=OFF;" + "".join(f'DELETE FROM "{t}";' for t in tables)
        script += "DELETE FROM sqlite_sequence;PRAGMA foreign_keys=ON;"
        await conn.execute_script(script)


def forget_cached_statements() -> None:
    """tortoise caches INSERT statements per connection *name* (not dialect):
    a process that switches backends (these tests) must drop them in between."""
    from tortoise.backends.base.executor import EXECUTOR_CACHE

    EXECUTOR_CACHE.clear()


async def migrated(url: str) -> None:
    await db.migrate(url)
