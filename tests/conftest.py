"""Fixtures that build real components: migrated SQLite and PostgreSQL databases,
the real ASGI app behind an httpx client, tokens of every role.

Every test that takes ``database`` (directly or through ``client``) runs once
on SQLite and once on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from backend import db
from backend import settings as settings_module
from backend.models import Role
from backend.services import tokens
from tests.support.databases import TestDatabase, create_pg_database, drop_pg_database, empty_all_tables, forget_cached_statements, migrated
from tests.support.graphql import GraphQLClient
from tests.support.redis_server import RedisServer, redis_server

BACKENDS = [b for b in (os.environ.get("CTOPS_TEST_BACKENDS") or "sqlite,postgres").split(",") if b]


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory) -> AsyncIterator[str]:
    url = f"sqlite://{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    await migrated(url)
    yield url


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    url = await create_pg_database()
    await migrated(url)
    yield url
    await drop_pg_database(url)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private redis-server for this test session (free port, nothing on disk)."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def private_redis(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may stop and restart."""
    with redis_server(tmp_path) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def database_target(request) -> TestDatabase:
    """Which migrated database this run of the test uses (resolved lazily, so a
    SQLite-only run never needs PostgreSQL)."""
    return TestDatabase(backend=request.param, url=request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
async def database(database_target: TestDatabase) -> AsyncIterator[TestDatabase]:
    """An empty, migrated database with tortoise initialised on it."""
    forget_cached_statements()
    await db.init(database_target.url)
    await empty_all_tables(database_target.backend)
    try:
        yield database_target
    finally:
        await db.close()


def make_settings(database_url: str, **overrides) -> settings_module.Settings:
    base = settings_module.load()
    return dataclasses.replace(base, database_url=database_url, redis_url=None, **overrides)


@pytest.fixture
def settings(database: TestDatabase) -> settings_module.Settings:
    return make_settings(database.url)


@pytest.fixture
def app_factory(database: TestDatabase):
    """Build the real app (optionally with other settings) over the test database."""
    from backend.app import create_app

    def build(**overrides):
        return create_app(make_settings(database.url, **overrides), manage_database=False, run_jobs=False)

    return build


@pytest.fixture
async def http(app_factory) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_factory())
    async with httpx.AsyncClient(transport=transport, base_url="http://ctops.test") as client:
        yield client


@pytest.fixture
def make_token(database):
    async def make(role: Role | str = Role.VIEWER, name: str | None = None, host_id: int | None = None) -> str:
        role = Role(role)
        name = name or f"{role.value.lower()}-{os.urandom(3).hex()}"
        created = await tokens.create_token(name, role, host_id=host_id)
        return created.secret

    return make


@pytest.fixture
async def admin_token(make_token) -> str:
    return await make_token(Role.ADMIN, "admin")


@pytest.fixture
async def gql(http, admin_token) -> GraphQLClient:
    """A GraphQL client over the real HTTP stack, authenticated as ADMIN."""
    return GraphQLClient(http, admin_token)
