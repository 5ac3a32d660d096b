"""Benchmark: one refresh tick of 500 tracked URLs through a real ``ctops worker``.

500 endpoints are served by local TLS servers on loopback (one process, several
ports, the certificate chosen by SNI: ``site<n>.bench.test``, each with its own
leaf from a test CA trusted through ``CTOPS_CA_BUNDLE``). The 500 URLs are
tracked through the service (``trackUrl``'s function) on a fresh PostgreSQL
database, then made due at once. Measured, in the same run:

* **worker**: from the start of the tick (the claim; logged by the worker) until
  the last of the 500 sources has ``lastRefreshedAt`` from this round, with a
  real ``ctops worker`` (arq, a private Redis, ``max_jobs`` 50);
* **in-process**: the same refresh service function for the same 500 due
  sources, called in this process at the same concurrency, no arq, no Redis:
  what the refresh itself costs;
* **arq's own overhead**: worker minus in-process (queueing, polling, job
  bookkeeping in Redis);
* **the floor**: bare TLS handshakes with the same 500 endpoints at the same
  concurrency plus ``backend.x509.describe`` of each leaf.

Target: worker <= 5 s and <= 6x the floor.

    .venv/bin/python bench/refresh.py [--urls 500] [--ports 4] [--concurrency 50] [--rounds 5]

Needs PostgreSQL (``CTOPS_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``: a database ``ctops_bench_refresh_<pid>``
is created beside it and dropped at the end) and ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from backend import x509  # noqa: E402
from tests.certs import make_ca, make_cert  # noqa: E402
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_port  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402
from tests.support.tls_servers import key_pem  # noqa: E402

TARGET_SECONDS = 5.0
TARGET_RATIO = 6.0
TICK_LINE = re.compile(r"refresh tick (\S+): (\d+) due source\(s\) dispatched in (\S+) s")


# --- the TLS servers (a child process) ------------------------------------------------------------


def serve(directory: Path, ports: list[int]) -> None:
    """Serve every ``<name>.pem`` in ``directory`` by SNI on each of ``ports`` (127.0.0.1)."""
    contexts: dict[str, ssl.SSLContext] = {}
    key = directory / "leaf.key"
    for pem in sorted(directory.glob("*.pem")):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem, key)
        contexts[pem.stem] = context
    default = next(iter(contexts.values()))

    def pick(obj: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        if name in contexts:
            obj.context = contexts[name]

    for context in contexts.values():
        context.sni_callback = pick

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)
        except (OSError, ssl.SSLError):
            pass
        writer.transport.abort()

    async def main() -> None:
        servers = [await asyncio.start_server(handle, "127.0.0.1", port, ssl=default, backlog=1024) for port in ports]
        print("serving", flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))

    asyncio.run(main())


# --- setup ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Endpoints:
    names: list[str]
    ports: list[int]
    ca_file: Path

    def of(self, index: int) -> tuple[int, str]:
        return self.ports[index % len(self.ports)], self.names[index]


def make_certificates(directory: Path, count: int) -> list[str]:
    root = make_ca("Refresh Bench Root CA")
    intermediate = make_ca("Refresh Bench Intermediate CA", issuer=root, path_length=0)
    (directory.parent / "ca.pem").write_text(root.pem)
    names = []
    for n in range(count):
        name = f"site{n}.bench.test"
        leaf = make_cert(name, sans=(name,), issuer=intermediate, days=200)
        (directory / f"{name}.pem").write_text(leaf.pem + intermediate.pem)
        names.append(name)
    (directory / "leaf.key").write_bytes(key_pem(leaf))  # every leaf shares the factory's cached key
    return names


def _db_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + name))


async def _admin(base: str, sql: str) -> None:
    conn = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- the floor ----------------------------------------------------------------------------------------


async def floor(endpoints: Endpoints, concurrency: int) -> float:
    """Bare handshakes + describing each leaf, ``concurrency`` at a time."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    limit = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        port, name = endpoints.of(index)
        async with limit:
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=name)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.transport.abort()
            assert x509.describe(der).common_name == name

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(endpoints.names))))
    return time.perf_counter() - started


# --- the rounds -----------------------------------------------------------------------------------


async def make_due(pool: asyncpg.Pool) -> dt.datetime:
    """Every source due now; returns the instant (the database's, to compare with its rows)."""
    async with pool.acquire() as conn:
        now = await conn.fetchval("SELECT now()")
        await conn.execute("UPDATE tracked_source SET next_refresh_at = $1", now - dt.timedelta(seconds=1))
        return now


async def wait_all_refreshed(pool: asyncpg.Pool, since: dt.datetime, count: int, timeout: float = 120) -> dt.datetime:
    deadline = time.monotonic() + timeout
    async with pool.acquire() as conn:
        while time.monotonic() < deadline:
            row = await conn.fetchrow(
                "SELECT COUNT(*) AS n, MAX(last_refreshed_at) AS last,"
                " SUM(CASE WHEN consecutive_failures > 0 THEN 1 ELSE 0 END) AS failing"
                " FROM tracked_source WHERE last_refreshed_at > $1",
                since,
            )
            if row["n"] >= count:
                failing = await conn.fetchval("SELECT COUNT(*) FROM tracked_source WHERE consecutive_failures > 0")
                if failing:
                    raise SystemExit(f"{failing} refreshes failed: the benchmark is not measuring successes")
                return row["last"]
            await asyncio.sleep(0.02)
    raise SystemExit(f"not every source was refreshed within {timeout} s")


