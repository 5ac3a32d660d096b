"""Scheduled refresh through real processes: ``ctops worker`` (arq, Redis, PostgreSQL)
and embedded ``ctops serve`` (SQLite, the in-process tick).

Time moves with ``CTOPS_CLOCK_OFFSET_SECONDS``: each step starts the runner with
an offset past the source's ``nextRefreshAt`` (15-minute interval, backoff
2 then 4 minutes) and waits, bounded, for the expected outcome:

1. the server swaps to a renewed certificate -> RENEWED, the old one kept in history;
2. the server is down -> REFRESH_FAILED once, the certificate kept, failures 1;
3. still down -> failures 2, no second REFRESH_FAILED;
4. the server is back -> REFRESH_RECOVERED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from backend import db
from backend.models import CertificateEvent, RefreshInterval, TrackedSource
from backend.schema.core.relay import from_global_id
from backend.services import tracked_sources
from tests.support.checker import checker_settings, make_pki
from tests.support.databases import create_pg_database, drop_pg_database, forget_cached_statements
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_output, wait_for_port
from tests.support.tls_servers import TLSServer

MINUTE = 60
STEPS = (16 * MINUTE, 32 * MINUTE, 35 * MINUTE, 40 * MINUTE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def runner_env(pki, **extra: str) -> dict[str, str]:
    return ctops_env(
        CTOPS_REFRESH_TICK_SECONDS="1", CTOPS_OUTBOUND_ALLOW="127.0.0.0/8", CTOPS_TLS_TIMEOUT_SECONDS="1",
        CTOPS_CA_BUNDLE=str(pki.ca_file), CTOPS_HEARTBEAT_TICK_SECONDS="5", CTOPS_SWEEP_TICK_SECONDS="3600", **extra,
    )  # fmt: skip


async def wait_for(check: Callable[[], Awaitable[bool]], what: str, log=None, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    detail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


async def scenario(
    pki,
    track: Callable[[int], Awaitable[None]],
    run_at: Callable[[int], contextlib.AbstractContextManager],
    state: Callable[[], Awaitable[dict]],
) -> None:
    old, renewed = pki.chain("shop.test", days=60), pki.chain("shop.test", days=120)
    server = TLSServer(old).start()
    try:
        await track(server.port)
        first = await state()
        assert first["events"] == ["IMPORTED"] and first["fingerprint"] == old[0].fingerprint

        server.serve(renewed)
        with run_at(STEPS[0]) as log:
            await wait_for(lambda: _has(state, "RENEWED"), "RENEWED", log)
        after = await state()
        assert after["fingerprint"] == renewed[0].fingerprint
        assert after["history"] == [renewed[0].fingerprint, old[0].fingerprint]
    finally:
        server.stop()

    with run_at(STEPS[1]) as log:
        await wait_for(lambda: _failures(state, 1), "the first failure", log)
    failing = await state()
    assert failing["events"] == ["IMPORTED", "RENEWED", "REFRESH_FAILED"]
    assert failing["code"] == "CONNECTION_REFUSED" and failing["fingerprint"] == renewed[0].fingerprint

    with run_at(STEPS[2]) as log:
        await wait_for(lambda: _failures(state, 2), "the second failure", log)
    assert (await state())["events"] == ["IMPORTED", "RENEWED", "REFRESH_FAILED"]  # recorded once

    with TLSServer(renewed, port=server.port), run_at(STEPS[3]) as log:
        await wait_for(lambda: _has(state, "REFRESH_RECOVERED"), "REFRESH_RECOVERED", log)
    final = await state()
    assert final["events"] == ["IMPORTED", "RENEWED", "REFRESH_FAILED", "REFRESH_RECOVERED"]
    assert final["failures"] == 0 and final["code"] is None and final["fingerprint"] == renewed[0].fingerprint


async def _has(state, event: str) -> bool:
    return event in (await state())["events"]


async def _failures(state, count: int) -> bool:
    return (await state())["failures"] == count


# --- production: ctops worker, Redis, PostgreSQL -------------------------------------------------


@pytest.fixture
async def pg_url(private_redis):
    url = await create_pg_database("ctops_refresh")
    yield url
    await drop_pg_database(url)


@contextlib.asynccontextmanager
async def tortoise_on(url: str):
    forget_cached_statements()
    await db.init(url)
    try:
        yield
    finally:
        await db.close()


async def db_state(source_id: int) -> dict:
    source = await TrackedSource.get(id=source_id)
    events = await CertificateEvent.filter(tracked_source_id=source_id).order_by("id")
    certificate = await source.certificate
    history = await tracked_sources.history(source_id)
    return {
        "events": [e.type.value for e in events],
        "fingerprint": certificate.fingerprint_sha256,
        "failures": source.consecutive_failures,
        "code": source.last_error_code,
        "history": [c.fingerprint_sha256 for c in history.items],
    }


async def test_worker_scenario(tmp_path, pki, pg_url, private_redis):
    env = runner_env(pki, DATABASE_URL=pg_url, REDIS_URL=private_redis.url)
    ctops("migrate", env=env)
    source_ids: list[int] = []

    async def track(port: int) -> None:
        tracked = await tracked_sources.track_url(
            f"https://127.0.0.1:{port}", server_name="shop.test", interval=RefreshInterval.MINUTES_15,
            settings=checker_settings(pki),
        )  # fmt: skip
        source_ids.append(tracked.source.id)

    @contextlib.contextmanager
    def run_at(offset: int) -> Iterator:
        log = tmp_path / f"worker-{offset}.log"
        with running(ctops_args("worker"), {**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(offset)}, log):
            yield log

    async with tortoise_on(pg_url):
        await scenario(pki, track, run_at, lambda: db_state(source_ids[0]))


async def test_two_workers_refresh_each_source_once_per_due_time(tmp_path, pki, pg_url, private_redis):
    env = runner_env(pki, DATABASE_URL=pg_url, REDIS_URL=private_redis.url, CTOPS_CLOCK_OFFSET_SECONDS=str(16 * MINUTE))
    ctops("migrate", env=env)
    names = [f"site{i}.test" for i in range(24)]
    chains = {name: pki.chain(name) for name in names}
    async with tortoise_on(pg_url):
        with TLSServer(chains[names[0]], by_name=chains) as server:
            settings = checker_settings(pki)
            for name in names:
                await tracked_sources.track_url(f"https://127.0.0.1:{server.port}", server_name=name,
                                                interval=RefreshInterval.MINUTES_15, settings=settings)  # fmt: skip
            tracked_at = {s.id: s.last_refreshed_at for s in await TrackedSource.all()}
            assert all(server.handshakes[name] == 1 for name in names)

            async def all_refreshed() -> bool:
                rows = await TrackedSource.all()
                return all(r.last_refreshed_at > tracked_at[r.id] for r in rows)

            logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
            with running(ctops_args("worker"), env, logs[0]), running(ctops_args("worker"), env, logs[1]):
                await wait_for(all_refreshed, "every source refreshed", logs[0])
                await asyncio.sleep(3)  # three more ticks: nothing else may happen
            refreshes = {name: server.handshakes[name] - 1 for name in names}
        assert refreshes == {name: 1 for name in names}
        assert await CertificateEvent.all().count() == len(names)  # the IMPORTED ones: nothing changed
        for row in await TrackedSource.all():
            assert row.consecutive_failures == 0 and row.next_refresh_at > row.last_refreshed_at


# --- embedded: ctops serve, SQLite -------------------------------------------------------------


async def test_embedded_scenario(tmp_path, pki):
    """The same steps with the refresh tick inside ``ctops serve`` (no Redis); the URL is
    tracked through its GraphQL API, the outcome read from its SQLite database."""
    data_dir = tmp_path / "data"
    env = runner_env(pki, CTOPS_DATA_DIR=str(data_dir))
    source_ids: list[int] = []
    # A port picked afresh for each start: one picked once could be handed to a
    # test TLS server (bound to port 0) in the meantime.
    serving = {"port": 0}

    @contextlib.contextmanager
    def run_at(offset: int) -> Iterator:
        log = tmp_path / f"serve-{offset}.log"
        serving["port"] = port = free_port()
        with running(ctops_args("serve", "--port", str(port)), {**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(offset)}, log):
            wait_for_port(port)
            yield log

    async def track(server_port: int) -> None:
        with run_at(0) as log:
            token = wait_for_output(log, r"admin token: (\S+)").group(1)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{serving['port']}", timeout=10) as http:
                body = (await http.post("/graphql", headers={"Authorization": f"Bearer {token}"}, json={
                    "query": "mutation($input: TrackUrlInput!) { trackUrl(input: $input) { trackedSource { id } } }",
                    "variables": {"input": {"url": f"https://127.0.0.1:{server_port}", "serverName": "shop.test",
                                            "refreshInterval": "MINUTES_15"}},
                })).json()  # fmt: skip
        assert not body.get("errors"), body
        source_ids.append(from_global_id(body["data"]["trackUrl"]["trackedSource"]["id"], "TrackedSource")[1])

    async with tortoise_on_when_ready(f"sqlite://{data_dir / 'ctops.sqlite3'}", source_ids) as state:
        await scenario(pki, track, run_at, state)


@contextlib.asynccontextmanager
async def tortoise_on_when_ready(url: str, source_ids: list[int]):
    """``db_state`` on a database that exists only once the first step has run."""
    opened: list[bool] = []

    async def state() -> dict:
        if not opened:
            forget_cached_statements()
            await db.init(url)
            opened.append(True)
        return await db_state(source_ids[0])

    try:
        yield state
    finally:
        if opened:
            await db.close()
