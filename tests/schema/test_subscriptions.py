"""Subscriptions across replicas: two real `ctops serve` processes on PostgreSQL
and a private Redis, real websocket clients (graphql-transport-ws).

The module shares one database, one Redis and the two replicas; each test
works on hosts and certificates of its own and filters on them. Replica A has a
small per-connection queue (the slow-consumer test) and re-checks tokens every
second; replica B every minute (so a close within seconds there came through
the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from websockets.asyncio.client import connect

from backend import clock, db
from backend.bus import RedisBus
from backend.models import ApiToken, EventType, Role
from backend.schema.core.relay import to_global_id
from backend.services import events as event_service
from backend.services import tokens
from tests.certs import make_cert
from tests.support import inventory
from tests.support.databases import create_pg_database, drop_pg_database, forget_cached_statements, migrated
from tests.support.live import Closed, LiveClient, live_client
from tests.support.processes import ctops_args, ctops_env, free_port, running, wait_for_port
from tests.support.redis_server import redis_server
from tests.support.reports import REPORT, document, file_item

DAY = dt.timedelta(days=1)
EVENTS = "subscription($f: CertificateEventSubscriptionFilter, $after: String) { certificateEvents(filter: $f, after: $after) { id type cursor details host { hostname } certificate { commonName fingerprintSha256 } } }"
QUEUE_A = 50


@dataclass
class Replica:
    name: str
    port: int
    log: object

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    database_url: str
    redis: object
    a: Replica
    b: Replica
    admin: str
    viewer: str


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    tmp = tmp_path_factory.mktemp("live")
    url = await create_pg_database("ctops_live")
    await migrated(url)
    forget_cached_statements()
    await db.init(url)
    try:
        with redis_server(tmp) as redis:
            admin = (await tokens.create_token("admin", Role.ADMIN)).secret
            viewer = (await tokens.create_token("viewer", Role.VIEWER)).secret
            base = dict(DATABASE_URL=url, REDIS_URL=redis.url, CTOPS_DATA_DIR=str(tmp / "data"), CTOPS_LOG_LEVEL="INFO")
            a = Replica("a", free_port(), tmp / "a.log")
            b = Replica("b", free_port(), tmp / "b.log")
            env_a = ctops_env(**base, CTOPS_SUBSCRIPTION_QUEUE_SIZE=str(QUEUE_A), CTOPS_WS_AUTH_RECHECK_SECONDS="1")
            # B re-checks tokens rarely: its connections close on revocation only through the bus
            env_b = ctops_env(**base, CTOPS_WS_AUTH_RECHECK_SECONDS="60")
            with running(ctops_args("serve", "--port", str(a.port)), env_a, a.log), running(
                ctops_args("serve", "--port", str(b.port)), env_b, b.log
            ):
                wait_for_port(a.port)
                wait_for_port(b.port)
                yield Cluster(url, redis, a, b, admin, viewer)
    finally:
        await db.close()
        await drop_pg_database(url)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}.test"


async def agent_for(hostname: str) -> tuple[int, str]:
    host = await inventory.host(hostname)
    created = await tokens.create_token(f"agent:{hostname}", Role.AGENT, host_id=host.id)
    return host.id, created.secret


async def report(replica: Replica, agent_token: str, hostname: str, items: list[dict]) -> dict:
    async with httpx.AsyncClient(base_url=replica.http, timeout=20) as http:
        response = await http.post(
            "/graphql",
            json={"query": REPORT, "variables": {"input": document(hostname, items)}},
            headers={"Authorization": f"Bearer {agent_token}"},
        )
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]["reportCertificates"]


async def graphql(replica: Replica, token: str, query: str, variables: dict | None = None) -> dict:
    async with httpx.AsyncClient(base_url=replica.http, timeout=20) as http:
        response = await http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers={"Authorization": f"Bearer {token}"}
        )
    return response.json()


async def subscribed(client: LiveClient, op_id: str) -> None:
    """Give the server a moment to register the subscription (it answers nothing until an event)."""
    await client.nothing(op_id, 0.3)


# --- across replicas -----------------------------------------------------------------


async def test_an_agent_report_on_replica_a_reaches_a_subscriber_on_replica_b(cluster):
    hostname = unique("web")
    host_id, agent = await agent_for(hostname)
    leaf = make_cert(hostname, sans=(hostname,))
    async with live_client(cluster.b.ws, cluster.viewer) as client:
        op = await client.subscribe(EVENTS, {"f": {"hostId": to_global_id("Host", host_id)}})
        await subscribed(client, op)
        result = await report(cluster.a, agent, hostname, [file_item(leaf.der, "/etc/ssl/web.pem")])
        assert result["eventsRecorded"] == 1
        pushed = (await client.next(op))["certificateEvents"]
        assert pushed["type"] == "DISCOVERED"
        assert pushed["host"] == {"hostname": hostname}
        assert pushed["certificate"]["fingerprintSha256"] == leaf.fingerprint
        await client.nothing(op, 0.5)  # exactly once


async def test_filters(cluster):
    hostname, other = unique("filters"), unique("elsewhere")
    host_id, agent = await agent_for(hostname)
    _, other_agent = await agent_for(other)
    old = make_cert(hostname, sans=(hostname,), days=60)
    new = make_cert(hostname, sans=(hostname,), days=90)
    unrelated = make_cert(other, sans=(other,))
    async with live_client(cluster.b.ws, cluster.viewer) as client:
        renewals = await client.subscribe(EVENTS, {"f": {"types": ["RENEWED"], "hostId": to_global_id("Host", host_id)}})
        on_host = await client.subscribe(EVENTS, {"f": {"hostId": to_global_id("Host", host_id)}})
        await subscribed(client, on_host)
        await report(cluster.a, agent, hostname, [file_item(old.der)])
        await report(cluster.a, other_agent, other, [file_item(unrelated.der)])
        discovered = (await client.next(on_host))["certificateEvents"]
        assert (discovered["type"], discovered["certificate"]["fingerprintSha256"]) == ("DISCOVERED", old.fingerprint)
        await report(cluster.a, agent, hostname, [file_item(new.der)])
        renewed = (await client.next(renewals))["certificateEvents"]
        assert renewed["type"] == "RENEWED" and renewed["certificate"]["fingerprintSha256"] == new.fingerprint
        assert renewed["details"]["previousFingerprint"] == old.fingerprint
        assert (await client.next(on_host))["certificateEvents"]["type"] == "RENEWED"
        await client.nothing(renewals, 0.5)
        await client.nothing(on_host, 0.2)  # nothing from the other host

        # certificateId: only that certificate's events
        from backend.models import Certificate

        cert = await Certificate.get(fingerprint_sha256=new.fingerprint)
        by_cert = await client.subscribe(EVENTS, {"f": {"certificateId": to_global_id("Certificate", cert.id)}})
        await subscribed(client, by_cert)
        await report(cluster.a, agent, hostname, [])  # complete scan, nothing left: removal
        removed = (await client.next(by_cert))["certificateEvents"]
        assert removed["type"] == "REMOVED_FROM_HOST" and removed["certificate"]["fingerprintSha256"] == new.fingerprint


async def test_after_replays_what_was_missed_then_goes_live(cluster):
    hostname = unique("replay")
    host_id, agent = await agent_for(hostname)
    certs = [make_cert(f"r{i}.{hostname}", sans=(f"r{i}.{hostname}",)) for i in range(4)]
    only_host = {"f": {"hostId": to_global_id("Host", host_id)}}
    async with live_client(cluster.a.ws, cluster.viewer) as client:
        op = await client.subscribe(EVENTS, only_host)
        await subscribed(client, op)
        await report(cluster.b, agent, hostname, [file_item(certs[0].der, "/0.pem")])
        first = (await client.next(op))["certificateEvents"]
    # disconnected: two more reports
    await report(cluster.b, agent, hostname, [file_item(certs[0].der, "/0.pem"), file_item(certs[1].der, "/1.pem")])
    await report(cluster.b, agent, hostname, [file_item(c.der, f"/{i}.pem") for i, c in enumerate(certs[:3])])
    async with live_client(cluster.b.ws, cluster.viewer) as client:
        op = await client.subscribe(EVENTS, {**only_host, "after": first["cursor"]})
        replayed = [(await client.next(op))["certificateEvents"] for _ in range(2)]
        assert [e["certificate"]["fingerprintSha256"] for e in replayed] == [certs[1].fingerprint, certs[2].fingerprint]
        await report(cluster.a, agent, hostname, [file_item(c.der, f"/{i}.pem") for i, c in enumerate(certs)])
        live = (await client.next(op))["certificateEvents"]
        assert live["certificate"]["fingerprintSha256"] == certs[3].fingerprint
        await client.nothing(op, 0.5)
        # the cursor of a connection works the same way
        page = await graphql(
            cluster.a, cluster.viewer, "query($h: ID) { certificateEvents(first: 10, filter: { hostId: $h }) { edges { cursor node { id cursor } } } }",
            {"h": to_global_id("Host", host_id)},
        )
        edges = page["data"]["certificateEvents"]["edges"]
        assert all(e["cursor"] == e["node"]["cursor"] for e in edges)
        oldest = edges[-1]["cursor"]
        again = await client.subscribe(EVENTS, {**only_host, "after": oldest})
        assert len([await client.next(again) for _ in range(3)]) == 3
        await client.nothing(again, 0.3)
        # a CertificateEvent id works too; a garbage cursor is an error message
        by_id = await client.subscribe(EVENTS, {**only_host, "after": live["id"]})
        await client.nothing(by_id, 0.3)
        bad = await client.subscribe(EVENTS, {**only_host, "after": "nonsense"})
        message = await client.message(bad)
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_rolled_back_transaction_publishes_nothing(cluster):
    """Another process (this test, publishing through the same Redis) records
    events in a transaction that rolls back after a nested call: the
    subscriber gets nothing; the next committed one arrives."""
    cert = await inventory.put(make_cert(unique("rollback")).der, hosts=(unique("rb-host"),))
    bus = RedisBus(cluster.redis.url, listen=False)
    await bus.start()
    db.set_publisher(bus.publish)
    try:
        async with live_client(cluster.b.ws, cluster.viewer) as client:
            op = await client.subscribe(EVENTS, {"f": {"certificateId": to_global_id("Certificate", cert.id)}})
            await subscribed(client, op)
            with pytest.raises(RuntimeError):
                async with db.transaction() as conn:
                    async with db.transaction() as inner:  # a nested service call
                        await event_service.record(
                            inner, [event_service.NewEvent(EventType.RESTORED, cert.id)], actor="test", now=clock.now()
                        )
                    raise RuntimeError("rolled back")
            await bus.flush()
            await client.nothing(op, 1.0)
            async with db.transaction() as conn:
                await event_service.record(conn, [event_service.NewEvent(EventType.RESTORED, cert.id)], actor="test", now=clock.now())
            assert (await client.next(op))["certificateEvents"]["type"] == "RESTORED"
    finally:
        db.set_publisher(None)
        await bus.close()


# --- auth ------------------------------------------------------------------------------


async def test_missing_bad_or_wrong_role_tokens_close_with_4403(cluster):
    host_id, agent = await agent_for(unique("agent-ws"))
    for payload in ({}, {"authorization": "Bearer nope"}, {"authorization": f"Basic {cluster.viewer}"}, {"authorization": f"Bearer {agent}"}):
        with pytest.raises(Closed) as closed:
            await LiveClient.open(cluster.a.ws, None, payload=payload)
        assert closed.value.code == 4403, payload
    # subscribing before connection_init is refused too
    async with connect(cluster.a.ws, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send('{"id": "1", "type": "subscribe", "payload": {"query": "subscription { certificateEvents { id } }"}}')
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code in (4401, 4403)
    # only graphql-transport-ws is served
    async with connect(cluster.a.ws, subprotocols=["graphql-ws"]) as ws:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4406


async def test_a_revoked_tokens_connections_close_with_4403(cluster):
    doomed = await tokens.create_token(f"doomed-{uuid.uuid4().hex[:6]}", Role.VIEWER)
    quiet = await tokens.create_token(f"quiet-{uuid.uuid4().hex[:6]}", Role.VIEWER)
    async with live_client(cluster.b.ws, doomed.secret) as on_b, live_client(cluster.a.ws, quiet.secret) as on_a:
        op = await on_b.subscribe(EVENTS)
        await subscribed(on_b, op)
        # revoked through the API on replica A: replica B closes at once (the bus)
        body = await graphql(cluster.a, cluster.admin, "mutation($id: ID!) { revokeApiToken(id: $id) { revokedAt } }", {"id": to_global_id("ApiToken", doomed.token.id)})
        assert not body.get("errors"), body
        closed = await on_b.wait_closed(timeout=5)
        assert (closed.code, closed.reason) == (4403, "token revoked")
        # revoked behind the API's back (no bus message): the periodic re-check
        await ApiToken.filter(id=quiet.token.id).update(revoked_at=clock.now())
        closed = await on_a.wait_closed(timeout=10)
        assert (closed.code, closed.reason) == (4403, "token revoked")


async def test_subscriptions_obey_the_query_limits(cluster):
    """(Field permissions per subscriber: tests/schema/test_subscription_execution.py.)"""
    async with live_client(cluster.a.ws, cluster.viewer) as client:
        flood = "subscription { certificateEvents { " + " ".join(f"a{i}: id" for i in range(31)) + " } }"
        message = await client.message(await client.subscribe(flood))
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        deep = "subscription { certificateEvents { certificate { " + "renewedFrom { " * 11 + "id" + " }" * 11 + " } } }"
        message = await client.message(await client.subscribe(deep))
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        message = await client.message(await client.subscribe("subscription { certificateEvents { nope } }"))
        assert message["type"] == "error" and message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        # the ADMIN-only mutation is refused to a viewer
        body = await graphql(cluster.a, cluster.viewer, "mutation { runSweep { statusChanges } }")
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


# --- back pressure and outages ---------------------------------------------------------


def _slow_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a client that stops
    reading quickly stops the server's sends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    return sock


async def test_a_slow_subscriber_is_cut_off_with_1013_while_others_keep_receiving(cluster):
    cert = await inventory.put(make_cert(unique("burst")).der, hosts=(unique("burst-host"),))
    # ~8 KB per event, uncompressed (the slow client turns permessage-deflate
    # off, which would shrink ten copies of a PEM to nothing): enough to fill
    # the kernel's socket buffers (up to 4 MiB on the server's side) long
    # before the burst ends.
    copies = " ".join(f"p{i}: pem" for i in range(10))
    heavy = f"subscription($f: CertificateEventSubscriptionFilter) {{ certificateEvents(filter: $f) {{ id type certificate {{ {copies} }} }} }}"
    only = {"f": {"certificateId": to_global_id("Certificate", cert.id)}}
    total = 1500
    bus = RedisBus(cluster.redis.url, listen=False)
    await bus.start()
    db.set_publisher(bus.publish)
    slow = await LiveClient.open(cluster.a.ws, cluster.viewer, sock=_slow_socket(cluster.a.port), max_queue=1, compression=None)
    try:
        async with live_client(cluster.a.ws, cluster.viewer) as fast:
            slow_op = await slow.subscribe(heavy, only)
            fast_op = await fast.subscribe(heavy, only)
            await subscribed(fast, fast_op)
            slow._reader.cancel()  # the slow client stops reading
            for start in range(0, total, 10):  # small batches: the fast one keeps up
                async with db.transaction() as conn:
                    await event_service.record(
                        conn, [event_service.NewEvent(EventType.RESTORED, cert.id) for _ in range(10)], actor="burst", now=clock.now()
                    )
                await asyncio.sleep(0.01)
            received = 0
            while received < total:
                await fast.next(fast_op, timeout=20)
                received += 1
            assert received == total
        # the slow one reads again: what was in flight, then the close
        slow._reader = asyncio.create_task(slow._read())
        closed = await slow.wait_closed(timeout=30)
        assert (closed.code, closed.reason) == (1013, "slow consumer: reconnect and re-query")
        got = len(slow._messages[slow_op])
        assert QUEUE_A < got < total
    finally:
        await slow.close()
        db.set_publisher(None)
        await bus.close()
    # the server counted the drop
    async with httpx.AsyncClient(base_url=cluster.a.http) as http:
        text = (await http.get("/metrics", headers={"Authorization": f"Bearer {cluster.admin}"})).text
    assert any(line.startswith("ctops_bus_dropped_total ") and float(line.split()[1]) > 0 for line in text.splitlines())


async def test_redis_restarted_subscribers_receive_again(cluster):
    """Redis goes away and comes back: both replicas reconnect; an event
    recorded on A during the outage still reaches B's subscriber (A's outbox,
    or B's catch-up from the database), once; later events flow as before."""
    hostname = unique("outage")
    host_id, agent = await agent_for(hostname)
    certs = [make_cert(f"o{i}.{hostname}", sans=(f"o{i}.{hostname}",)) for i in range(3)]
    only = {"f": {"hostId": to_global_id("Host", host_id)}}
    async with live_client(cluster.b.ws, cluster.viewer) as on_b, live_client(cluster.a.ws, cluster.viewer) as on_a:
        op_b = await on_b.subscribe(EVENTS, only)
        op_a = await on_a.subscribe(EVENTS, only)
        await subscribed(on_b, op_b)
        await report(cluster.a, agent, hostname, [file_item(certs[0].der, "/0.pem")])
        assert (await on_b.next(op_b))["certificateEvents"]["type"] == "DISCOVERED"
        assert (await on_a.next(op_a))["certificateEvents"]["type"] == "DISCOVERED"

        cluster.redis.stop()
        await asyncio.sleep(1)
        items = [file_item(c.der, f"/{i}.pem") for i, c in enumerate(certs[:2])]
        await report(cluster.a, agent, hostname, items)  # during the outage
        during = (await on_a.next(op_a))["certificateEvents"]  # A's own subscribers: at once
        assert during["certificate"]["fingerprintSha256"] == certs[1].fingerprint
        # and a writer that could not publish at all (no bus): only the
        # database knows; the replicas catch up from it when Redis is back
        from backend.models import Certificate, CertificateLocation

        silent_cert = await Certificate.get(fingerprint_sha256=certs[0].fingerprint)
        location = await CertificateLocation.get(certificate_id=silent_cert.id)
        async with db.transaction() as conn:
            [silent] = await event_service.record(
                conn, [event_service.NewEvent(EventType.RESTORED, silent_cert.id, host_id=host_id, location_id=location.id)],
                actor="silent", now=clock.now(),
            )
        cluster.redis.start()

        got = {(await on_b.next(op_b, timeout=30))["certificateEvents"]["id"] for _ in range(2)}
        assert got == {during["id"], to_global_id("CertificateEvent", silent)}
        await on_b.nothing(op_b, 1.5)  # once each, not twice
        got_a = (await on_a.next(op_a, timeout=30))["certificateEvents"]["id"]
        assert got_a == to_global_id("CertificateEvent", silent)
        await on_a.nothing(op_a, 0.5)
        await report(cluster.a, agent, hostname, [file_item(c.der, f"/{i}.pem") for i, c in enumerate(certs)])
        after = (await on_b.next(op_b, timeout=15))["certificateEvents"]
        assert after["certificate"]["fingerprintSha256"] == certs[2].fingerprint


