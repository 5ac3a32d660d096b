"""Migrations: they cover the models exactly, and a fresh database migrates to them."""

from __future__ import annotations

from tortoise import Tortoise, connections

from backend import db
from tests.support.databases import create_pg_database, drop_pg_database, forget_cached_statements


async def test_autodetector_finds_no_pending_change():
    writers = await db.pending_migrations()
    assert writers == [], "models changed without a migration: run `make migrations` and commit it"


async def _columns(backend: str, table: str) -> set[str]:
    conn = connections.get("default")
    if backend == "postgres":
        rows = await conn.execute_query_dict(
            "SELECT column_name AS name FROM information_schema.columns WHERE table_name = $1", [table]
        )
    else:
        rows = await conn.execute_query_dict(f'PRAGMA table_info("{table}")')
    return {r["name"] for r in rows}


async def _check_fresh(url: str, backend: str) -> None:
    await db.migrate(url)
    await db.migrate(url)  # idempotent
    forget_cached_statements()
    await db.init(url)
    try:
        for model in Tortoise.apps.get_models_iterable():
            expected = set(model._meta.fields_db_projection.values())
            assert expected <= await _columns(backend, model._meta.db_table), model.__name__
    finally:
        await db.close()


async def test_fresh_postgres_database_migrates_to_the_models():
    url = await create_pg_database("ctops_migrate")
    try:
        await _check_fresh(url, "postgres")
    finally:
        await drop_pg_database(url)


async def test_fresh_sqlite_database_migrates_to_the_models(tmp_path):
    await _check_fresh(f"sqlite://{tmp_path / 'fresh.sqlite3'}", "sqlite")
