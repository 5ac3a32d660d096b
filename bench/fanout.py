"""Benchmark: live fan-out, one API process to 1,000 websocket subscribers.

One real ``ctops serve`` (one process, production mode: PostgreSQL and a
private ``redis-server``) holds 1,000 ``certificateEvents`` subscriptions opened
by client processes (real websocket clients, graphql-transport-ws). A separate
publisher process records events through the event service (one transaction
each, published after commit through Redis, as a worker does) at a fixed rate.
Measured in the same run:

* **floor**: a bare Redis pub/sub round trip (publish -> subscriber), p50/p99;
* **memory per idle subscriber**: the server's RSS growth for 1,000 connected,
  subscribed, idle clients, with permessage-deflate (what clients and uvicorn
  negotiate by default) and, on a second server, without;
* **latency** at 5 events/s (5,000 deliveries/s): from the event's
  ``occurredAt`` (set before its INSERT) to its arrival at the client, p50/p99;
* **memory growth** of the server over 100,000 deliveries;
* **maximum sustained**: the highest rate (deliveries/s) with p99 <= 500 ms, no
  connection cut and every delivery arriving, ramping the event rate up.

Targets: p99 <= 500 ms at 5,000 deliveries/s; <= 64 KiB per idle subscriber
(<= 128 KiB with permessage-deflate); flat memory.

    .venv/bin/python bench/fanout.py [--subscribers 1000] [--clients 2] [--rate 5] [--deliveries 100000]

Needs PostgreSQL (``CTOPS_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``: a database ``ctops_bench_fanout_<pid>``
is created beside it and dropped at the end) and ``redis-server``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERY = (
    "subscription { certificateEvents(filter: { types: [RESTORED] }) "
    "{ id type occurredAt cursor certificate { commonName notAfter status daysRemaining } } }"
)
TARGET_P99_MS = 500.0
TARGET_IDLE_KIB = 64.0
TARGET_IDLE_DEFLATE_KIB = 128.0
RAMP = (5, 8, 12, 14, 16, 20, 25, 30, 40, 50)


def _db_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + name))


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# --- client processes -------------------------------------------------------------------


def client_process(url: str, token: str, count: int, compression: bool, pipe) -> None:
    """Hold ``count`` subscriptions; answer the parent's commands over ``pipe``."""
    asyncio.run(_client(url, token, count, compression, pipe))


async def _client(url: str, token: str, count: int, compression: bool, pipe) -> None:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    received = [0]
    closed: list[int | None] = []

    async def one() -> None:
        ws = await connect(url, subprotocols=["graphql-transport-ws"], compression="deflate" if compression else None,
                           open_timeout=60, ping_interval=None, max_queue=None)  # fmt: skip
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": QUERY}}))
        ready.append(ws)
        try:
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                if message["type"] == "next":
                    sent = dt.datetime.fromisoformat(message["payload"]["data"]["certificateEvents"]["occurredAt"]).timestamp()
                    latencies.append(now - sent)
                    received[0] += 1
                elif message["type"] == "ping":
                    await ws.send('{"type":"pong"}')
        except Exception:  # noqa: BLE001
            pass
        closed.append(ws.close_code)

    ready: list = []
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    while len(ready) + len(closed) < count:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # let the server register the subscriptions
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()
    loop.add_reader(pipe.fileno(), lambda: commands.put_nowait(pipe.recv()))
    pipe.send(("ready", len(ready)))
    while True:
        command = await commands.get()
        if command == "collect":
            pipe.send(("collected", latencies[:], received[0], len(closed), time.process_time()))
            latencies.clear()
            received[0] = 0
        elif command == "stop":
            for ws in ready:
                await ws.close()
            pipe.send(("stopped",))
            return