# --- workers ---------------------------------------------------------------------------


@contextlib.contextmanager
def worker(cluster: Cluster, log, **env: str):
    """A `ctops worker` on the cluster's database and Redis."""
    base = ctops_env(
        DATABASE_URL=cluster.database_url, REDIS_URL=cluster.redis.url, CTOPS_DATA_DIR=str(log.parent / "data"), **env
    )
    with running(ctops_args("worker"), base, log):
        yield


async def test_a_refresh_renewal_by_a_worker_reaches_a_subscriber(cluster, tmp_path):
    """trackUrl (here: its service), then the server swaps to a renewed
    certificate; a `ctops worker` whose clock is past nextRefreshAt refreshes
    it and the RENEWED event reaches a subscriber on replica B."""
    from backend.models import RefreshInterval
    from backend.services import tracked_sources
    from tests.support.checker import checker_settings, make_pki
    from tests.support.tls_servers import TLSServer

    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    old, renewed = pki.chain("shop.test", days=60), pki.chain("shop.test", days=120)
    with TLSServer(old) as server:
        tracked = await tracked_sources.track_url(
            f"https://127.0.0.1:{server.port}", server_name="shop.test", interval=RefreshInterval.MINUTES_15,
            settings=checker_settings(pki),
        )  # fmt: skip
        source_id = to_global_id("TrackedSource", tracked.source.id)
        query = "subscription($types: [CertificateEventType!]) { certificateEvents(filter: { types: $types }) { type details trackedSource { id } certificate { fingerprintSha256 } } }"
        async with live_client(cluster.b.ws, cluster.viewer) as client:
            op = await client.subscribe(query, {"types": ["RENEWED"]})
            await subscribed(client, op)
            server.serve(renewed)
            with worker(
                cluster, tmp_path / "worker.log", CTOPS_CLOCK_OFFSET_SECONDS=str(16 * 60), CTOPS_REFRESH_TICK_SECONDS="1",
                CTOPS_OUTBOUND_ALLOW="127.0.0.0/8", CTOPS_TLS_TIMEOUT_SECONDS="2", CTOPS_CA_BUNDLE=str(pki.ca_file),
                CTOPS_SWEEP_TICK_SECONDS="3600",
            ):
                try:
                    pushed = (await client.next(op, timeout=40))["certificateEvents"]
                except TimeoutError:
                    raise AssertionError((tmp_path / "worker.log").read_text()[-3000:]) from None
        assert pushed["trackedSource"] == {"id": source_id}
        assert pushed["certificate"]["fingerprintSha256"] == renewed[0].fingerprint
        assert pushed["details"]["previousFingerprint"] == old[0].fingerprint