def tick_start(log: Path, after: dt.datetime, count: int) -> tuple[dt.datetime, float]:
    """When the tick that claimed the round started, and how long its claim + enqueueing took."""
    for line in reversed(log.read_text().splitlines()):
        match = TICK_LINE.search(line)
        if match and int(match.group(2)) == count:
            started = dt.datetime.fromisoformat(match.group(1))
            if started >= after - dt.timedelta(seconds=1):
                return started, float(match.group(3))
    raise SystemExit("the worker did not log the tick")


async def run(args: argparse.Namespace) -> int:
    from backend import db
    from backend.services import refresh, tracked_sources
    from tests.support.checker import checker_settings

    base = os.environ.get("CTOPS_BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    db_name = f"ctops_bench_refresh_{os.getpid()}"
    database_url = _db_url(base, db_name)
    work = Path(tempfile.mkdtemp(prefix="ctops-bench-refresh-"))
    certs = work / "certs"
    certs.mkdir()
    names = make_certificates(certs, args.urls)
    ports = [free_port() for _ in range(args.ports)]
    endpoints = Endpoints(names, ports, work / "ca.pem")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(certs), ",".join(map(str, ports))],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    redis = RedisServer(work)
    await _admin(base, f'CREATE DATABASE "{db_name}"')
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"serving"
        for port in ports:
            wait_for_port(port)
        redis.start()
        env = ctops_env(
            DATABASE_URL=database_url, REDIS_URL=redis.url, CTOPS_REFRESH_TICK_SECONDS="1",
            CTOPS_WORKER_MAX_JOBS=str(args.concurrency), CTOPS_OUTBOUND_ALLOW="127.0.0.0/8",
            CTOPS_CA_BUNDLE=str(endpoints.ca_file), CTOPS_HEARTBEAT_TICK_SECONDS="30",
            CTOPS_SWEEP_TICK_SECONDS="3600", CTOPS_LOG_LEVEL="INFO",
            CTOPS_WORKER_POLL_DELAY_SECONDS=os.environ.get("CTOPS_WORKER_POLL_DELAY_SECONDS"),
        )  # fmt: skip
        ctops("migrate", env=env)
        settings = dataclasses.replace(checker_settings(None, worker_max_jobs=args.concurrency), ca_bundle=str(endpoints.ca_file))
        await db.init(database_url)
        pool = await asyncpg.create_pool(database_url.replace("postgres://", "postgresql://", 1), min_size=1, max_size=2)
        try:
            # Track the 500 URLs (the first fetch of each), 50 at a time.
            limit = asyncio.Semaphore(args.concurrency)

            async def track(index: int) -> None:
                port, name = endpoints.of(index)
                async with limit:
                    await tracked_sources.track_url(f"https://127.0.0.1:{port}", server_name=name, settings=settings)

            started = time.perf_counter()
            await asyncio.gather(*(track(i) for i in range(args.urls)))
            print(f"tracked {args.urls} URLs on {args.ports} ports in {time.perf_counter() - started:.2f} s")

            floors = [await floor(endpoints, args.concurrency) for _ in range(args.rounds)]

            in_process = []
            for _ in range(args.rounds):
                since = await make_due(pool)
                started = time.perf_counter()
                dispatched = await refresh.tick(refresh.in_process(settings))
                in_process.append(time.perf_counter() - started)
                assert dispatched == args.urls
                await wait_all_refreshed(pool, since, args.urls)
        finally:
            await db.close()

        log = work / "worker.log"
        workers: list[float] = []
        dispatch_times: list[float] = []
        with running(ctops_args("worker"), env, log):
            deadline = time.monotonic() + 60
            while "ctops worker started" not in (log.read_text() if log.exists() else ""):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not start:\n" + log.read_text())
                time.sleep(0.1)
            await asyncio.sleep(1.5)
            for _ in range(args.rounds):
                since = await make_due(pool)
                done = await wait_all_refreshed(pool, since, args.urls)
                start, dispatching = tick_start(log, since, args.urls)
                workers.append((done - start).total_seconds())
                dispatch_times.append(dispatching)
                await asyncio.sleep(1.2)
        await pool.close()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)
        redis.stop()
        await _admin(base, f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')

    worker, service, bare = min(workers), min(in_process), min(floors)
    ratio = worker / bare
    print(f"floor (handshake + describe, {args.concurrency} at a time): best {bare:.3f} s, runs {_list(floors)}")
    print(f"in-process refresh service (no arq, no Redis):          best {service:.3f} s, runs {_list(in_process)}")
    print(f"ctops worker, tick start -> all {args.urls} refreshed:        best {worker:.3f} s, runs {_list(workers)}")
    print(f"arq's own overhead (worker - in-process):                {worker - service:+.3f} s"
          f" (of which the tick's claim + enqueueing of {args.urls} jobs: {dispatch_times[workers.index(worker)]:.3f} s)")
    print(f"ratio worker / floor: {ratio:.2f} (target <= {TARGET_RATIO}); worker {worker:.2f} s (target <= {TARGET_SECONDS} s)")
    ok = worker <= TARGET_SECONDS and ratio <= TARGET_RATIO
    print("PASS" if ok else "FAIL")
    print(json.dumps({"floor_s": bare, "in_process_s": service, "worker_s": worker, "arq_overhead_s": worker - service,
                      "ratio": ratio, "urls": args.urls, "ports": args.ports, "concurrency": args.concurrency}))  # fmt: skip
    return 0 if ok else 1


def _list(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=500)
    parser.add_argument("--ports", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