class Clients:
    def __init__(self, url: str, token: str, subscribers: int, processes: int, compression: bool) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes = []
        self.procs = []
        per = subscribers // processes
        for i in range(processes):
            parent, child = ctx.Pipe()
            count = per if i < processes - 1 else subscribers - per * (processes - 1)
            proc = ctx.Process(target=client_process, args=(url, token, count, compression, child), daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def wait_ready(self, timeout: float = 180) -> int:
        total = 0
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise TimeoutError("clients not ready")
            kind, count = pipe.recv()
            total += count
        return total

    def collect(self) -> tuple[list[float], int, int, float]:
        """Latencies, deliveries and connections cut since the last call, and
        the client processes' CPU seconds so far."""
        latencies: list[float] = []
        received = closed = 0
        cpu = 0.0
        for pipe in self.pipes:
            pipe.send("collect")
        for pipe in self.pipes:
            _, lat, got, gone, seconds = pipe.recv()
            latencies += lat
            received += got
            closed += gone
            cpu += seconds
        return latencies, received, closed, cpu

    def stop(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send("stop")
                pipe.poll(30) and pipe.recv()
            except (BrokenPipeError, EOFError):
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# --- the publisher process -------------------------------------------------------------


def publisher_main(database_url: str, redis_url: str, certificate_id: int, rate: float, seconds: float) -> None:
    """Record RESTORED events at ``rate`` per second through the real service,
    published after commit through Redis (what a worker does)."""
    from backend import clock, db
    from backend.bus import RedisBus
    from backend.models import EventType
    from backend.services import events

    async def run() -> None:
        await db.init(database_url)
        bus = RedisBus(redis_url, listen=False)
        await bus.start()
        db.set_publisher(bus.publish)
        start = time.monotonic()
        n = 0
        lags: list[float] = []
        try:
            while time.monotonic() - start < seconds:
                now = clock.now()
                async with db.transaction() as conn:
                    await events.record(conn, [events.NewEvent(EventType.RESTORED, certificate_id)], actor="bench", now=now)
                lags.append(time.time() - now.timestamp())  # occurredAt -> committed and handed to the bus
                n += 1
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await bus.close()
            await db.close()
        print(json.dumps({"published": n, "commit_p50_ms": _percentile(lags, 50) * 1000, "commit_p99_ms": _percentile(lags, 99) * 1000}), flush=True)

    asyncio.run(run())


def publish(env: dict, database_url: str, redis_url: str, certificate_id: int, rate: float, seconds: float) -> int:
    out = subprocess.run(
        [sys.executable, __file__, "--publisher", database_url, redis_url, str(certificate_id), str(rate), str(seconds)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the floor ---------------------------------------------------------------------------


async def redis_floor(redis_url: str, messages: int = 2000, rate: float = 1000) -> list[float]:
    from redis.asyncio import Redis

    sub_client, pub_client = Redis.from_url(redis_url), Redis.from_url(redis_url)
    pubsub = sub_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe("bench:floor")
    latencies: list[float] = []

    async def listen() -> None:
        while len(latencies) < messages:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                latencies.append(time.time() - float(message["data"]))

    listener = asyncio.create_task(listen())
    for i in range(messages):
        await pub_client.publish("bench:floor", repr(time.time()))
        await asyncio.sleep(1 / rate)
    await asyncio.wait_for(listener, 30)
    await pubsub.aclose()
    await sub_client.aclose()
    await pub_client.aclose()
    return latencies


# --- the run -------------------------------------------------------------------------------


async def setup(database_url: str) -> tuple[str, int]:
    from backend import db
    from backend.models import Role
    from backend.services import tokens
    from tests.certs import make_cert
    from tests.support import inventory

    await db.init(database_url)
    try:
        token = (await tokens.create_token("bench-viewer", Role.VIEWER)).secret
        cert = await inventory.put(make_cert("fanout.bench.test", sans=("fanout.bench.test",)).der, hosts=("bench-host",))
        return token, cert.id
    finally:
        await db.close()


def measure_phase(clients: Clients, env: dict, database_url: str, redis_url: str, cert_id: int, rate: float, seconds: float, subscribers: int, server_pid: int) -> dict:
    *_, client_cpu = clients.collect()  # reset
    cpu, wall = _cpu_seconds(server_pid), time.monotonic()
    report = publish(env, database_url, redis_url, cert_id, rate, seconds)
    published = report["published"]
    time.sleep(1.5)  # stragglers
    elapsed = time.monotonic() - wall
    server_cores = (_cpu_seconds(server_pid) - cpu) / elapsed
    latencies, received, closed, client_cpu_end = clients.collect()
    client_cores = (client_cpu_end - client_cpu) / elapsed
    expected = published * subscribers
    return {
        "rate": rate,
        "deliveries_per_s": rate * subscribers,
        "published": published,
        "received": received,
        "expected": expected,
        "closed": closed,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "commit_p50_ms": report["commit_p50_ms"],
        "commit_p99_ms": report["commit_p99_ms"],
        "server_cores": server_cores,
        "client_cores": client_cores,
        "server_us_per_delivery": server_cores * 1e6 / (rate * subscribers),
    }


def serve(env: dict, port: int, log: Path):
    from tests.support.processes import ctops_args, running

    return running(ctops_args("serve", "--port", str(port)), env, log)


def run(args: argparse.Namespace) -> int:
    import asyncpg

    from tests.support.processes import ctops, ctops_env, free_port, wait_for_port
    from tests.support.redis_server import RedisServer

    base = os.environ.get("CTOPS_BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    name = f"ctops_bench_fanout_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    database_url = _db_url(base, name)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="ctops-fanout-") as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            env = ctops_env(DATABASE_URL=database_url, REDIS_URL=redis.url, CTOPS_DATA_DIR=tmp, CTOPS_LOG_LEVEL="WARNING")
            ctops("migrate", env=env)
            token, cert_id = asyncio.run(setup(database_url))
            floor = asyncio.run(redis_floor(redis.url))
            results["floor"] = {"p50_ms": _percentile(floor, 50) * 1000, "p99_ms": _percentile(floor, 99) * 1000}
            print(f"floor (bare Redis pub/sub round trip): p50 {results['floor']['p50_ms']:.2f} ms, p99 {results['floor']['p99_ms']:.2f} ms", flush=True)

            # idle memory without permessage-deflate, on a server of its own
            port = free_port()
            with serve(env, port, Path(tmp) / "serve-plain.log") as server:
                wait_for_port(port)
                time.sleep(1.0)
                before = _rss_kib(server.pid)
                clients = Clients(f"ws://127.0.0.1:{port}/graphql", token, args.subscribers, args.clients, compression=False)
                try:
                    connected = clients.wait_ready()
                    time.sleep(2.0)
                    after = _rss_kib(server.pid)
                finally:
                    clients.stop()
            results["idle_plain_kib"] = (after - before) / connected
            print(f"idle subscribers without deflate: {connected}, {results['idle_plain_kib']:.1f} KiB each", flush=True)

            port = free_port()
            with serve(env, port, Path(tmp) / "serve.log") as server:
                wait_for_port(port)
                time.sleep(1.0)
                before = _rss_kib(server.pid)
                clients = Clients(f"ws://127.0.0.1:{port}/graphql", token, args.subscribers, args.clients, compression=True)
                try:
                    connected = clients.wait_ready()
                    time.sleep(2.0)
                    idle = _rss_kib(server.pid)
                    results["idle_deflate_kib"] = (idle - before) / connected
                    print(f"idle subscribers with deflate: {connected}, {results['idle_deflate_kib']:.1f} KiB each", flush=True)

                    # warm-up, then the steady phase: 100,000 deliveries at the target rate
                    measure_phase(clients, env, database_url, redis.url, cert_id, args.rate, 4, connected, server.pid)
                    rss_start = _rss_kib(server.pid)
                    seconds = args.deliveries / (args.rate * connected)
                    steady = measure_phase(clients, env, database_url, redis.url, cert_id, args.rate, seconds, connected, server.pid)
                    rss_end = _rss_kib(server.pid)
                    steady["rss_start_mib"] = rss_start / 1024
                    steady["rss_end_mib"] = rss_end / 1024
                    results["steady"] = steady
                    print(
                        f"steady {steady['deliveries_per_s']:.0f} deliveries/s: {steady['received']}/{steady['expected']} delivered, "
                        f"p50 {steady['p50_ms']:.1f} ms, p99 {steady['p99_ms']:.1f} ms, "
                        f"RSS {steady['rss_start_mib']:.1f} -> {steady['rss_end_mib']:.1f} MiB, "
                        f"server CPU {steady['server_cores']:.2f} cores ({steady['server_us_per_delivery']:.0f} us/delivery), "
                        f"clients {steady['client_cores']:.2f} cores; record+commit p50 {steady['commit_p50_ms']:.1f} / p99 {steady['commit_p99_ms']:.1f} ms",
                        flush=True,
                    )

                    best = None
                    for rate in [r for r in RAMP if r > args.rate]:
                        phase = measure_phase(clients, env, database_url, redis.url, cert_id, rate, args.ramp_seconds, connected, server.pid)
                        ok = phase["p99_ms"] <= TARGET_P99_MS and phase["closed"] == 0 and phase["received"] == phase["expected"]
                        print(
                            f"  ramp {phase['deliveries_per_s']:.0f}/s: {phase['received']}/{phase['expected']}, "
                            f"p50 {phase['p50_ms']:.1f} ms, p99 {phase['p99_ms']:.1f} ms, cut {phase['closed']}, "
                            f"server CPU {phase['server_cores']:.2f} cores -> {'ok' if ok else 'over'}",
                            flush=True,
                        )
                        if not ok:
                            break
                        best = phase
                    results["max_sustained"] = best["deliveries_per_s"] if best else steady["deliveries_per_s"]
                finally:
                    clients.stop()
        finally:
            redis.stop()
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    steady = results["steady"]
    growth = steady["rss_end_mib"] - steady["rss_start_mib"]
    checks = {
        "p99 <= 500 ms at target rate": steady["p99_ms"] <= TARGET_P99_MS and steady["received"] == steady["expected"],
        "idle <= 64 KiB (no deflate)": results["idle_plain_kib"] <= TARGET_IDLE_KIB,
        "idle <= 128 KiB (deflate)": results["idle_deflate_kib"] <= TARGET_IDLE_DEFLATE_KIB,
        "flat memory (< 16 MiB over the steady phase)": growth < 16,
    }
    print()
    print(f"{'measure':<44} {'value':>14}")
    print(f"{'Redis pub/sub floor p50 / p99 (ms)':<44} {results['floor']['p50_ms']:>6.2f} / {results['floor']['p99_ms']:<6.2f}")
    print(f"{'delivery p50 / p99 at %d/s (ms)' % steady['deliveries_per_s']:<44} {steady['p50_ms']:>6.1f} / {steady['p99_ms']:<6.1f}")
    print(f"{'idle subscriber, deflate / plain (KiB)':<44} {results['idle_deflate_kib']:>6.1f} / {results['idle_plain_kib']:<6.1f}")
    print(f"{'RSS growth over %d deliveries (MiB)' % steady['received']:<44} {growth:>14.1f}")
    print(f"{'max sustained deliveries/s (p99 <= 500 ms)':<44} {results['max_sustained']:>14.0f}")
    for check, passed in checks.items():
        print(f"  {'PASS' if passed else 'FAIL'}  {check}")
    return 0 if all(checks.values()) else 1


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        _, _, database_url, redis_url, cert_id, rate, seconds = sys.argv
        publisher_main(database_url, redis_url, int(cert_id), float(rate), float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2, help="client processes holding the subscribers")
    parser.add_argument("--rate", type=float, default=5.0, help="events per second in the steady phase")
    parser.add_argument("--deliveries", type=int, default=100_000, help="deliveries in the steady phase")
    parser.add_argument("--ramp-seconds", type=float, default=6.0)
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