async def test_the_worker_sweeps_at_start_and_pushes_status_changes(cluster, tmp_path):
    """A worker (clock 10 days ahead) sweeps when it starts; the status change
    it records reaches subscribers on both replicas, filtered."""
    hostname = unique("sweep")
    now = clock.now()
    near = make_cert(f"near.{hostname}", sans=(f"near.{hostname}",), not_before=now - 100 * DAY, not_after=now + 35 * DAY)
    cert = await inventory.put(near.der, hosts=(hostname,))
    host = await inventory.host(hostname)
    status_query = "subscription($f: ExpiryStatusChangeFilter) { expiryStatusChanged(filter: $f) { previousStatus status occurredAt certificate { fingerprintSha256 status } } }"
    async with live_client(cluster.a.ws, cluster.viewer) as on_a, live_client(cluster.b.ws, cluster.viewer) as on_b:
        on_host = await on_a.subscribe(status_query, {"f": {"hostId": to_global_id("Host", host.id)}})
        critical_only = await on_b.subscribe(status_query, {"f": {"statuses": ["CRITICAL"], "hostId": to_global_id("Host", host.id)}})
        await subscribed(on_a, on_host)
        with worker(cluster, tmp_path / "sweeper.log", CTOPS_CLOCK_OFFSET_SECONDS=str(10 * 86400)):
            try:
                change = (await on_a.next(on_host, timeout=40))["expiryStatusChanged"]
            except TimeoutError:
                raise AssertionError((tmp_path / "sweeper.log").read_text()[-3000:]) from None
        assert (change["previousStatus"], change["status"]) == ("OK", "WARNING")
        assert change["certificate"]["fingerprintSha256"] == near.fingerprint
        assert change["certificate"]["status"] == "OK"  # the replica's own clock is not shifted
        await on_b.nothing(critical_only, 0.5)
    from backend.models import Certificate

    assert (await Certificate.get(id=cert.id)).last_status == "WARNING"


