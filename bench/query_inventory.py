"""Benchmark: the dashboard query through the full HTTP stack, against a hand-written floor.

20,000 demo certificates on 2,000 hosts (each on 1 to 5 of them: ``seed_demo``).
A real ``ctops serve`` (uvicorn, one process) answers the dashboard query (the
first 50 WARNING/CRITICAL certificates by expiry with their hosts, locations
and last event, plus the stats) as POST /graphql with a VIEWER token from
``ctops token create``. The floor, in the same run and on the same database:
a bare Starlette route in its own uvicorn process that runs hand-written SQL
for the same data with asyncpg/aiosqlite directly (page, places with hosts,
last events, stats: four statements) and returns the same JSON. Both answers
are checked equal once; then requests alternate between the two from one
keep-alive httpx client each (warm-up first), and the median and p95 in ms and
the ratio ours / floor are printed per database. Target on PostgreSQL:
median <= 40 ms and ratio <= 8.

    .venv/bin/python bench/query_inventory.py [--databases sqlite,postgres]
        [--certificates 20000] [--hosts 2000] [--requests 200] [--max-seconds 120]

PostgreSQL: ``CTOPS_BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/postgres``); a database
``ctops_bench_query_<pid>`` is created beside it and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_port  # noqa: E402

TARGET_MEDIAN_MS = 40.0
TARGET_RATIO = 8.0
WARM_UP = 20
PAGE = 50

QUERY = """
query Dashboard($filter: CertificateFilter) {
  certificates(first: 50, filter: $filter, orderBy: NOT_AFTER_ASC) {
    edges { cursor node { id commonName notAfter status daysRemaining
      hosts { id hostname } locations { id kind path port host { id } } lastEvent { type occurredAt } } }
    pageInfo { hasNextPage endCursor }
  }
  certificateStats(filter: $filter) { total ok warning critical expired }
}
"""
VARIABLES = {"filter": {"statuses": ["WARNING", "CRITICAL"]}}
BODY = json.dumps({"query": QUERY, "variables": VARIABLES}, separators=(",", ":")).encode()


# --- the floor: hand-written SQL behind a bare Starlette route --------------------------------


def floor_app(database_url: str):  # noqa: ANN201
    """The same answer as the dashboard query, with four SQL statements and no ORM."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from backend import clock
    from backend.schema.core.relay import to_global_id
    from backend.services import status as st
    from backend.services.pagination import encode_cursor

    postgres = database_url.startswith(("postgres://", "postgresql://"))
    state: dict = {}

    if postgres:
        import asyncpg

        async def start() -> None:
            dsn = database_url.replace("postgres://", "postgresql://", 1)
            state["pool"] = await asyncpg.create_pool(dsn, min_size=1, max_size=2)

        async def fetch(sql: str, *params):  # noqa: ANN202
            async with state["pool"].acquire() as conn:
                return await conn.fetch(sql, *params)

        def ids_param(ids: list[int]) -> tuple[str, list]:
            return "= ANY($1::int4[])", [ids]

        def when(value: dt.datetime):  # noqa: ANN202
            return value

        def instant(value):  # noqa: ANN001, ANN202
            return value

    else:
        import aiosqlite

        async def start() -> None:
            state["conn"] = await aiosqlite.connect(database_url[len("sqlite://") :])

        async def fetch(sql: str, *params):  # noqa: ANN202
            # $n -> ?n: SQLite's numbered parameters (a number may be used twice)
            async with state["conn"].execute(sql.replace("$", "?"), params) as cursor:
                names = [c[0] for c in cursor.description]
                return [dict(zip(names, row)) for row in await cursor.fetchall()]

        def ids_param(ids: list[int]) -> tuple[str, list]:
            return "IN (" + ",".join("?" * len(ids)) + ")", ids

        def when(value: dt.datetime) -> str:  # as tortoise writes it
            return value.isoformat(" ")

        def instant(value):  # noqa: ANN001, ANN202
            return clock.parse_instant(value)

    async def dashboard(request):  # noqa: ANN001, ANN202
        now = clock.now()
        critical = now + dt.timedelta(days=st.CRITICAL_DAYS)
        warning = now + dt.timedelta(days=st.WARNING_DAYS)
        # WARNING or CRITICAL = now < not_after < now + 30 d, current certificates only.
        page = await fetch(
            "SELECT id, common_name, not_after FROM certificate WHERE is_current = $1 AND not_after > $2"
            " AND not_after < $3 ORDER BY not_after, id LIMIT $4",
            True, when(now), when(warning), PAGE + 1,
        )  # fmt: skip
        has_next = len(page) > PAGE
        page = page[:PAGE]
        ids = [r["id"] for r in page]
        places: dict[int, list] = {i: [] for i in ids}
        last: dict[int, dict] = {}
        if ids:
            where, params = ids_param(ids)
            for r in await fetch(
                "SELECT l.id, l.certificate_id, l.kind, l.path, l.port, l.host_id, h.hostname"
                " FROM certificate_location l JOIN host h ON h.id = l.host_id"
                f" WHERE l.certificate_id {where} AND l.removed_at IS NULL ORDER BY l.id",
                *params,
            ):
                places[r["certificate_id"]].append(r)
            for r in await fetch(
                "SELECT certificate_id, type, occurred_at FROM certificate_event WHERE id IN"
                f" (SELECT MAX(id) FROM certificate_event WHERE certificate_id {where} GROUP BY certificate_id)",
                *params,
            ):
                last[r["certificate_id"]] = {"type": r["type"], "occurredAt": instant(r["occurred_at"]).isoformat()}
        stats = (
            await fetch(
                "SELECT COUNT(*) AS total,"
                " SUM(CASE WHEN not_after >= $1 THEN 1 ELSE 0 END) AS ok,"
                " SUM(CASE WHEN not_after >= $2 AND not_after < $1 THEN 1 ELSE 0 END) AS warning,"
                " SUM(CASE WHEN not_after > $3 AND not_after < $2 THEN 1 ELSE 0 END) AS critical,"
                " SUM(CASE WHEN not_after <= $3 THEN 1 ELSE 0 END) AS expired"
                " FROM certificate WHERE is_current = $4 AND not_after > $3 AND not_after < $1",
                when(warning), when(critical), when(now), True,
            )  # fmt: skip
        )[0]
        edges = []
        for r in page:
            not_after = instant(r["not_after"])
            held = places[r["id"]]
            hosts = {p["host_id"]: p["hostname"] for p in sorted(held, key=lambda p: p["host_id"])}
            node = {
                "id": to_global_id("Certificate", r["id"]),
                "commonName": r["common_name"],
                "notAfter": not_after.isoformat(),
                "status": st.status_of(not_after, now).value,
                "daysRemaining": st.days_remaining(not_after, now),
                "hosts": [{"id": to_global_id("Host", h), "hostname": name} for h, name in hosts.items()],
                "locations": [
                    {"id": to_global_id("CertificateLocation", p["id"]), "kind": p["kind"], "path": p["path"],
                     "port": p["port"], "host": {"id": to_global_id("Host", p["host_id"])}}
                    for p in held
                ],  # fmt: skip
                "lastEvent": last.get(r["id"]),
            }
            edges.append({"cursor": encode_cursor([not_after, r["id"]]), "node": node})
        data = {
            "certificates": {
                "edges": edges,
                "pageInfo": {"hasNextPage": has_next, "endCursor": edges[-1]["cursor"] if edges else None},
            },
            "certificateStats": {k: int(stats[k] or 0) for k in ("total", "ok", "warning", "critical", "expired")},
        }
        return Response(json.dumps({"data": data}, separators=(",", ":")), media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app):  # noqa: ANN001, ANN202
        await start()
        yield

    return Starlette(routes=[Route("/graphql", dashboard, methods=["POST"])], lifespan=lifespan)


