"""Benchmark: the expiry sweep over 100,000 current certificates.

Seeds 100,000 certificates with ``backend.services.demo.seed_demo`` on a fresh
PostgreSQL database (and, with ``--sqlite``, a SQLite file), gives 1,000
current certificates a ``last_status`` that is no longer true (as if time had
moved them across a boundary since the last sweep), then times

* the sweep that records those 1,000 transitions (plus their EXPIRED events),
  one transaction: the CTE that locks and compares, the UPDATE ... RETURNING,
  the event INSERT;
* the next sweep, which finds nothing: what every tick costs when nothing
  changed.

Target: the sweep with 1,000 transitions over 100,000 current certificates in
< 1 s on PostgreSQL.

    .venv/bin/python bench/sweep.py [--certificates 100000] [--transitions 1000] [--runs 3] [--sqlite]

Needs PostgreSQL (``CTOPS_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``: a database ``ctops_bench_sweep_<pid>``
is created beside it and dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from backend import db  # noqa: E402
from backend.models import Certificate, CertificateEvent, EventType  # noqa: E402
from backend.services import demo, sweep  # noqa: E402

TARGET_SECONDS = 1.0
WRONG = {"OK": "WARNING", "WARNING": "CRITICAL", "CRITICAL": "EXPIRED", "EXPIRED": "CRITICAL"}


async def stale_statuses(count: int) -> int:
    """Give ``count`` current certificates a last_status that is no longer true."""
    from backend.services.status import status_of

    rows = await Certificate.filter(is_current=True).order_by("id").limit(count).values("id", "not_after")
    by_wrong: dict[str, list[int]] = {}
    for row in rows:
        by_wrong.setdefault(WRONG[status_of(row["not_after"]).value], []).append(row["id"])
    for wrong, ids in by_wrong.items():
        await Certificate.filter(id__in=ids).update(last_status=wrong)
    return len(rows)


async def measure(url: str, certificates: int, transitions: int, runs: int) -> dict:
    await db.init(url)
    try:
        started = time.perf_counter()
        await demo.seed_demo(certificates, seed=7)
        seeded = time.perf_counter() - started
        current = await Certificate.filter(is_current=True).count()
        await sweep.sweep()  # settle whatever the seed left (the demo stores statuses as of now)
        with_changes, nothing = [], []
        recorded = 0
        for _ in range(runs):
            await stale_statuses(transitions)
            t0 = time.perf_counter()
            result = await sweep.sweep()
            with_changes.append(time.perf_counter() - t0)
            recorded = result.status_changes
            t0 = time.perf_counter()
            again = await sweep.sweep()
            nothing.append(time.perf_counter() - t0)
            assert again.status_changes == 0
        events = await CertificateEvent.filter(type=EventType.STATUS_CHANGED).count()
        return {
            "seeded_s": seeded,
            "current": current,
            "recorded": recorded,
            "events": events,
            "with_changes_s": statistics.median(with_changes),
            "with_changes_max_s": max(with_changes),
            "nothing_s": statistics.median(nothing),
        }
    finally:
        await db.close()


async def run(args: argparse.Namespace) -> int:
    base = os.environ.get("CTOPS_BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    name = f"ctops_bench_sweep_{os.getpid()}"
    admin = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = urlunsplit(urlsplit(base)._replace(path="/" + name))
    results = {}
    try:
        await db.migrate(url)
        results["PostgreSQL"] = await measure(url, args.certificates, args.transitions, args.runs)
    finally:
        admin = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    if args.sqlite:
        with tempfile.TemporaryDirectory(prefix="ctops-sweep-") as tmp:
            sqlite_url = f"sqlite://{tmp}/bench.sqlite3"
            await db.migrate(sqlite_url)
            from tests.support.databases import forget_cached_statements

            forget_cached_statements()
            results["SQLite"] = await measure(sqlite_url, args.certificates, args.transitions, args.runs)

    print(f"{'backend':<11} {'current':>8} {'recorded':>9} {'sweep (changes)':>16} {'sweep (none)':>13} {'seeding':>9}")
    for backend, r in results.items():
        print(
            f"{backend:<11} {r['current']:>8} {r['recorded']:>9} {r['with_changes_s'] * 1000:>13.0f} ms"
            f" {r['nothing_s'] * 1000:>10.0f} ms {r['seeded_s']:>7.1f} s"
        )
    pg = results["PostgreSQL"]
    ok = pg["with_changes_s"] < TARGET_SECONDS and pg["recorded"] == args.transitions
    print(f"{'PASS' if ok else 'FAIL'}: {pg['recorded']} transitions over {pg['current']} current certificates in "
          f"{pg['with_changes_s'] * 1000:.0f} ms (median of {args.runs}, max {pg['with_changes_max_s'] * 1000:.0f} ms) on PostgreSQL; target < 1 s")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=100_000)
    parser.add_argument("--transitions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sqlite", action="store_true", help="also measure SQLite")
    raise SystemExit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