async def test_cli_commands_reach_subscribers_through_redis(cluster, tmp_path):
    """Production mode: `ctops sweep` and `ctops token revoke` publish through
    Redis before they exit, so replicas push at once (no embedded-mode note)."""
    from tests.support.processes import ctops

    hostname = unique("cli")
    now = clock.now()
    near = make_cert(f"cli.{hostname}", sans=(f"cli.{hostname}",), not_before=now - 100 * DAY, not_after=now + 20 * DAY)
    await inventory.put(near.der, hosts=(hostname,))
    host = await inventory.host(hostname)
    doomed = await tokens.create_token(f"cli-doomed-{uuid.uuid4().hex[:6]}", Role.VIEWER)
    env = ctops_env(DATABASE_URL=cluster.database_url, REDIS_URL=cluster.redis.url, CTOPS_DATA_DIR=str(tmp_path / "data"))
    query = "subscription($h: ID) { expiryStatusChanged(filter: { hostId: $h }) { previousStatus status } }"
    async with live_client(cluster.a.ws, cluster.viewer) as client, live_client(cluster.b.ws, doomed.secret) as victim:
        op = await client.subscribe(query, {"h": to_global_id("Host", host.id)})
        await subscribed(client, op)
        out = ctops("sweep", env={**env, "CTOPS_CLOCK_OFFSET_SECONDS": str(8 * 86400)}).stdout
        assert f"cli.{hostname}  WARNING -> CRITICAL" in out and "note:" not in out
        assert (await client.next(op, timeout=10))["expiryStatusChanged"] == {"previousStatus": "WARNING", "status": "CRITICAL"}
        out = ctops("token", "revoke", doomed.token.name, env=env).stdout
        assert "revoked" in out and "note:" not in out
        closed = await victim.wait_closed(timeout=5)  # at once, not at the periodic re-check
        assert (closed.code, closed.reason) == (4403, "token revoked")