def serve_floor(database_url: str, port: int) -> None:
    import uvicorn

    uvicorn.run(floor_app(database_url), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- one database ----------------------------------------------------------------------------


async def seed(database_url: str, certificates: int, hosts: int) -> None:
    from backend import db
    from backend.services.demo import seed_demo

    await db.migrate(database_url)
    await db.init(database_url)
    try:
        result = await seed_demo(certificates, hosts=hosts, seed=1)
    finally:
        await db.close()
    print(
        f"  seeded {result.certificates} certificates on {result.hosts} hosts ({result.locations} locations)"
        f" in {result.seconds:.1f} s",
        flush=True,
    )


def post(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    response = client.post(url, content=BODY, headers=headers)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:500]}")
    return elapsed * 1000


def answer(client: httpx.Client, url: str, headers: dict[str, str]) -> dict:
    response = client.post(url, content=BODY, headers=headers)
    payload = response.json()
    if response.status_code != 200 or payload.get("errors"):
        raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:1000]}")
    return payload["data"]


def check_same(ours: dict, floor: dict) -> None:
    ours_ids = [e["node"]["id"] for e in ours["certificates"]["edges"]]
    floor_ids = [e["node"]["id"] for e in floor["certificates"]["edges"]]
    assert ours_ids, "no WARNING/CRITICAL certificate to compare"
    assert ours_ids == floor_ids, f"different certificates:\nours  {ours_ids}\nfloor {floor_ids}"
    for a, b in zip(ours["certificates"]["edges"], floor["certificates"]["edges"]):
        assert a == b, f"different answers for {a['node']['id']}:\nours  {a}\nfloor {b}"
    assert ours == floor, f"different answers:\nours  {ours}\nfloor {floor}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(ours_url: str, floor_url: str, token: str, requests: int, max_seconds: float) -> dict[str, list[float]]:
    """Alternate ours and floor, one keep-alive client each, so background load hits both alike."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    times: dict[str, list[float]] = {"ours": [], "floor": []}
    with httpx.Client(timeout=60) as ours, httpx.Client(timeout=60) as floor:
        check_same(answer(ours, ours_url, headers), answer(floor, floor_url, headers))
        for _ in range(WARM_UP):
            post(ours, ours_url, headers)
            post(floor, floor_url, headers)
        deadline = time.monotonic() + max_seconds
        while len(times["ours"]) < requests and time.monotonic() < deadline:
            times["ours"].append(post(ours, ours_url, headers))
            times["floor"].append(post(floor, floor_url, headers))
    return times


async def bench_database(kind: str, args: argparse.Namespace, tmp: Path) -> dict:
    if kind == "postgres":
        base = os.environ.get("CTOPS_BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
        name = f"ctops_bench_query_{os.getpid()}"
        await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await _admin(base, f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(base)._replace(path="/" + name))
    else:
        url = f"sqlite://{tmp / 'bench.sqlite3'}"
    try:
        print(f"{kind}:", flush=True)
        await seed(url, args.certificates, args.hosts)
        env = ctops_env(DATABASE_URL=url, CTOPS_DATA_DIR=str(tmp), CTOPS_LOG_LEVEL="WARNING")
        created = ctops("token", "create", "--name", f"bench-{kind}", "--role", "VIEWER", env=env)
        token = created.stdout.strip().splitlines()[-1]  # the secret is on the last line
        ours_port, floor_port = free_port(), free_port()
        floor_cmd = [sys.executable, str(Path(__file__).resolve()), "floor", "--database-url", url,
                     "--port", str(floor_port)]  # fmt: skip
        with (
            running(ctops_args("serve", "--host", "127.0.0.1", "--port", str(ours_port)), env,
                    tmp / f"serve-{kind}.log"),
            running(floor_cmd, env, tmp / f"floor-{kind}.log"),
        ):
            for port, log in ((ours_port, f"serve-{kind}.log"), (floor_port, f"floor-{kind}.log")):
                try:
                    wait_for_port(port, timeout=60)
                except TimeoutError:
                    print((tmp / log).read_text()[-3000:])
                    raise
            times = measure(
                f"http://127.0.0.1:{ours_port}/graphql", f"http://127.0.0.1:{floor_port}/graphql", token,
                args.requests, args.max_seconds,
            )  # fmt: skip
        return summarize(kind, times)
    finally:
        if kind == "postgres" and not args.keep:
            await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def summarize(kind: str, times: dict[str, list[float]]) -> dict:
    row = {"database": kind, "n": len(times["ours"])}
    for side in ("ours", "floor"):
        row[f"{side}_median"] = statistics.median(times[side])
        row[f"{side}_p95"] = percentile(times[side], 0.95)
    row["ratio"] = row["ours_median"] / row["floor_median"]
    return row


async def _admin(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> int:
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctops-bench-query-") as tmp:
        for kind in args.databases.split(","):
            rows.append(await bench_database(kind.strip(), args, Path(tmp)))
    print()
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} (other work on the machine slows both sides)")
    print(f"{'database':<10}{'requests':>9}{'ours median':>13}{'ours p95':>10}{'floor median':>14}"
          f"{'floor p95':>11}{'ratio':>7}")  # fmt: skip
    ok = True
    for r in rows:
        print(
            f"{r['database']:<10}{r['n']:>9}{r['ours_median']:>10.1f} ms{r['ours_p95']:>7.1f} ms"
            f"{r['floor_median']:>11.1f} ms{r['floor_p95']:>8.1f} ms{r['ratio']:>7.1f}"
        )
        if r["database"] == "postgres":
            meets = r["ours_median"] <= TARGET_MEDIAN_MS and r["ratio"] <= TARGET_RATIO
            ok = ok and meets
            print(f"  PostgreSQL target (median <= {TARGET_MEDIAN_MS:.0f} ms, ratio <= {TARGET_RATIO:.0f}):"
                  f" {'meets' if meets else 'MISSES'}")  # fmt: skip
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    floor = sub.add_parser("floor", help="(internal) serve the floor app")
    floor.add_argument("--database-url", required=True)
    floor.add_argument("--port", type=int, required=True)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--certificates", type=int, default=20000)
    parser.add_argument("--hosts", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200, help="per side and database (default 200)")
    parser.add_argument("--max-seconds", type=float, default=120, help="time bound per database (default 120)")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database")
    args = parser.parse_args()
    if args.command == "floor":
        serve_floor(args.database_url, args.port)
        return
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
