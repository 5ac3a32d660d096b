"""Benchmark: agent reports through the HTTP stack on PostgreSQL, against the floor.

200 hosts x 100 certificates each, realistic: every host holds the fleet's root
and intermediate (a bundle), a few certificates shared by many hosts (wildcards,
internal services) and its own leaves. A real ``ctops serve --workers 2`` runs
on a fresh PostgreSQL database; an enrolment token comes from the CLI; the 200
hosts enrol through the API; then three rounds, each one report per host sent
by 8 concurrent keep-alive clients (fewer connections and the kernel may hand
them all to one worker):

1. first ingest: new distinct certificates per second of wall time;
2. the same scans again: unchanged items per second;
3. 5 % of every host's certificates renewed: items per second (and renewals).

The floor: ``backend.x509.describe`` of the same certificates in this process,
certificates per second. Targets on the 2-core machine: >= 2,000 new
certificates/s and >= 6,000 unchanged items/s.

    .venv/bin/python bench/ingest.py [--hosts 200] [--per-host 100] [--clients 8] [--keep]

Needs PostgreSQL (``CTOPS_BENCH_DATABASE_URL``, default
``postgres://postgres@127.0.0.1:5432/postgres``: a database ``ctops_bench_<pid>``
is created beside it and dropped at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from cryptography import x509 as cx509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from backend import x509  # noqa: E402
from tests.support.processes import ctops, ctops_args, ctops_env, free_port, running, wait_for_port  # noqa: E402

TARGET_NEW_PER_SECOND = 2000
TARGET_UNCHANGED_PER_SECOND = 6000
SHARED = ((4, 1.0), (4, 0.5), (8, 0.1))  # (how many certificates, share of hosts holding each)
RENEWED_SHARE = 0.05
REPORT = (
    "mutation($input: ReportCertificatesInput!) { reportCertificates(input: $input) "
    "{ accepted newCertificates eventsRecorded stale rejected { index reason } } }"
)
ENROLL = "mutation($input: EnrollAgentInput!) { enrollAgent(input: $input) { agentToken host { hostname } } }"


# --- certificates --------------------------------------------------------------------------


class Authority:
    """A root, an intermediate and a pool of leaf keys (keys are slow, signatures are not)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.leaf_keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(8)]
        self.root_name = _name("Bench Root CA")
        self.name = _name("Bench Intermediate CA")
        self.root = self._sign(self.root_name, self.root_name, self.root_key, self.root_key, ca=True, days=3650)
        self.intermediate = self._sign(self.name, self.root_name, self.key, self.root_key, ca=True, days=1825)

    def leaf(self, cn: str, days: int, key_index: int) -> bytes:
        return self._sign(_name(cn), self.name, self.leaf_keys[key_index % 8], self.key, ca=False, days=days, sans=(cn,))

    def _sign(self, subject, issuer, key, signer, *, ca: bool, days: int, sans: tuple[str, ...] = ()) -> bytes:  # noqa: ANN001
        builder = (
            cx509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(cx509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(days=1))
            .not_valid_after(self.now + dt.timedelta(days=days))
            .add_extension(cx509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(cx509.SubjectAlternativeName([cx509.DNSName(s) for s in sans]), critical=False)
            builder = builder.add_extension(cx509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _name(cn: str) -> cx509.Name:
    return cx509.Name([cx509.NameAttribute(NameOID.ORGANIZATION_NAME, "CT-Ops Bench"), cx509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Host:
    hostname: str
    items: list[dict] = field(default_factory=list)
    own: list[tuple[int, str, int]] = field(default_factory=list)  # (item index, cn, days) of its own leaves
    token: str = ""


def build_fleet(hosts: int, per_host: int, seed: int = 7) -> tuple[list[Host], set[bytes], Authority]:
    rng = random.Random(seed)
    ca = Authority()
    fleet = [Host(f"bench-{n:04d}.example.net") for n in range(hosts)]
    distinct: set[bytes] = {ca.root, ca.intermediate}
    chain = "/etc/ssl/certs/bench-ca.pem"
    for host in fleet:
        host.items += [_file(ca.intermediate, chain, 0), _file(ca.root, chain, 1)]
    serial = 0
    for count, share in SHARED:
        for _ in range(count):
            serial += 1
            der = ca.leaf(f"shared-{serial}.corp.example.net", rng.randint(60, 400), serial)
            distinct.add(der)
            for host in rng.sample(fleet, max(1, round(share * hosts))):
                host.items.append(_file(der, f"/etc/ssl/shared/shared-{serial}.pem", 0))
    for n, host in enumerate(fleet):
        while len(host.items) < per_host:
            k = len(host.items)
            cn = f"svc{k}.{host.hostname}"
            days = rng.randint(30, 400)
            der = ca.leaf(cn, days, n + k)
            distinct.add(der)
            if k % 5 == 0:
                item = {"kind": "PORT", "address": f"10.{n // 250}.{n % 250}.{k}", "port": 443, "serverName": cn,
                        "index": 0, "der": _b64(der)}  # fmt: skip
            else:
                item = _file(der, f"/etc/ssl/private-certs/{cn}.pem", 0)
            host.own.append((len(host.items), cn, days))
            host.items.append(item)
    return fleet, distinct, ca


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def _file(der: bytes, path: str, index: int) -> dict:
    return {"kind": "FILE", "path": path, "index": index, "der": _b64(der)}


def renew(fleet: list[Host], ca: Authority, share: float, seed: int = 11) -> int:
    rng = random.Random(seed)
    renewed = 0
    for n, host in enumerate(fleet):
        for index, cn, days in rng.sample(host.own, max(1, round(share * len(host.items)))):
            host.items[index] = {**host.items[index], "der": _b64(ca.leaf(cn, days + 90, n + index + 1))}
            renewed += 1
    return renewed


def body(host: Host) -> bytes:
    scan = {
        "scanId": str(uuid.uuid4()),
        "scannedAt": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": True,
        "part": 0,
        "lastPart": True,
        "hostname": host.hostname,
        "agentVersion": "bench",
        "os": "Linux",
        "intervalSeconds": 3600,
        "items": host.items,
        "errors": [],
    }
    return json.dumps({"query": REPORT, "variables": {"input": scan}}, separators=(",", ":")).encode()


# --- the server ----------------------------------------------------------------------------


def _db_url(base: str, name: str) -> str:
    return urlunsplit(urlsplit(base)._replace(path="/" + name))


async def _admin(base: str, sql: str) -> None:
    conn = await asyncpg.connect(base.replace("postgres://", "postgresql://", 1))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def send_all(url: str, jobs: list[tuple[str, bytes]], clients: int) -> tuple[float, list[dict]]:
    """POST every (token, body) with ``clients`` keep-alive connections; wall seconds and answers."""
    queue: asyncio.Queue = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    answers: list[dict] = []

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
            while not queue.empty():
                token, content = queue.get_nowait()
                response = await client.post(
                    "/graphql", content=content,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )  # fmt: skip
                payload = response.json()
                if response.status_code != 200 or payload.get("errors"):
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:500]}")
                answers.append(payload["data"])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started, answers


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (the server's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class CpuMeter:
    """CPU seconds used by the server's processes and by PostgreSQL's backends for the bench database."""

    def __init__(self, server_pid: int, database_url: str) -> None:
        self.server_pid = server_pid
        self.database_url = database_url

    async def sample(self) -> tuple[float, float]:
        conn = await asyncpg.connect(self.database_url.replace("postgres://", "postgresql://", 1))
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await conn.close()
        server = sum(_cpu_seconds(pid) for pid in _tree(self.server_pid))
        return server, sum(_cpu_seconds(r["pid"]) for r in rows)


def floor(ders: set[bytes]) -> float:
    started = time.perf_counter()
    for der in ders:
        x509.describe(der)
    return len(ders) / (time.perf_counter() - started)


def verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "MISSES"


async def run(args: argparse.Namespace) -> int:
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f}")
    print(f"building {args.hosts} hosts x {args.per_host} certificates ...", flush=True)
    fleet, distinct, ca = build_fleet(args.hosts, args.per_host)
    total_items = sum(len(h.items) for h in fleet)
    print(f"{len(distinct)} distinct certificates, {total_items} items")
    describe_rate = floor(distinct)

    base = os.environ.get("CTOPS_BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    name = f"ctops_bench_{os.getpid()}"
    await _admin(base, f'CREATE DATABASE "{name}"')
    results: dict[str, float] = {}
    cpu: dict[str, tuple[float, float, float, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = ctops_env(DATABASE_URL=_db_url(base, name), CTOPS_DATA_DIR=tmp, CTOPS_LOG_LEVEL="WARNING")
            ctops("migrate", env=env)
            secret = ctops("enrollment-token", "create", "--name", "bench", "--max-uses", str(args.hosts),
                           env=env).stdout.strip().splitlines()[-1]  # fmt: skip
            port = free_port()
            log = Path(tmp) / "serve.log"
            serve = ctops_args("serve", "--workers", "2", "--port", str(port))
            with running(serve, env, log) as server:
                wait_for_port(port, timeout=60)
                url = f"http://127.0.0.1:{port}"
                jobs = [(secret, json.dumps({"query": ENROLL, "variables": {"input": {"hostname": h.hostname}}}).encode())
                        for h in fleet]  # fmt: skip
                _, answers = await send_all(url, jobs, args.clients)
                tokens = {a["enrollAgent"]["host"]["hostname"]: a["enrollAgent"]["agentToken"] for a in answers}
                for host in fleet:
                    host.token = tokens[host.hostname]

                meter = CpuMeter(server.pid, env["DATABASE_URL"])

                async def round_(label: str) -> tuple[float, list[dict]]:
                    jobs = [(h.token, body(h)) for h in fleet]
                    before, client = await meter.sample(), time.process_time()
                    seconds, answers = await send_all(url, jobs, args.clients)
                    client = time.process_time() - client
                    after = await meter.sample()
                    cpu[label] = (after[0] - before[0], after[1] - before[1], client, seconds)
                    return seconds, answers

                seconds, answers = await round_("first")
                new = sum(a["reportCertificates"]["newCertificates"] for a in answers)
                results["first"] = new / seconds
                print(f"round 1, first ingest: {new} new certificates in {seconds:.2f} s = {results['first']:,.0f}/s")

                seconds, answers = await round_("unchanged")
                events = sum(a["reportCertificates"]["eventsRecorded"] for a in answers)
                results["unchanged"] = total_items / seconds
                print(f"round 2, unchanged: {total_items} items in {seconds:.2f} s = {results['unchanged']:,.0f}/s"
                      f" ({events} events)")  # fmt: skip

                renewed = renew(fleet, ca, RENEWED_SHARE)
                seconds, answers = await round_("renewals")
                events = sum(a["reportCertificates"]["eventsRecorded"] for a in answers)
                results["renewals"] = total_items / seconds
                print(f"round 3, {renewed} renewals: {total_items} items in {seconds:.2f} s = "
                      f"{results['renewals']:,.0f}/s ({events} events)")  # fmt: skip
            if args.keep:
                print(f"server log: {log.read_text()[-2000:]}")
    finally:
        if not args.keep:
            await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    print()
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
          " (other work on the machine slows every figure, the floor too)")  # fmt: skip
    print(f"floor: backend/x509.py describes {describe_rate:,.0f} certificates/s (one process, same certificates)")
    print(f"{'round':<24}{'per second':>12}{'target':>10}{'x floor':>10}")
    rows = (("new certificates", results["first"], TARGET_NEW_PER_SECOND),
            ("unchanged items", results["unchanged"], TARGET_UNCHANGED_PER_SECOND),
            ("items, 5% renewed", results["renewals"], None))  # fmt: skip
    ok = True
    for label, value, target in rows:
        mark = f"{target:>10,}" if target else f"{'-':>10}"
        print(f"{label:<24}{value:>12,.0f}{mark}{value / describe_rate:>10.2f}  {verdict(value, target) if target else ''}")
        ok = ok and (target is None or value >= target)
    print()
    print(f"CPU seconds per round ({os.cpu_count()} CPUs): server workers, PostgreSQL, these clients; wall seconds")
    for label, (server_cpu, pg_cpu, client_cpu, wall) in cpu.items():
        print(f"  {label:<10} server {server_cpu:5.2f}  postgres {pg_cpu:5.2f}  clients {client_cpu:5.2f}  wall {wall:5.2f}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--per-host", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the database and print the server log's tail")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
